package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/msgmesh/msgmesh/msgmesh"
	pb "github.com/msgmesh/msgmesh/proto/msgmesh/v1"
)

// grpcPath is the sidecar path through its gRPC API (docs/grpc.md) instead
// of the SDK: publishes on one PublishStream (the window in flight),
// latency from unary Publish calls, consumption on a Subscribe stream
// acking each delivery, all over one loopback HTTP/2 connection.
type grpcPath struct {
	cc    *grpc.ClientConn
	c     pb.MeshClient
	md    metadata.MD
	topic string
	group string

	mu      sync.Mutex // Send on pub, next, pending
	pub     pb.Mesh_PublishStreamClient
	next    uint64
	pending map[uint64]func(error)
	cancel  context.CancelFunc // ends pub
	recv    sync.WaitGroup     // pub's ack reader
}

func newGRPCPath(sc *msgmesh.Sidecar, app, topic, group string) (*grpcPath, error) {
	cc, err := grpc.NewClient(sc.GRPCAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	return &grpcPath{cc: cc, c: pb.NewMeshClient(cc), md: metadata.Pairs("msgmesh-app", app), topic: topic, group: group,
		pending: map[uint64]func(error){}}, nil
}

func (g *grpcPath) ctx(ctx context.Context) context.Context {
	return metadata.NewOutgoingContext(ctx, g.md)
}

// close ends the publish stream and the connection.
func (g *grpcPath) close() {
	g.mu.Lock()
	if g.cancel != nil {
		g.cancel()
	}
	g.mu.Unlock()
	g.recv.Wait()
	_ = g.cc.Close()
}

// publishAsync sends on the path's PublishStream, opened on first use;
// done runs when its ack (or the stream's end) comes.
func (g *grpcPath) publishAsync(ctx context.Context, body []byte, done func(error)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pub == nil {
		sctx, cancel := context.WithCancel(g.ctx(context.Background()))
		st, err := g.c.PublishStream(sctx)
		if err != nil {
			cancel()
			done(err)
			return
		}
		g.pub, g.cancel = st, cancel
		g.recv.Go(func() { g.readAcks(st) })
	}
	g.next++
	g.pending[g.next] = done
	if err := g.pub.Send(&pb.PublishStreamRequest{Id: g.next, Message: &pb.PublishRequest{Topic: g.topic, Body: body}}); err != nil {
		delete(g.pending, g.next)
		done(err)
	}
}

// readAcks answers each pending publish from its ack; when the stream
// ends, every publish still pending fails.
func (g *grpcPath) readAcks(st pb.Mesh_PublishStreamClient) {
	for {
		a, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("publish stream ended")
			}
			g.mu.Lock()
			left := g.pending
			g.pending = map[uint64]func(error){}
			g.mu.Unlock()
			for _, done := range left {
				done(err)
			}
			return
		}
		g.mu.Lock()
		done := g.pending[a.Id]
		delete(g.pending, a.Id)
		g.mu.Unlock()
		if done == nil {
			continue
		}
		if a.Error != nil {
			done(fmt.Errorf("%s: %s", a.Error.Code, a.Error.Message))
		} else {
			done(nil)
		}
	}
}

func (g *grpcPath) publish(ctx context.Context, body []byte) error {
	_, err := g.c.Publish(g.ctx(ctx), &pb.PublishRequest{Topic: g.topic, Body: body})
	return err
}

// consume subscribes with the sidecar's in-flight limit as the window and
// acks each delivery on the stream.
func (g *grpcPath) consume(ctx context.Context, n int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := g.c.Subscribe(g.ctx(ctx))
	if err != nil {
		return err
	}
	if err := st.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Subscribe{Subscribe: &pb.Subscribe{
		Subscriptions: []*pb.Subscription{{Group: g.group, Topic: g.topic}}}}}); err != nil {
		return err
	}
	for got := 0; got < n; {
		r, err := st.Recv()
		if err != nil {
			return err
		}
		d := r.GetDelivery()
		if d == nil {
			continue
		}
		got++
		if err := st.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: &pb.Settle{DeliveryIds: []string{d.DeliveryId}}}}); err != nil {
			return err
		}
	}
	return nil
}
