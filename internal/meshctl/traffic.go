package meshctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/msgmesh/msgmesh/client"
)

func setupPub(fs *flag.FlagSet) func(context.Context, *env) error {
	addr := fs.String("addr", defaultAddr, "the sidecar's mesh address")
	app := fs.String("app", "", "the app to publish as: a registered app that produces the topic (required)")
	secret := secretFlag(fs)
	topic := fs.String("topic", "", "topic to publish to (required)")
	key := fs.String("key", "", "message key (empty: none)")
	count := fs.Int("count", 1000, "number of messages")
	size := fs.Int("size", 128, "body size in bytes")
	window := fs.Int("window", 256, "publishes in flight at most")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up (and fail) after this long")
	return func(ctx context.Context, e *env) error {
		switch {
		case *app == "":
			return usagef("--app is required: the sidecar binds a connection to one registered app")
		case *topic == "":
			return usagef("--topic is required")
		case *count < 1:
			return usagef("--count must be at least 1")
		case *size < 0:
			return usagef("--size must not be negative")
		case *window < 1:
			return usagef("--window must be at least 1")
		case *timeout <= 0:
			return usagef("--timeout must be positive")
		}
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		c, err := dialAs(ctx, e, *addr, *app, secret)
		if err != nil {
			return err
		}
		defer c.Close()
		return publish(ctx, e, c, *topic, *key, *count, *size, *window)
	}
}

// dialAs connects to the sidecar as app, with its secret if it has one.
func dialAs(ctx context.Context, e *env, addr, app string, secret func() (string, error)) (*client.Client, error) {
	s, err := secret()
	if err != nil {
		return nil, err
	}
	return client.Dial(ctx, addr, client.WithApp(app), client.WithSecret(s), client.WithLogger(e.log))
}

// publish sends count messages keeping up to window in flight, and reports
// the rate. Every message must be acknowledged; the first failure stops
// further publishes and is returned once those in flight have finished.
func publish(ctx context.Context, e *env, c *client.Client, topic, key string, count, size, window int) error {
	// Bodies are windows into one random buffer, so they differ from one
	// message to the next without a per-message allocation.
	const spread = 4096
	src := make([]byte, size+spread)
	for i := range src {
		src[i] = byte(rand.Uint32())
	}
	var (
		acked    atomic.Int64
		failed   atomic.Bool
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		failed.Store(true)
	}
	sem := make(chan struct{}, window)
	done := func(_ client.PublishAck, err error) {
		if err != nil {
			fail(err)
		} else {
			acked.Add(1)
		}
		<-sem
		wg.Done()
	}
	m := &client.Message{Topic: topic, Key: key} // PublishAsync does not retain it
	start := time.Now()
	for i := 0; i < count && !failed.Load(); i++ {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			fail(ctx.Err())
			continue
		}
		off := i % spread
		m.Body = src[off : off+size]
		wg.Add(1)
		c.PublishAsync(ctx, m, done)
	}
	wg.Wait()
	elapsed := time.Since(start)
	n := acked.Load()
	fmt.Fprintf(e.stdout, "published %d messages of %d bytes in %s: %s\n", n, size, elapsed.Round(time.Millisecond), rate(n, size, elapsed))
	if firstErr != nil {
		return fmt.Errorf("%d of %d messages not acknowledged; first error: %w", int64(count)-n, count, firstErr)
	}
	return nil
}

func setupSub(fs *flag.FlagSet) func(context.Context, *env) error {
	addr := fs.String("addr", defaultAddr, "the sidecar's mesh address")
	app := fs.String("app", "", "the app to consume as: a registered app that consumes the topic with the group (required)")
	secret := secretFlag(fs)
	topic := fs.String("topic", "", "topic to consume (required)")
	group := fs.String("group", "", "consumer group (required)")
	count := fs.Int("count", 1000, "exit after this many messages")
	timeout := fs.Duration("timeout", 60*time.Second, "fail if the messages have not all arrived by then")
	concurrency := fs.Int("concurrency", 1, "handler goroutines")
	return func(ctx context.Context, e *env) error {
		switch {
		case *app == "":
			return usagef("--app is required: the sidecar binds a connection to one registered app")
		case *topic == "" || *group == "":
			return usagef("--topic and --group are required")
		case *count < 1:
			return usagef("--count must be at least 1")
		case *timeout <= 0:
			return usagef("--timeout must be positive")
		case *concurrency < 1:
			return usagef("--concurrency must be at least 1")
		}
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		c, err := dialAs(ctx, e, *addr, *app, secret)
		if err != nil {
			return err
		}
		defer c.Close()
		return consume(ctx, e, c, *group, *topic, *count, *timeout, *concurrency)
	}
}

// consume acks count messages and reports the rate. Messages beyond count
// (already pushed when the count is reached) are nacked, so that they stay
// for the next consumer.
func consume(ctx context.Context, e *env, c *client.Client, group, topic string, count int, timeout time.Duration, concurrency int) error {
	var (
		n     atomic.Int64
		bytes atomic.Int64
		first atomic.Int64 // unix nanos of the first message
		last  atomic.Int64 // unix nanos of message number count
		all   = make(chan struct{})
	)
	h := func(ctx context.Context, d *client.Delivery) error {
		k := n.Add(1)
		if k > int64(count) {
			return &client.RetryAfter{Err: errors.New("meshctl sub has all it wants")}
		}
		now := time.Now().UnixNano()
		first.CompareAndSwap(0, now)
		bytes.Add(int64(len(d.Body)))
		if k == int64(count) {
			last.Store(now)
			close(all)
		}
		return nil
	}
	start := time.Now()
	s, err := c.Subscribe(ctx, group, topic, h, client.WithConcurrency(concurrency))
	if err != nil {
		return err
	}
	select {
	case <-all:
	case <-ctx.Done():
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.Close(closeCtx) // lets the last handlers' ACKs out
	got := min(n.Load(), int64(count))
	if got < int64(count) {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("timed out after %s: received %d of %d messages", timeout, got, count)
		}
		return fmt.Errorf("%w: received %d of %d messages", ctx.Err(), got, count)
	}
	span := time.Duration(last.Load() - first.Load())
	avg := 0
	if got > 0 {
		avg = int(bytes.Load() / got)
	}
	fmt.Fprintf(e.stdout, "received %d messages in %s (first after %s): %s\n", got,
		time.Since(start).Round(time.Millisecond), time.Duration(first.Load()-start.UnixNano()).Round(time.Millisecond), rate(got, avg, span))
	return nil
}

// rate formats a message rate and byte rate for n messages of size bytes.
func rate(n int64, size int, d time.Duration) string {
	if d <= 0 {
		return fmt.Sprintf("%d msgs", n)
	}
	secs := d.Seconds()
	return fmt.Sprintf("%.0f msgs/s, %.2f MiB/s", float64(n)/secs, float64(n)*float64(size)/secs/(1<<20))
}
