package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
)

// pushConcurrency is the push subscription's push_concurrency in the push
// row: enough POSTs in flight to keep a loopback receiver busy.
const pushConcurrency = 64

// pushPath is the sidecar path whose consume phase is an HTTP push
// subscription (docs/http-api.md, "Push subscriptions"): the sidecar POSTs
// each message as a CloudEvent in binary mode to a net/http receiver on
// loopback, which answers 204. Publishing is the sidecar path's.
type pushPath struct {
	*sidecarPath
	sc  *msgmesh.Sidecar
	srv *http.Server
	url string

	mu    sync.Mutex
	count int
	want  int
	all   chan struct{}
}

// startPush turns sp into a push path: it starts the receiver; the push
// subscription starts with the consume phase.
func startPush(sp *sidecarPath, sc *msgmesh.Sidecar) (*pushPath, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	p := &pushPath{sidecarPath: sp, sc: sc, url: "http://" + ln.Addr().String() + "/bench"}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.receive), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			quietLogger().Error("push receiver", "err", err)
		}
	}()
	return p, func() { _ = p.srv.Close(); <-done }, nil
}

func (p *pushPath) receive(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	p.mu.Lock()
	p.count++
	if p.all != nil && p.count == p.want {
		close(p.all)
	}
	p.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// consume registers the push subscription on the group, whose upstream
// consumer has waited since the registration without a consumer, and
// waits until the receiver took n POSTs.
func (p *pushPath) consume(ctx context.Context, n int) error {
	all := make(chan struct{})
	p.mu.Lock()
	p.count, p.want, p.all = 0, n, all
	p.mu.Unlock()
	if _, _, err := p.sc.Register(ctx, registry.Registration{App: "bench",
		Produce: []registry.Binding{{Group: "p-" + p.topic, Topic: p.topic}},
		Consume: []registry.Binding{{Group: p.group, Topic: p.topic, PushURL: p.url, PushConcurrency: pushConcurrency}}}, ""); err != nil {
		return fmt.Errorf("push subscription: %w", err)
	}
	select {
	case <-all:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
