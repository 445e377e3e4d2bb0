package upgrade_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	pb "github.com/msgmesh/msgmesh/proto/msgmesh/v1"
)

// TestHotUpgradeGRPC: a hot upgrade of the binary while a gRPC client
// publishes (unary) and consumes (Subscribe with acks). The gRPC listener
// moves to the new process: the client's Subscribe stream ends UNAVAILABLE
// after the old process let it answer what it held, the health service
// said NOT_SERVING first, and the client, subscribing again on the same
// address, is served by the new process. Every acknowledged publish is
// consumed, and the duplicates (none expected: the old process waits for
// the answers) are counted.
func TestHotUpgradeGRPC(t *testing.T) {
	bin, args, _, httpAddr := sidecartest.UpgradeSetup(t, nil)
	grpcAddr := brokertest.FreeAddr(t)
	args = append(args, "--grpc", grpcAddr)
	old := sidecartest.StartProc(t, bin, args...)
	sidecartest.WaitHealthy(t, old, httpAddr)
	if status, body := sidecartest.Register(t, httpAddr, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	cc := sidecartest.GRPCConn(t, grpcAddr)
	c := pb.NewMeshClient(cc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	led := sidecartest.NewLedger()
	var (
		mu     sync.Mutex
		ends   []codes.Code // how Subscribe streams ended
		health []healthpb.HealthCheckResponse_ServingStatus
		wg     sync.WaitGroup
	)
	count := func() (int, int) { return led.AckedCount(), led.Consumed.Distinct() }
	// Health: watch it, again after each end, recording each status.
	wg.Go(func() {
		hc := healthpb.NewHealthClient(cc)
		for ctx.Err() == nil {
			w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
			for err == nil {
				var r *healthpb.HealthCheckResponse
				if r, err = w.Recv(); err == nil {
					mu.Lock()
					health = append(health, r.Status)
					mu.Unlock()
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	// The consumer subscribes again whenever its stream ends.
	wg.Go(func() {
		for ctx.Err() == nil {
			st, err := c.Subscribe(metadata.NewOutgoingContext(ctx, metadata.Pairs("msgmesh-app", "orders")))
			if err == nil {
				err = st.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Subscribe{Subscribe: &pb.Subscribe{
					Subscriptions: []*pb.Subscription{{Group: "g1", Topic: topic}}, Window: 32}}})
			}
			for err == nil {
				var r *pb.SubscribeResponse
				if r, err = st.Recv(); err != nil {
					break
				}
				if d := r.GetDelivery(); d != nil {
					led.Consumed.Add("sub", string(d.Body))
					err = st.Send(&pb.SubscribeRequest{Request: &pb.SubscribeRequest_Ack{Ack: &pb.Settle{DeliveryIds: []string{d.DeliveryId}}}})
				}
			}
			mu.Lock()
			ends = append(ends, status.Code(err))
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
		}
	})
	// The producer publishes one at a time; a failed publish is retried
	// (an UNAVAILABLE one was not stored).
	stopPub, pubDone := make(chan struct{}), make(chan struct{})
	wg.Go(func() {
		defer close(pubDone)
		for i := 0; ; {
			select {
			case <-stopPub:
				return
			default:
			}
			body := fmt.Sprintf("u-%d", i)
			if _, err := c.Publish(sidecartest.As(t, "orders", "", 10*time.Second), &pb.PublishRequest{Topic: topic, Body: []byte(body)}); err != nil {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			led.Ack(body)
			i++
		}
	})

	sidecartest.WaitFor(t, 30*time.Second, "gRPC traffic to flow", func() bool { a, c := count(); return a > 200 && c > 100 })
	start := time.Now()
	next := sidecartest.StartProc(t, bin, slices.Concat(args, []string{"--upgrade"})...)
	select {
	case <-old.Done:
	case <-time.After(sidecartest.Scaled(90 * time.Second)):
		t.Fatal("the old process did not hand over and exit")
	}
	if code := old.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("old process exited %d", code)
	}
	t.Logf("old process gone %s after the new one started", time.Since(start).Round(time.Millisecond))
	sidecartest.WaitHealthy(t, next, httpAddr)
	a0, c0 := count()
	sidecartest.WaitFor(t, 30*time.Second, "gRPC traffic to flow through the new process", func() bool { a, c := count(); return a > a0+200 && c > c0+200 })
	close(stopPub)
	<-pubDone
	led.WaitConsumed(t, 30*time.Second)
	cancel()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	acked, consumed := count()
	dups := led.Consumed.Count() - consumed
	if consumed != acked {
		t.Errorf("%d publishes acked, %d distinct messages consumed", acked, consumed)
	}
	t.Logf("%d publishes acked, %d consumed, %d duplicates; Subscribe streams ended %v; health %v", acked, consumed, dups, ends, health)
	if !slices.Contains(ends, codes.Unavailable) {
		t.Errorf("no Subscribe stream ended UNAVAILABLE in the upgrade: %v", ends)
	}
	if i := slices.Index(health, healthpb.HealthCheckResponse_NOT_SERVING); i < 0 || !slices.Contains(health[i:], healthpb.HealthCheckResponse_SERVING) {
		t.Errorf("health did not go NOT_SERVING and then SERVING (the new process): %v", health)
	}
}
