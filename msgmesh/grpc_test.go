package msgmesh_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
	pb "github.com/msgmesh/msgmesh/proto/msgmesh/v1"
)

// withGRPC gives the sidecar a gRPC listener on a free loopback port.
func withGRPC(c *msgmesh.Config) { c.GRPCListen = "127.0.0.1:0" }

// grpcClient is the Mesh client of e's sidecar.
func (e *env) grpcClient() pb.MeshClient {
	e.t.Helper()
	return pb.NewMeshClient(sidecartest.GRPCConn(e.t, e.sc.GRPCAddr().String()))
}

// wantStatus fails unless err is a gRPC status with code and, when reason
// is not empty, an ErrorInfo of that reason.
func wantStatus(t testing.TB, what string, err error, code codes.Code, reason string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		t.Fatalf("%s: %v; want %s", what, err, code)
	}
	if st.Message() == "" {
		t.Fatalf("%s: status %s without a message", what, code)
	}
	if reason == "" {
		return
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.Domain == "msgmesh" {
			if info.Reason != reason {
				t.Fatalf("%s: reason %s (%s); want %s", what, info.Reason, st.Message(), reason)
			}
			return
		}
	}
	t.Fatalf("%s: %s without a msgmesh ErrorInfo; want reason %s", what, st.Message(), reason)
}

// subStream is a Subscribe stream with its first answer read.
type subStream struct {
	t      testing.TB
	st     pb.Mesh_SubscribeClient
	cancel context.CancelFunc
	window uint32
	mu     sync.Mutex // Send
}

func grpcSubscribe(t testing.TB, c pb.MeshClient, app string, window uint32, subs ...*pb.Subscription) *subStream {
	t.Helper()
	ctx, cancel := context.WithCancel(sidecartest.As(t, app, "", 60*time.Second))
	t.Cleanup(cancel)
	st, err := c.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Subscribe{Subscribe: &pb.Subscribe{Subscriptions: subs, Window: window}}}); err != nil {
		t.Fatal(err)
	}
	r, err := st.Recv()
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if r.GetSubscribed() == nil {
		t.Fatalf("subscribe: first answer %v, want subscribed", r)
	}
	return &subStream{t: t, st: st, cancel: cancel, window: r.GetSubscribed().GetWindow()}
}

// next returns the next delivery, failing after a while without one.
func (s *subStream) next() *pb.Delivery {
	s.t.Helper()
	type res struct {
		r   *pb.SubscribeResponse
		err error
	}
	ch := make(chan res, 1)
	go func() { r, err := s.st.Recv(); ch <- res{r, err} }()
	select {
	case x := <-ch:
		if x.err != nil {
			s.t.Fatalf("subscribe stream: %v", x.err)
		}
		if x.r.GetDelivery() == nil {
			s.t.Fatalf("subscribe stream: %v, want a delivery", x.r)
		}
		return x.r.GetDelivery()
	case <-time.After(sidecartest.Scaled(15 * time.Second)):
		s.t.Fatal("no delivery on the subscribe stream")
		return nil
	}
}

func (s *subStream) settle(nack bool, delay time.Duration, ids ...string) {
	s.t.Helper()
	st := &pb.Settle{DeliveryIds: ids, DelayMs: uint32(delay / time.Millisecond)}
	req := &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: st}}
	if nack {
		req.Request = &pb.SubscribeRequest_Nack{Nack: st}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.st.Send(req); err != nil {
		s.t.Fatalf("settle: %v", err)
	}
}

func pub(topic, body string) *pb.PublishRequest {
	return &pb.PublishRequest{Topic: topic, Body: []byte(body)}
}

// TestGRPCRoundTrip: on every broker, every call of the gRPC API works with
// a Go gRPC client: Register, Publish (key, headers, tag, empty key), a
// PublishStream of many messages with one ack each, a Subscribe stream
// that acks, a Pull acked and nacked by id (and the nacked one pulled
// again, redelivered), and Deregister.
func TestGRPCRoundTrip(t *testing.T) {
	for _, kit := range sidecartest.BrokerKits() {
		t.Run(kit.Name, func(t *testing.T) {
			e := newEnvOn(t, kit.Start(t), withGRPC)
			c := e.grpcClient()
			ctx := sidecartest.As(t, "orders", "", 60*time.Second)
			reg, err := c.Register(ctx, &pb.RegisterRequest{Registration: &pb.Registration{App: "orders",
				Produce: []*pb.Binding{{Group: "p1", Topic: topic}},
				Consume: []*pb.Binding{{Group: "g1", Topic: topic}, {Group: "g2", Topic: topic, MaxAttempts: 5}}}})
			if err != nil {
				t.Fatalf("register: %v", err)
			}
			if r := reg.Registration; r.App != "orders" || len(r.Consume) != 2 || r.Consume[1].MaxAttempts != 5 || r.UpdatedAtUnixNano == 0 {
				t.Fatalf("register answered %v", r)
			}

			// Publish one with everything set; it comes back through a
			// Subscribe stream of g1.
			sub := grpcSubscribe(t, c, "orders", 8, &pb.Subscription{Group: "g1", Topic: topic})
			emptyKey := kit.Name != "rocketmq" // RocketMQ keeps no empty key
			res, err := c.Publish(ctx, &pb.PublishRequest{Topic: topic, Key: []byte("k1"), Body: []byte("first"), Tag: "blue",
				Headers: []*pb.Header{{Key: "Tenant", Value: []byte("acme")}}})
			if err != nil {
				t.Fatalf("publish: %v", err)
			}
			if res.Stream == "" && res.MessageId == "" {
				t.Fatalf("publish answered %v, want where it was stored", res)
			}
			d := sub.next()
			if string(d.Body) != "first" || string(d.Key) != "k1" || d.EmptyKey || d.Tag != "blue" || d.Group != "g1" ||
				d.Topic != topic || d.DeliveryId == "" || d.TimestampUnixNano == 0 || d.Redelivered != 0 {
				t.Fatalf("delivery %v", d)
			}
			if !slices.ContainsFunc(d.Headers, func(h *pb.Header) bool { return h.Key == "Tenant" && string(h.Value) == "acme" }) {
				t.Errorf("delivery headers %v lack Tenant: acme", d.Headers)
			}
			sub.settle(false, 0, d.DeliveryId)
			if emptyKey {
				if _, err := c.Publish(ctx, &pb.PublishRequest{Topic: topic, EmptyKey: true}); err != nil {
					t.Fatalf("publish with an empty key: %v", err)
				}
				d := sub.next()
				if !d.EmptyKey || len(d.Key) != 0 || len(d.Body) != 0 || d.NullBody {
					t.Fatalf("empty key, empty body delivered as %v", d)
				}
				sub.settle(false, 0, d.DeliveryId)
			}

			// A stream of n publishes: one ack per message, by id.
			const n = 200
			ps, err := c.PublishStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				for i := range n {
					_ = ps.Send(&pb.PublishStreamRequest{Id: uint64(1000 + i), Message: pub(topic, fmt.Sprintf("s-%d", i))})
				}
				_ = ps.CloseSend()
			}()
			acked := map[uint64]bool{}
			for {
				a, err := ps.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("publish stream: %v", err)
				}
				if a.Error != nil || a.Result == nil || acked[a.Id] || a.Id < 1000 || a.Id >= 1000+n {
					t.Fatalf("publish ack %v", a)
				}
				acked[a.Id] = true
			}
			if len(acked) != n {
				t.Fatalf("%d acks for %d publishes", len(acked), n)
			}
			got := map[string]bool{}
			for len(got) < n {
				d := sub.next()
				got[string(d.Body)] = true
				sub.settle(false, 0, d.DeliveryId)
			}

			// Pull from g2: everything published so far; ack all but one,
			// nack that one, pull it again.
			want := n + 1
			if emptyKey {
				want++
			}
			var pulled []*pb.Delivery
			deadline := time.Now().Add(sidecartest.Scaled(30 * time.Second))
			for len(pulled) < want && time.Now().Before(deadline) {
				r, err := c.Pull(ctx, &pb.PullRequest{Group: "g2", Topic: topic, Max: 100, WaitMs: 1000})
				if err != nil {
					t.Fatalf("pull: %v", err)
				}
				pulled = append(pulled, r.Deliveries...)
			}
			if len(pulled) != want {
				t.Fatalf("pulled %d, want %d", len(pulled), want)
			}
			var ids []string
			var nacked *pb.Delivery
			for _, d := range pulled {
				if string(d.Body) == "first" {
					nacked = d
					continue
				}
				ids = append(ids, d.DeliveryId)
			}
			ar, err := c.Ack(ctx, &pb.AckRequest{DeliveryIds: ids})
			if err != nil || int(ar.Answered) != len(ids) || len(ar.Unknown) != 0 {
				t.Fatalf("ack: %v %v", ar, err)
			}
			if _, err := c.Nack(ctx, &pb.NackRequest{DeliveryIds: []string{nacked.DeliveryId}, DelayMs: 100}); err != nil {
				t.Fatalf("nack: %v", err)
			}
			var again []*pb.Delivery
			for len(again) == 0 && time.Now().Before(deadline) {
				r, err := c.Pull(ctx, &pb.PullRequest{Group: "g2", Topic: topic, Max: 10, WaitMs: 1000})
				if err != nil {
					t.Fatalf("pull: %v", err)
				}
				again = r.Deliveries
			}
			if len(again) != 1 || string(again[0].Body) != "first" || again[0].Redelivered != 1 || again[0].DeliveryId == nacked.DeliveryId {
				t.Fatalf("after the nack pulled %v; want first again, redelivered 1, with a new id", again)
			}
			if _, err := c.Ack(ctx, &pb.AckRequest{DeliveryIds: []string{again[0].DeliveryId}}); err != nil {
				t.Fatalf("ack: %v", err)
			}

			sub.cancel()
			if _, err := c.Deregister(ctx, &pb.DeregisterRequest{App: "orders"}); err != nil {
				t.Fatalf("deregister: %v", err)
			}
			_, err = c.Publish(ctx, pub(topic, "late"))
			wantStatus(t, "publish after deregister", err, codes.NotFound, "NOT_REGISTERED")
		})
	}
}

// TestGRPCErrors: each kind of bad call gets the gRPC status code and mesh
// reason of docs/grpc.md, with the reason in the msgmesh-error-code
// trailer too, and leaves the sidecar healthy and serving.
func TestGRPCErrors(t *testing.T) {
	e := newEnv(t, withGRPC, func(c *msgmesh.Config) { c.MaxMessageSize = 64 << 10 })
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	e.register("billing", []string{"p2:billing.events"}, []string{"g9:billing.events"})
	if status, body := sidecartest.RegisterAs(t, e.http, "vault", "vault-secret-0123456789", []string{"p3:vault.events"}, nil); status != 201 {
		t.Fatalf("register vault: %d %s", status, body)
	}
	cc := sidecartest.GRPCConn(t, e.sc.GRPCAddr().String())
	c := pb.NewMeshClient(cc)
	big := make([]byte, 65<<10)
	huge := make([]byte, 8<<20)

	for _, tc := range []struct {
		name   string
		call   func(ctx context.Context) error
		code   codes.Code
		reason string // "": no ErrorInfo (gRPC's own refusal)
	}{
		{"publish to an unregistered topic", func(ctx context.Context) error {
			_, err := c.Publish(ctx, pub("nobody.produces", "x"))
			return err
		}, codes.NotFound, "NOT_REGISTERED"},
		{"publish to another app's topic", func(ctx context.Context) error {
			_, err := c.Publish(ctx, pub("billing.events", "x"))
			return err
		}, codes.PermissionDenied, "FORBIDDEN"},
		{"publish as an unregistered app", func(context.Context) error {
			_, err := c.Publish(sidecartest.As(t, "ghost", "", 10*time.Second), pub(topic, "x"))
			return err
		}, codes.NotFound, "NOT_REGISTERED"},
		{"publish with a wrong secret", func(context.Context) error {
			_, err := c.Publish(sidecartest.As(t, "vault", "not-the-secret-0123456789", 10*time.Second), pub("vault.events", "x"))
			return err
		}, codes.Unauthenticated, "UNAUTHORIZED"},
		{"publish a body over the limit", func(ctx context.Context) error {
			_, err := c.Publish(ctx, &pb.PublishRequest{Topic: topic, Body: big})
			return err
		}, codes.InvalidArgument, "MESSAGE_TOO_BIG"},
		{"publish a body over gRPC's message limit", func(ctx context.Context) error {
			_, err := c.Publish(ctx, &pb.PublishRequest{Topic: topic, Body: huge})
			return err
		}, codes.ResourceExhausted, ""},
		{"publish a reserved header", func(ctx context.Context) error {
			_, err := c.Publish(ctx, &pb.PublishRequest{Topic: topic, Body: []byte("x"), Headers: []*pb.Header{{Key: "Nats-Msg-Id", Value: []byte("1")}}})
			return err
		}, codes.InvalidArgument, "INVALID"},
		{"publish a null body with bytes", func(ctx context.Context) error {
			_, err := c.Publish(ctx, &pb.PublishRequest{Topic: topic, Body: []byte("x"), NullBody: true})
			return err
		}, codes.InvalidArgument, "INVALID"},
		{"pull an unknown group", func(ctx context.Context) error {
			_, err := c.Pull(ctx, &pb.PullRequest{Group: "nope", Topic: topic})
			return err
		}, codes.NotFound, "NOT_REGISTERED"},
		{"pull another app's group", func(ctx context.Context) error {
			_, err := c.Pull(ctx, &pb.PullRequest{Group: "g9", Topic: "billing.events"})
			return err
		}, codes.PermissionDenied, "FORBIDDEN"},
		{"pull naming no app", func(context.Context) error {
			ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(10*time.Second))
			defer cancel()
			_, err := c.Pull(ctx, &pb.PullRequest{Group: "g1", Topic: topic})
			return err
		}, codes.InvalidArgument, "INVALID"},
		{"ack an unknown id", func(ctx context.Context) error {
			_, err := c.Ack(ctx, &pb.AckRequest{DeliveryIds: []string{"0123456789abcdef-1"}})
			return err
		}, codes.NotFound, "UNKNOWN_REQUEST"},
		{"nack a malformed id", func(ctx context.Context) error {
			_, err := c.Nack(ctx, &pb.NackRequest{DeliveryIds: []string{"\x00bad"}})
			return err
		}, codes.NotFound, "UNKNOWN_REQUEST"},
		{"ack no ids", func(ctx context.Context) error {
			_, err := c.Ack(ctx, &pb.AckRequest{})
			return err
		}, codes.InvalidArgument, "INVALID"},
		{"subscribe an unknown group", func(ctx context.Context) error {
			return subscribeErr(ctx, c, &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Subscribe{Subscribe: &pb.Subscribe{
				Subscriptions: []*pb.Subscription{{Group: "nope", Topic: topic}}}}})
		}, codes.NotFound, "NOT_REGISTERED"},
		{"subscribe with an ack first", func(ctx context.Context) error {
			return subscribeErr(ctx, c, &pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: &pb.Settle{DeliveryIds: []string{"x"}}}})
		}, codes.InvalidArgument, "INVALID"},
		{"register an invalid app name", func(ctx context.Context) error {
			_, err := c.Register(ctx, &pb.RegisterRequest{Registration: &pb.Registration{App: "bad name", Produce: []*pb.Binding{{Group: "p", Topic: "t"}}}})
			return err
		}, codes.InvalidArgument, "INVALID"},
		{"register another app than the metadata's", func(ctx context.Context) error {
			_, err := c.Register(ctx, &pb.RegisterRequest{Registration: &pb.Registration{App: "billing", Produce: []*pb.Binding{{Group: "p", Topic: "t"}}}})
			return err
		}, codes.InvalidArgument, "INVALID"},
		{"deregister an unknown app", func(context.Context) error {
			_, err := c.Deregister(sidecartest.As(t, "ghost", "", 10*time.Second), &pb.DeregisterRequest{})
			return err
		}, codes.NotFound, "NOT_FOUND"},
		{"deregister an app with a secret without it", func(ctx context.Context) error {
			_, err := c.Deregister(ctx, &pb.DeregisterRequest{App: "vault"})
			return err
		}, codes.Unauthenticated, "UNAUTHORIZED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(sidecartest.As(t, "orders", "", 10*time.Second))
			wantStatus(t, tc.name, err, tc.code, tc.reason)
		})
	}

	// The reason is in the trailer too.
	var trailer metadata.MD
	_, err := c.Publish(sidecartest.As(t, "orders", "", 10*time.Second), pub("nobody.produces", "x"), grpc.Trailer(&trailer))
	wantStatus(t, "publish to an unregistered topic", err, codes.NotFound, "NOT_REGISTERED")
	if got := trailer.Get("msgmesh-error-code"); !slices.Equal(got, []string{"NOT_REGISTERED"}) {
		t.Errorf("trailer msgmesh-error-code = %q, want NOT_REGISTERED", got)
	}

	// A PublishStream answers a bad message in its ack and goes on.
	ps, err := c.PublishStream(sidecartest.As(t, "orders", "", 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range []*pb.PublishRequest{pub(topic, "ok-1"), {Topic: topic, Body: big}, pub("billing.events", "no"), pub(topic, "ok-2")} {
		if err := ps.Send(&pb.PublishStreamRequest{Message: m}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	_ = ps.CloseSend()
	byID := map[uint64]*pb.PublishAck{}
	for {
		a, err := ps.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		byID[a.Id] = a
	}
	for id, want := range map[uint64]string{1: "", 2: "MESSAGE_TOO_BIG", 3: "FORBIDDEN", 4: ""} {
		a := byID[id]
		switch {
		case a == nil:
			t.Errorf("no ack for message %d", id)
		case want == "" && (a.Result == nil || a.Error != nil):
			t.Errorf("message %d: %v, want a result", id, a)
		case want != "" && (a.Error == nil || a.Error.Code != want || a.Error.Message == "" || a.Error.Retryable):
			t.Errorf("message %d: %v, want error %s", id, a, want)
		}
	}

	// Still healthy and serving.
	hr, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health after bad calls: %v %v", hr, err)
	}
	if _, err := c.Publish(sidecartest.As(t, "orders", "", 10*time.Second), pub(topic, "fine")); err != nil {
		t.Fatalf("publish after bad calls: %v", err)
	}
}

// subscribeErr opens a Subscribe stream, sends first and returns the
// error the stream ends with.
func subscribeErr(ctx context.Context, c pb.MeshClient, first *pb.SubscribeRequest) error {
	st, err := c.Subscribe(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(first); err != nil {
		return err
	}
	for {
		if _, err := st.Recv(); err != nil {
			return err
		}
	}
}

// TestGRPCSubscribeWindow: a Subscribe stream never holds more than its
// window unanswered; a nack with a delay comes again no sooner than the
// delay, redelivered; cancelling the stream hands what it held back to
// the broker at once (a pull of the group gets it).
func TestGRPCSubscribeWindow(t *testing.T) {
	e := newEnv(t, withGRPC)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	c := e.grpcClient()
	ctx := sidecartest.As(t, "orders", "", 60*time.Second)
	const n, window = 30, 4
	for i := range n {
		if _, err := c.Publish(ctx, pub(topic, fmt.Sprintf("m-%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	sub := grpcSubscribe(t, c, "orders", window, &pb.Subscription{Group: "g1", Topic: topic})
	if sub.window != window {
		t.Fatalf("window in force %d, want %d", sub.window, window)
	}
	// Receive on a goroutine of its own, answering nothing, and count:
	// no more than window arrive.
	recvd := make(chan *pb.Delivery, n)
	go func() {
		for {
			r, err := sub.st.Recv()
			if err != nil {
				close(recvd)
				return
			}
			if d := r.GetDelivery(); d != nil {
				recvd <- d
			}
		}
	}()
	next := func() *pb.Delivery {
		t.Helper()
		select {
		case d, ok := <-recvd:
			if !ok {
				t.Fatal("subscribe stream ended")
			}
			return d
		case <-time.After(sidecartest.Scaled(15 * time.Second)):
			t.Fatal("no delivery")
			return nil
		}
	}
	var held []*pb.Delivery
	for range window {
		held = append(held, next())
	}
	select {
	case d := <-recvd:
		t.Fatalf("delivery %s beyond the window of %d", d.Body, window)
	case <-time.After(sidecartest.Scaled(300 * time.Millisecond)):
	}

	// Nack the first with a delay; ack the rest as they come, never
	// holding more than the window.
	const delay = 400 * time.Millisecond
	nackedAt := time.Now()
	sub.settle(true, delay, held[0].DeliveryId)
	seen := map[string]int{}
	for _, d := range held[1:] {
		seen[string(d.Body)]++
		sub.settle(false, 0, d.DeliveryId)
	}
	var again time.Duration
	for len(seen) < n {
		d := next()
		if string(d.Body) == string(held[0].Body) {
			if d.Redelivered != 1 {
				t.Errorf("the nacked message came again with redelivered %d, want 1", d.Redelivered)
			}
			again = time.Since(nackedAt)
		}
		seen[string(d.Body)]++
		sub.settle(false, 0, d.DeliveryId)
	}
	if again < delay {
		t.Errorf("the nacked message came again after %s, before its delay of %s", again, delay)
	}
	for body, k := range seen {
		if k != 1 {
			t.Errorf("%s delivered %d times", body, k)
		}
	}

	// Hold a window's worth, then cancel the stream: a pull gets them.
	for i := range window {
		if _, err := c.Publish(ctx, pub(topic, fmt.Sprintf("h-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	heldBodies := map[string]bool{}
	for range window {
		heldBodies[string(next().Body)] = true
	}
	sub.cancel()
	pulled := map[string]bool{}
	deadline := time.Now().Add(sidecartest.Scaled(10 * time.Second))
	for len(pulled) < window && time.Now().Before(deadline) {
		r, err := c.Pull(ctx, &pb.PullRequest{Group: "g1", Topic: topic, Max: window, WaitMs: 500})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range r.Deliveries {
			pulled[string(d.Body)] = true
			if _, err := c.Ack(ctx, &pb.AckRequest{DeliveryIds: []string{d.DeliveryId}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !maps.Equal(pulled, heldBodies) {
		t.Fatalf("after the stream was cancelled pulled %v, want what it held %v", pulled, heldBodies)
	}
	// The redeliveries came long before the delivery timeout (30 s).
	if time.Until(deadline) < 0 {
		t.Fatal("the held deliveries came back only after the deadline")
	}
}

// TestGRPCShutdown: health says SERVING, then NOT_SERVING as soon as the
// sidecar stops; a Subscribe stream is let answer what it holds, then ends
// UNAVAILABLE telling the client to reconnect; the acked message is not
// delivered again, and Shutdown returns.
func TestGRPCShutdown(t *testing.T) {
	e := newEnv(t, withGRPC)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	cc := sidecartest.GRPCConn(t, e.sc.GRPCAddr().String())
	c := pb.NewMeshClient(cc)
	hc := healthpb.NewHealthClient(cc)
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	watch, err := hc.Watch(wctx, &healthpb.HealthCheckRequest{Service: "msgmesh.v1.Mesh"})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := watch.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v, want SERVING", r, err)
	}
	sub := grpcSubscribe(t, c, "orders", 2, &pb.Subscription{Group: "g1", Topic: topic})
	if _, err := c.Publish(sidecartest.As(t, "orders", "", 10*time.Second), pub(topic, "held")); err != nil {
		t.Fatal(err)
	}
	d := sub.next()

	stopped := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(20*time.Second))
		defer cancel()
		stopped <- e.sc.Shutdown(ctx)
	}()
	if r, err := watch.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health while stopping: %v %v, want NOT_SERVING", r, err)
	}
	select {
	case err := <-stopped:
		t.Fatalf("Shutdown returned (%v) while a delivery was unanswered", err)
	case <-time.After(sidecartest.Scaled(200 * time.Millisecond)):
	}
	sub.settle(false, 0, d.DeliveryId)
	_, err = sub.st.Recv()
	wantStatus(t, "subscribe stream at shutdown", err, codes.Unavailable, "SHUTTING_DOWN")
	if !strings.Contains(status.Convert(err).Message(), "subscribe again") {
		t.Errorf("the stream's end does not tell the client to subscribe again: %v", err)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	case <-time.After(sidecartest.Scaled(20 * time.Second)):
		t.Fatal("Shutdown did not return")
	}
}
