package msgmesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/core"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
)

// HTTP push subscriptions (docs/http-api.md, "Push subscriptions"): a
// consume binding with a push_url makes the sidecar POST each delivery of
// the group on the topic to the app as a CloudEvent (cloudevents.go),
// Dapr and Knative style, and answer the broker from the HTTP status:
//
//   - 2xx acks;
//   - 429 and 503 with Retry-After nack with that delay (capped at
//     Config.MaxNackDelay);
//   - any other answer, a connection error or a timeout nack with an
//     exponential backoff (pushBackoff), so the group's dead-letter policy
//     applies through the ordinary nack path (deadletter.go).
//
// The pushManager keeps one push session (detached.go) per (app, group,
// topic) push subscription, in-flight bound = its concurrency, and as many
// workers: the session's push callback only enqueues (a channel of that
// capacity, which never fills), and the workers POST and settle by
// delivery id. reconcile hands the manager every registration change
// (sync); a subscription whose URL, settings or app secret changed starts
// again, one that is gone stops: it takes no more deliveries, its POSTs in
// progress finish (their answers count), and Close hands what it still
// holds back to the broker. Shutdown and Handoff let the workers settle
// what the sessions hold while they wait for deliveries to settle, then
// stop the manager (stop).
//
// The URL's host must be a loopback name or address unless
// Config.PushAllowHosts allows it, checked when the app registers and
// again on every connection the client dials (a name such as localhost
// must resolve to loopback), so that an app cannot make the sidecar send
// its messages elsewhere. Each subscription has its own http.Client: no
// proxy from the environment, no redirects followed, bounded header and
// body reads.

// Push tuning.
const (
	// pushBackoffBase is the nack delay after a delivery's first failed
	// POST; it doubles with every attempt, up to Config.MaxNackDelay.
	pushBackoffBase = time.Second
	// pushDialTimeout bounds connecting to a push URL.
	pushDialTimeout = 5 * time.Second
	// pushMaxResponseBody is the most of an answer's body the sidecar
	// reads (and discards) to keep the connection for the next POST.
	pushMaxResponseBody = 64 << 10
	// pushMaxResponseHeaders bounds an answer's headers.
	pushMaxResponseHeaders = 64 << 10
	// defaultPushTimeout is Config.PushTimeout's default (below the
	// default delivery timeout, 30 s).
	defaultPushTimeout = 10 * time.Second
)

// Push outcomes, the outcome label of msgmesh_pushed_total
// (observe.Metrics.Pushed).
const (
	pushOutcomeAck        = "ack"         // 2xx: acked
	pushOutcomeRetryAfter = "retry_after" // 429 or 503 with Retry-After: nacked with its delay
	pushOutcomeStatus     = "status"      // another status: nacked with backoff
	pushOutcomeTimeout    = "timeout"     // no answer within the push timeout
	pushOutcomeError      = "error"       // connection refused, reset, ...: nacked with backoff
	pushOutcomeLost       = "lost"        // the answer could not be given (the delivery had timed out or the session ended)
)

// pushKey names one push subscription.
type pushKey struct{ app, group, topic string }

// pushSpec is what a push subscription runs with; a change starts it again.
type pushSpec struct {
	url        string
	window     int
	structured bool
	timeout    time.Duration
	proof      string // the app's secret hash: a new secret starts it again
	cluster    string
}

// pushManager runs the sidecar's push subscriptions. Its methods are safe
// for concurrent use; sync is called under Sidecar.reconcileMu.
type pushManager struct {
	sc    *Sidecar
	hosts *httpGuard // the hosts beyond loopback that may be pushed to

	mu      sync.Mutex
	subs    map[pushKey]*pushSub
	stopped bool
	// owned: every subscription's workers and closers.
	owned core.Routines
	// abort is cancelled when the manager stops for good: POSTs still in
	// progress end, and their deliveries go back to the broker.
	abort       context.Context
	abortCancel context.CancelFunc
}

// pushSub is one running push subscription.
type pushSub struct {
	key    pushKey
	spec   pushSpec
	ps     *PushSession
	ch     chan Delivery // capacity spec.window: never full
	quit   chan struct{} // closed: take no more deliveries
	quitMu sync.Once
	wg     sync.WaitGroup // the workers
	client *http.Client
	log    *slog.Logger
}

func newPushManager(sc *Sidecar, allow []string) (*pushManager, error) {
	hosts, err := newHostSet("PushAllowHosts", allow, sc.log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &pushManager{sc: sc, hosts: hosts, subs: map[pushKey]*pushSub{}, abort: ctx, abortCancel: cancel}, nil
}

// checkRegistration refuses a registration whose push subscriptions the
// sidecar would not run: a host that is not allowed, the sidecar's own
// HTTP API, or a timeout that is not below the delivery timeout.
func (pm *pushManager) checkRegistration(reg registry.Registration) error {
	for i, b := range reg.Consume {
		if !b.Push() {
			continue
		}
		if err := pm.checkURL(b.PushURL); err != nil {
			return fmt.Errorf("%w: consume[%d].push_url: %w", ErrInvalid, i, err)
		}
		if t := pm.timeoutOf(b); t >= pm.sc.cfg.DeliveryTimeout {
			return fmt.Errorf("%w: consume[%d].push_timeout: %s is not below the sidecar's delivery timeout %s (--delivery-timeout): a POST still running would see its delivery handed back and sent again",
				ErrInvalid, i, t, pm.sc.cfg.DeliveryTimeout)
		}
	}
	return nil
}

// checkURL says why the sidecar may not push to raw.
func (pm *pushManager) checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if !pm.hosts.allowedHost(u.Hostname()) {
		return fmt.Errorf("host %q is neither a loopback name or address nor in --push-allow-hosts: the sidecar pushes messages only to this host unless its operator allows more", u.Hostname())
	}
	if ln := pm.sc.httpLn; ln != nil {
		if a, err := netip.ParseAddrPort(ln.Addr().String()); err == nil && strconv.Itoa(int(a.Port())) == portOf(u) && isLoopbackHost(u.Hostname()) {
			return fmt.Errorf("%s is the sidecar's own HTTP API", u.Host)
		}
	}
	return nil
}

// portOf is u's port, or its scheme's.
func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "https" {
		return "443"
	}
	return "80"
}

// isLoopbackHost reports whether h (a host without port) is localhost or
// a loopback address; the HTTP API's Host check and push URLs share it.
func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(h)
	return err == nil && a.Unmap().IsLoopback()
}

// timeoutOf is a binding's push timeout: its own, or Config.PushTimeout.
func (pm *pushManager) timeoutOf(b registry.Binding) time.Duration {
	if t := b.PushTimeoutValue(); t > 0 {
		return t
	}
	return pm.sc.cfg.PushTimeout
}

// sync starts, restarts and stops push subscriptions to match regs, the
// registrations as just stored; snap is the snapshot made of them. It
// does not wait for a stopping subscription's POSTs.
func (pm *pushManager) sync(regs []registry.Registration, snap *snapshot) {
	want := map[pushKey]pushSpec{}
	for _, r := range regs {
		for _, b := range r.Consume {
			if !b.Push() {
				continue
			}
			var proof string
			if g := snap.apps[r.App]; g != nil {
				proof = string(g.secret)
			}
			// A registration stored under a longer --delivery-timeout
			// (Register refuses it now) is cut below the current one.
			timeout := min(pm.timeoutOf(b), pm.sc.cfg.DeliveryTimeout*9/10)
			want[pushKey{r.App, b.Group, b.Topic}] = pushSpec{url: b.PushURL, window: b.PushWindow(),
				structured: b.PushMode == registry.PushModeStructured, timeout: timeout, proof: proof,
				cluster: pm.sc.clusterOf(b.Topic)}
		}
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	if pm.stopped {
		return
	}
	for k, sub := range pm.subs {
		spec, ok := want[k]
		if ok && spec == sub.spec && !sub.ended() {
			continue
		}
		delete(pm.subs, k)
		pm.retire(sub)
	}
	for k, spec := range want {
		if _, ok := pm.subs[k]; ok {
			continue
		}
		sub, err := pm.start(k, spec, snap)
		if err != nil {
			pm.sc.log.Error("push subscription not started; it is tried again on the next registration change", "app", k.app, "group", k.group, "topic", k.topic, "url", spec.url, "err", err)
			continue
		}
		pm.subs[k] = sub
		pm.sc.log.Info("push subscription started", "app", k.app, "group", k.group, "topic", k.topic, "url", spec.url, "concurrency", spec.window)
	}
}

// start opens and subscribes the push session of k and starts its
// workers; pm.mu held.
func (pm *pushManager) start(k pushKey, spec pushSpec, snap *snapshot) (*pushSub, error) {
	if err := pm.checkURL(spec.url); err != nil { // the allowed hosts may have changed since it registered
		return nil, err
	}
	g := snap.apps[k.app]
	if g == nil {
		return nil, fmt.Errorf("%w: app %q", ErrNotRegistered, k.app)
	}
	sub := &pushSub{key: k, spec: spec, ch: make(chan Delivery, spec.window), quit: make(chan struct{}),
		log: pm.sc.log.With("app", k.app, "group", k.group, "topic", k.topic, "push_url", spec.url)}
	sub.client = pm.newClient(spec)
	var err error
	sub.ps, err = pm.sc.openPushSession(identity{app: k.app, proof: g.secret}, "http-push", spec.window, func(d Delivery) error {
		select {
		case sub.ch <- d:
			return nil
		default: // cannot happen: at most window deliveries are unanswered
			return fmt.Errorf("msgmesh: push subscription %s:%s of app %q: queue full", k.group, k.topic, k.app)
		}
	})
	if err != nil {
		return nil, err
	}
	if err := sub.ps.Subscribe([]mesh.Subscription{{Group: k.group, Topic: k.topic, Mode: mesh.ModePush}}); err != nil {
		sub.ps.Close()
		return nil, err
	}
	for range spec.window {
		sub.wg.Add(1)
		if !pm.owned.Go(func() { defer sub.wg.Done(); pm.work(sub) }) {
			sub.wg.Done()
		}
	}
	return sub, nil
}

// retire stops sub without waiting: a goroutine of the manager waits for
// its POSTs in progress and then closes its session.
func (pm *pushManager) retire(sub *pushSub) {
	sub.stopTaking()
	if !pm.owned.Go(func() { sub.wg.Wait(); sub.close() }) {
		sub.wg.Wait()
		sub.close()
	}
	sub.log.Info("push subscription stopping")
}

// stop ends every push subscription for good (Shutdown, Handoff): no
// delivery is taken any more, POSTs in progress finish until ctx ends
// (their answers count), and what the sessions still hold goes back to
// the broker. It waits for every goroutine of the manager.
func (pm *pushManager) stop(ctx context.Context) {
	pm.mu.Lock()
	pm.stopped = true
	subs := slices.Collect(maps.Values(pm.subs))
	clear(pm.subs)
	pm.mu.Unlock()
	for _, sub := range subs {
		sub.stopTaking()
	}
	done := make(chan struct{})
	go func() { // ends with the workers, which end at the latest when abort is cancelled below
		for _, sub := range subs {
			sub.wg.Wait()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		pm.abortCancel()
		<-done
	}
	pm.abortCancel()
	for _, sub := range subs {
		sub.close()
	}
	pm.owned.Stop()
	pm.owned.Wait()
}

func (sub *pushSub) stopTaking() { sub.quitMu.Do(func() { close(sub.quit) }) }

// close hands back what the session holds and drops idle connections.
func (sub *pushSub) close() {
	sub.ps.Close()
	sub.client.CloseIdleConnections()
}

// ended: the session ended under the subscription (the sidecar stopping
// or a failed push); sync starts it again.
func (sub *pushSub) ended() bool {
	select {
	case <-sub.ps.Done():
		return true
	default:
		return false
	}
}

// work is one worker of sub: it POSTs deliveries until the subscription
// stops taking them or its session ends.
func (pm *pushManager) work(sub *pushSub) {
	// Each POST's deadline derives from this worker's own context, not
	// straight from abort: a context's children share its lock.
	ctx, cancel := context.WithCancel(pm.abort)
	defer cancel()
	for {
		select { // stopping wins over a waiting delivery, which goes back on Close
		case <-sub.quit:
			return
		case <-sub.ps.Done():
			return
		default:
		}
		select {
		case <-sub.quit:
			return
		case <-sub.ps.Done():
			return
		case d := <-sub.ch:
			pm.push(ctx, sub, d)
		}
	}
}

// push POSTs one delivery and settles it from the answer; ctx ends when
// the manager stops for good.
func (pm *pushManager) push(ctx context.Context, sub *pushSub, d Delivery) {
	sc := pm.sc
	m := d.Message()
	outcome, delay, detail := pm.post(ctx, sub, d)
	if ctx.Err() != nil {
		// The manager stopped for good and cut the POST short: no answer.
		// The delivery stays in flight until Close hands it back to the
		// broker, which is not a failed attempt.
		sub.log.Debug("push cancelled by the stop; handed back", "message_id", m.MessageID)
		return
	}
	var ok bool
	if outcome == pushOutcomeAck {
		ok = sub.ps.Ack(d.ID())
	} else {
		ok = sub.ps.Nack(d.ID(), delay)
		sub.log.Debug("push failed; nacked", "outcome", outcome, "detail", detail, "delay", delay, "attempt", m.Redelivered+1, "message_id", m.MessageID)
	}
	if !ok {
		outcome = pushOutcomeLost
	}
	sc.metrics().Pushed(context.Background(), m.Topic, m.Group, outcome)
}

// post sends d and classifies the answer: the outcome, the nack delay
// when it is not an ack, and what went wrong, for the log.
func (pm *pushManager) post(ctx context.Context, sub *pushSub, d Delivery) (outcome string, delay time.Duration, detail string) {
	sc := pm.sc
	m := d.Message()
	ctx, cancel := context.WithTimeout(ctx, sub.spec.timeout)
	defer cancel()
	req, err := newPushRequest(ctx, sub.spec, d)
	if err != nil {
		return pushOutcomeError, pm.backoff(m), err.Error()
	}
	resp, err := sub.client.Do(req)
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return pushOutcomeTimeout, pm.backoff(m), err.Error()
		}
		return pushOutcomeError, pm.backoff(m), err.Error()
	}
	_, rerr := io.Copy(io.Discard, io.LimitReader(resp.Body, pushMaxResponseBody))
	_ = resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		if rerr != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// The status said yes; the body did not finish in time. The app
			// answered: the ack stands.
			sub.log.Debug("push answer body cut off at the timeout", "err", rerr)
		}
		return pushOutcomeAck, 0, ""
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable:
		if ra, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
			return pushOutcomeRetryAfter, min(ra, sc.cfg.MaxNackDelay), resp.Status
		}
	}
	return pushOutcomeStatus, pm.backoff(m), resp.Status
}

// backoff is the nack delay after a failed POST of m: pushBackoffBase
// doubled per attempt before, capped at Config.MaxNackDelay.
func (pm *pushManager) backoff(m mesh.Message) time.Duration {
	d := pushBackoffBase << min(m.Redelivered, 20)
	return min(d, pm.sc.cfg.MaxNackDelay)
}

// parseRetryAfter reads a Retry-After value: whole seconds, or an HTTP
// date (a date in the past is no delay).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(n) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// newClient makes the HTTP client of one subscription: no proxy, no
// redirects, bounded answers, and a dialer that connects only to the
// addresses the subscription may reach (pushDialControl).
func (pm *pushManager) newClient(spec pushSpec) *http.Client {
	u, _ := url.Parse(spec.url) // checked by registry.Validate
	dialer := &net.Dialer{Timeout: pushDialTimeout, KeepAlive: 30 * time.Second, Control: pm.dialControl(u.Hostname())}
	tr := &http.Transport{
		Proxy:                  nil, // never $HTTP_PROXY: the payloads stay on this host
		DialContext:            dialer.DialContext,
		TLSHandshakeTimeout:    pushDialTimeout,
		MaxIdleConns:           spec.window,
		MaxIdleConnsPerHost:    spec.window,
		IdleConnTimeout:        90 * time.Second,
		MaxResponseHeaderBytes: pushMaxResponseHeaders,
		DisableCompression:     true,
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// dialControl refuses a connection to an address host may not lead to: a
// host allowed by name (--push-allow-hosts) may resolve to anything; any
// other (localhost, a loopback or allowed address) must connect to a
// loopback or allowed address.
func (pm *pushManager) dialControl(host string) func(network, address string, _ syscall.RawConn) error {
	byName := pm.hosts.names[normalizeHost(host)]
	return func(network, address string, _ syscall.RawConn) error {
		if byName {
			return nil
		}
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("msgmesh: push: dialing %s: %w", address, err)
		}
		if a := ap.Addr().Unmap(); !pm.hosts.allowedHost(a.String()) {
			return fmt.Errorf("msgmesh: push: %s resolves to %s, which is neither loopback nor in --push-allow-hosts", host, a)
		}
		return nil
	}
}

// newPushRequest builds the POST of d in the subscription's content mode.
func newPushRequest(ctx context.Context, spec pushSpec, d Delivery) (*http.Request, error) {
	ev := eventOf(spec.cluster, d.Message())
	var (
		body []byte
		err  error
	)
	h := http.Header{}
	if spec.structured {
		body, err = ev.structured()
		h.Set("Content-Type", ceStructuredType)
	} else {
		body = ev.data
		ev.binaryHeaders(h)
	}
	if err != nil {
		return nil, err
	}
	ev.transportHeaders(h, d)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, spec.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	return req, nil
}
