package rmqtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults applied by Start to zero Config fields.
const (
	DefaultAddr           = "127.0.0.1:0"
	DefaultQueuesPerTopic = 4
	DefaultMaxMessageSize = 4 << 20
	// DefaultClientTimeout: a consumer that has not sent a heartbeat for
	// this long leaves its groups. The clients send one every 30 s, so
	// this is about two missed heartbeats.
	DefaultClientTimeout = 75 * time.Second
	// DefaultMaxPollWait caps how long a pull waits for messages,
	// whatever suspend timeout it asks for (the Go client asks for 20 s
	// and gives up after 30 s).
	DefaultMaxPollWait = 20 * time.Second
	// DefaultIdleTimeout closes a connection that sent nothing for this
	// long (RocketMQ's channel idle time is 120 s; clients send a
	// heartbeat or route query every 30 s).
	DefaultIdleTimeout = 150 * time.Second
	// DefaultWriteTimeout bounds one write to a client: a client that does
	// not read for this long is disconnected.
	DefaultWriteTimeout = 5 * time.Second
	// BrokerName and ClusterName are what routes report.
	BrokerName  = "broker-a"
	ClusterName = "DefaultCluster"
)

// DefaultDelayLevels are RocketMQ's message delay levels (level n is index
// n-1): 1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h.
var DefaultDelayLevels = []time.Duration{
	time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second,
	time.Minute, 2 * time.Minute, 3 * time.Minute, 4 * time.Minute, 5 * time.Minute,
	6 * time.Minute, 7 * time.Minute, 8 * time.Minute, 9 * time.Minute, 10 * time.Minute,
	20 * time.Minute, 30 * time.Minute, time.Hour, 2 * time.Hour,
}

// flushInterval is how often changed consumer offsets and delay cursors
// are written to Config.DataDir.
const flushInterval = time.Second

// Config configures Start. Every field has a usable zero value.
type Config struct {
	// NameServerAddr is the name server's listen address.
	// Zero: DefaultAddr ("127.0.0.1:0", a free port).
	NameServerAddr string
	// BrokerAddr is the broker's listen address. Zero: DefaultAddr.
	BrokerAddr string
	// Advertise is the broker address routes give to clients
	// ("host:port"). Zero: the broker listener's address, with 127.0.0.1
	// for an unspecified host (0.0.0.0 or ::). Its host, resolved to an
	// IPv4 address, is also the store host of messages (the broker-side
	// message id encodes it).
	Advertise string
	// QueuesPerTopic is the number of queues of an auto-created topic
	// (retry and dead-letter topics always get one, like RocketMQ's).
	// Zero: DefaultQueuesPerTopic (4).
	QueuesPerTopic int
	// DataDir, when set, makes messages, consumer offsets and delay
	// cursors survive a restart: records are appended to DataDir/commitlog
	// (written to the OS per message, not fsynced, like RocketMQ's default
	// asynchronous flush), and offsets are written to DataDir/offsets.json
	// every second and on Close. Zero: everything is in memory only and
	// lost on Close.
	DataDir string
	// DelayLevels are the delays of message delay levels 1..n, used for
	// messages sent with a delay level and for retries. Zero:
	// DefaultDelayLevels (RocketMQ's 18 levels, 1 s to 2 h).
	DelayLevels []time.Duration
	// MaxMessageSize bounds a message body (compressed, as sent).
	// Zero: DefaultMaxMessageSize (4 MiB).
	MaxMessageSize int
	// ClientTimeout: see DefaultClientTimeout. Zero: that default.
	ClientTimeout time.Duration
	// MaxPollWait: see DefaultMaxPollWait. Zero: that default.
	MaxPollWait time.Duration
	// IdleTimeout: see DefaultIdleTimeout. Zero: that default.
	IdleTimeout time.Duration
	// WriteTimeout: see DefaultWriteTimeout. Zero: that default.
	WriteTimeout time.Duration
	// Logger receives connection events at debug level and problems at
	// warn. Zero: a logger that discards everything.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.NameServerAddr == "" {
		c.NameServerAddr = DefaultAddr
	}
	if c.BrokerAddr == "" {
		c.BrokerAddr = DefaultAddr
	}
	if c.QueuesPerTopic <= 0 {
		c.QueuesPerTopic = DefaultQueuesPerTopic
	}
	if len(c.DelayLevels) == 0 {
		c.DelayLevels = DefaultDelayLevels
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = DefaultMaxMessageSize
	}
	if c.ClientTimeout <= 0 {
		c.ClientTimeout = DefaultClientTimeout
	}
	if c.MaxPollWait <= 0 {
		c.MaxPollWait = DefaultMaxPollWait
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Action is what an interceptor (see Broker.Intercept) does with a request.
type Action int

const (
	// Pass handles the request normally.
	Pass Action = iota
	// Drop reads the request and never answers it: the client times out.
	Drop
	// Fail answers SYSTEM_ERROR with remark "injected fault".
	Fail
	// Disconnect closes the connection the request came on, unanswered.
	Disconnect
	// HandleThenDisconnect handles the request (a send is stored) and
	// closes the connection instead of answering: the client cannot tell
	// whether it took effect.
	HandleThenDisconnect
	// FlushDiskTimeout, SlaveNotAvailable and FlushSlaveTimeout handle a
	// send normally (the message is stored) and answer with that status
	// instead of SUCCESS, as a RocketMQ broker with SYNC_FLUSH or a
	// SYNC_MASTER does when its flush or its replica is late.
	FlushDiskTimeout
	SlaveNotAvailable
	FlushSlaveTimeout
)

// statusOf is the response code an Action puts on a stored send.
var statusOf = map[Action]int16{FlushDiskTimeout: respFlushDiskTimeout, SlaveNotAvailable: respSlaveNotAvailable, FlushSlaveTimeout: respFlushSlaveTimeout}

// Interceptor sees every request before it is handled: its code (see the
// Code constants) and header fields, which it must not modify. It runs on
// the connection's goroutine, so an interceptor that blocks before
// returning Pass delays the request and every later one on that
// connection (an answer that comes late).
type Interceptor func(code int16, fields map[string]string) Action

// Broker is a running name server and broker. Its methods are safe for
// concurrent use.
type Broker struct {
	cfg       Config
	log       *slog.Logger
	nsLn      net.Listener
	brokerLn  net.Listener
	advertise string
	st        *store
	offsets   *offsets
	groups    *groups
	intercept atomic.Pointer[Interceptor]
	opaque    atomic.Int32 // of requests the broker sends
	// waiting counts pulls held by long polling.
	waiting atomic.Int64

	// done is closed when Close begins; everything waiting selects on it.
	done chan struct{}
	wg   sync.WaitGroup

	// mu guards closing and conns. A leaf lock.
	mu      sync.Mutex
	closing bool
	conns   map[*conn]struct{}

	closeOnce sync.Once
	closeErr  error

	// flushMu serializes flushState (janitor and Close) and guards
	// saved.
	flushMu sync.Mutex
	saved   stateFile // what DataDir's state file holds
}

// Start listens on the name server and broker addresses, replays
// Config.DataDir if set, and serves until Close.
func Start(cfg Config) (*Broker, error) {
	cfg = cfg.withDefaults()
	b := &Broker{
		cfg:     cfg,
		log:     cfg.Logger,
		offsets: newOffsets(),
		groups:  newGroups(),
		done:    make(chan struct{}),
		conns:   make(map[*conn]struct{}),
	}
	var err error
	if b.nsLn, err = net.Listen("tcp", cfg.NameServerAddr); err != nil {
		return nil, fmt.Errorf("rmqtest: name server listen: %w", err)
	}
	if b.brokerLn, err = net.Listen("tcp", cfg.BrokerAddr); err != nil {
		b.nsLn.Close()
		return nil, fmt.Errorf("rmqtest: broker listen: %w", err)
	}
	fail := func(err error) (*Broker, error) {
		b.nsLn.Close()
		b.brokerLn.Close()
		if b.st != nil {
			b.st.close()
		}
		return nil, fmt.Errorf("rmqtest: %w", err)
	}
	b.advertise, err = advertiseAddr(cfg.Advertise, b.brokerLn.Addr())
	if err != nil {
		return fail(err)
	}
	storeHost, err := resolveHostPort(b.advertise)
	if err != nil {
		return fail(fmt.Errorf("advertise %q: %w", b.advertise, err))
	}
	b.st = newStore(cfg, storeHost, b.log)
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return fail(err)
		}
		if err := b.st.open(cfg.DataDir); err != nil {
			return fail(err)
		}
		st, err := readState(cfg.DataDir)
		if err != nil {
			return fail(err)
		}
		b.offsets.load(st.Offsets)
		b.st.setCursors(st.ScheduleCursors)
		b.saved = st
	}
	b.goSafe(func() { b.acceptLoop(b.nsLn, roleNameServer) })
	b.goSafe(func() { b.acceptLoop(b.brokerLn, roleBroker) })
	b.goSafe(b.scheduleLoop)
	b.goSafe(b.janitorLoop)
	b.log.Debug("rmqtest started", "name_server", b.nsLn.Addr().String(), "broker", b.brokerLn.Addr().String(),
		"advertise", b.advertise, "data_dir", cfg.DataDir)
	return b, nil
}

// advertiseAddr is cfg's Advertise, or the listener address with an
// unspecified host replaced by 127.0.0.1.
func advertiseAddr(adv string, ln net.Addr) (string, error) {
	if adv != "" {
		if _, _, err := net.SplitHostPort(adv); err != nil {
			return "", fmt.Errorf("advertise %q: %w", adv, err)
		}
		return adv, nil
	}
	host, port, err := net.SplitHostPort(ln.String())
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// resolveHostPort turns "host:port" into the IPv4 store-host form; a host
// without an IPv4 address becomes 127.0.0.1.
func resolveHostPort(addr string) (hostPort, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return hostPort{}, err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return hostPort{}, fmt.Errorf("port %q: %w", port, err)
	}
	hp := hostPort{ip: [4]byte{127, 0, 0, 1}, port: int32(p)}
	ip := net.ParseIP(host)
	if ip == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ips, err := net.DefaultResolver.LookupIP(ctx, "ip4", host)
		cancel()
		if err == nil && len(ips) > 0 {
			ip = ips[0]
		}
	}
	if ip4 := ip.To4(); ip4 != nil && !ip4.IsUnspecified() {
		copy(hp.ip[:], ip4)
	}
	return hp, nil
}

// NameServer returns the name server's address ("host:port") for the
// client's name server list.
func (b *Broker) NameServer() string { return b.nsLn.Addr().String() }

// BrokerAddr returns the broker's listen address.
func (b *Broker) BrokerAddr() string { return b.brokerLn.Addr().String() }

// Advertise returns the broker address that routes give to clients.
func (b *Broker) Advertise() string { return b.advertise }

// Intercept installs fn to see every request before it is handled (fault
// injection); nil removes it. fn runs on connection goroutines and must be
// safe for concurrent use.
func (b *Broker) Intercept(fn Interceptor) {
	if fn == nil {
		b.intercept.Store(nil)
		return
	}
	b.intercept.Store(&fn)
}

// ConsumerOffset returns the offset committed for group on topic's queue,
// and whether there is one.
func (b *Broker) ConsumerOffset(group, topic string, queue int) (int64, bool) {
	return b.offsets.get(offsetKey{group, topic, int32(queue)})
}

// MaxOffset returns the number of messages in topic's queue.
func (b *Broker) MaxOffset(topic string, queue int) int64 {
	return b.st.maxOffset(topic, int32(queue))
}

// Queues returns the number of queues of topic (0 if it does not exist).
func (b *Broker) Queues(topic string) int { return b.st.queueCountOf(topic) }

// Committed is the sum of the offsets committed for group on topic's
// queues: how many messages the group consumed, when it acked every
// message it was given, in order.
func (b *Broker) Committed(group, topic string) int64 {
	var sum int64
	for q := range b.Queues(topic) {
		if off, ok := b.ConsumerOffset(group, topic, q); ok {
			sum += off
		}
	}
	return sum
}

// ConsumerIDs returns the client ids of the live members of group.
func (b *Broker) ConsumerIDs(group string) []string { return b.groups.clientIDs(group) }

// WaitingPulls returns the number of pulls being held by long polling
// right now. A client whose every pull loop is parked here has fetched
// everything and is idle; tests use it to close consumers at a quiet
// moment.
func (b *Broker) WaitingPulls() int { return int(b.waiting.Load()) }

// goSafe runs fn on a goroutine that Close waits for, unless Close has
// begun; it reports whether fn was started.
func (b *Broker) goSafe(fn func()) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closing {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		fn()
	}()
	return true
}

// Close stops listening, closes every connection (pending long polls end
// unanswered), waits for every goroutine, writes the offsets of DataDir
// and closes the commit log. It is idempotent; later calls return the
// first call's result.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closing = true
		conns := make([]*conn, 0, len(b.conns))
		for c := range b.conns {
			conns = append(conns, c)
		}
		b.mu.Unlock()
		close(b.done)
		errs := []error{ignoreClosed(b.nsLn.Close()), ignoreClosed(b.brokerLn.Close())}
		for _, c := range conns {
			c.close()
		}
		b.wg.Wait()
		errs = append(errs, b.flushState(), b.st.close())
		b.closeErr = errors.Join(errs...)
	})
	return b.closeErr
}

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

type role int

const (
	roleNameServer role = iota
	roleBroker
)

func (r role) String() string {
	if r == roleNameServer {
		return "namesrv"
	}
	return "broker"
}

func (b *Broker) acceptLoop(ln net.Listener, r role) {
	backoff := 5 * time.Millisecond
	for {
		nc, err := ln.Accept()
		if err != nil {
			select {
			case <-b.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				b.log.Warn("accept failed; retrying", "role", r, "error", err)
				select {
				case <-time.After(backoff):
				case <-b.done:
					return
				}
				backoff = min(2*backoff, time.Second)
				continue
			}
			b.log.Warn("accept failed; listener stopped", "role", r, "error", err)
			return
		}
		backoff = 5 * time.Millisecond
		c := b.newConn(nc, r)
		b.mu.Lock()
		if b.closing {
			b.mu.Unlock()
			nc.Close()
			return
		}
		b.conns[c] = struct{}{}
		b.wg.Add(1)
		b.mu.Unlock()
		go func() {
			defer b.wg.Done()
			c.serve()
		}()
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (b *Broker) removeConn(c *conn) {
	b.mu.Lock()
	delete(b.conns, c)
	b.mu.Unlock()
	if changed := b.groups.removeConn(c); len(changed) > 0 {
		b.notifyGroups(changed, nil)
	}
}

// conn is one client connection. Its serve goroutine owns reading; writes
// (responses, long-poll answers, notifications) take wmu.
type conn struct {
	b      *Broker
	nc     net.Conn
	role   role
	remote hostPort
	log    *slog.Logger
	// done is closed when the connection closes; long polls on it end.
	done      chan struct{}
	closeOnce sync.Once

	wmu sync.Mutex // guards writes to nc and wdead
	// wdead is set once a write failed: nc may hold part of a frame, so
	// nothing more is written on it.
	wdead bool
}

func (b *Broker) newConn(nc net.Conn, r role) *conn {
	c := &conn{b: b, nc: nc, role: r, done: make(chan struct{})}
	if ta, ok := nc.RemoteAddr().(*net.TCPAddr); ok {
		c.remote.port = int32(ta.Port)
		if ip4 := ta.IP.To4(); ip4 != nil {
			copy(c.remote.ip[:], ip4)
		} else if ta.IP.IsLoopback() {
			c.remote.ip = [4]byte{127, 0, 0, 1}
		}
	}
	c.log = b.log.With("role", r, "remote", nc.RemoteAddr().String())
	return c
}

func (c *conn) close() {
	c.closeOnce.Do(func() {
		close(c.done)
		c.nc.Close()
	})
}

// serve reads requests until the connection ends. A frame that cannot be
// decoded closes the connection (and only it).
func (c *conn) serve() {
	c.log.Debug("connection opened")
	defer func() {
		c.close()
		c.b.removeConn(c)
		c.log.Debug("connection closed")
	}()
	r := bufio.NewReaderSize(c.nc, 64<<10)
	for {
		if err := c.nc.SetReadDeadline(time.Now().Add(c.b.cfg.IdleTimeout)); err != nil {
			return
		}
		req, err := readFrame(r)
		if err != nil {
			switch {
			case errors.Is(err, errFrame):
				c.log.Debug("malformed frame; closing the connection", "error", err)
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
			default:
				c.log.Debug("read failed; closing the connection", "error", err)
			}
			return
		}
		if req.isResponse() {
			continue // answers to our notifications (clients send none)
		}
		status := respSuccess
		if fn := c.b.intercept.Load(); fn != nil {
			switch a := (*fn)(req.Code, req.Ext); a {
			case Drop:
				continue
			case Fail:
				c.respond(req, errorResponse(respSystemError, "injected fault"))
				continue
			case Disconnect:
				return
			case HandleThenDisconnect:
				c.b.handle(c, req)
				return
			case FlushDiskTimeout, SlaveNotAvailable, FlushSlaveTimeout:
				status = statusOf[a]
			}
		}
		if resp := c.b.handle(c, req); resp != nil {
			if resp.Code == respSuccess {
				resp.Code = status
			}
			c.respond(req, resp)
		}
	}
}

// respond sends resp as the answer to req, unless req is one-way.
func (c *conn) respond(req, resp *command) {
	if req.isOneway() {
		return
	}
	resp.Opaque = req.Opaque
	resp.Flag |= flagResponse
	resp.serialize = req.serialize
	c.write(resp)
}

// write sends cmd. After a failed write nothing more is written on the
// connection. A write that timed out (the client has not read for
// Config.WriteTimeout) closes the connection at once. Any other failure
// means the client is gone: the serve loop then ends at the connection's
// end, once it has served what the client sent before it went, one-way
// requests such as offset commits included, as a RocketMQ broker does.
func (c *conn) write(cmd *command) {
	if cmd.Language == "" {
		cmd.Language = "JAVA"
	}
	if cmd.Version == 0 {
		cmd.Version = brokerVersion
	}
	if cmd.Ext == nil {
		cmd.Ext = map[string]string{}
	}
	frame, err := encodeFrame(cmd)
	if err != nil {
		c.log.Warn("cannot encode a response; closing the connection", "code", cmd.Code, "error", err)
		c.close()
		return
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wdead {
		return
	}
	err = c.nc.SetWriteDeadline(time.Now().Add(c.b.cfg.WriteTimeout))
	if err == nil {
		_, err = c.nc.Write(frame)
	}
	if err == nil {
		return
	}
	c.wdead = true
	var ne net.Error
	timeout := errors.As(err, &ne) && ne.Timeout()
	select {
	case <-c.done:
	default:
		c.log.Debug("write failed; no more writes on the connection", "error", err, "closing", timeout)
	}
	if timeout {
		c.close()
	}
}

func errorResponse(code int16, remark string) *command {
	return &command{Code: code, Remark: remark}
}

func okResponse(ext map[string]string, body []byte) *command {
	return &command{Code: respSuccess, Ext: ext, Body: body}
}

// handle dispatches req by the connection's role. A nil result means the
// answer comes later (long poll) or never (one-way).
func (b *Broker) handle(c *conn, req *command) *command {
	if c.role == roleNameServer {
		switch req.Code {
		case CodeGetRouteInfoByTopic:
			return b.handleRoute(req)
		case CodeGetBrokerClusterInfo:
			return b.handleClusterInfo()
		case CodeGetKVConfig:
			return errorResponse(respQueryNotFound, fmt.Sprintf("No config item, Namespace: %s Key: %s",
				req.Ext["namespace"], req.Ext["key"]))
		case CodeGetAllTopicList:
			return b.handleAllTopics()
		}
	} else {
		switch req.Code {
		case CodeSendMessage, CodeSendMessageV2, CodeSendBatchMessage:
			return b.handleSend(c, req)
		case CodePullMessage:
			return b.handlePull(c, req)
		case CodeQueryConsumerOffset:
			return b.handleQueryOffset(req)
		case CodeUpdateConsumerOffset:
			return b.handleUpdateOffset(req)
		case CodeGetMaxOffset:
			return b.handleMaxOffset(req)
		case CodeGetMinOffset:
			return okResponse(map[string]string{"offset": "0"}, nil)
		case CodeSearchOffsetByTimestamp:
			return b.handleSearchOffset(req)
		case CodeHeartbeat:
			return b.handleHeartbeat(c, req)
		case CodeUnregisterClient:
			return b.handleUnregister(req)
		case CodeGetConsumerListByGroup:
			return b.handleConsumerList(req)
		case CodeConsumerSendMsgBack:
			return b.handleSendBack(req)
		}
	}
	c.log.Debug("request code not supported", "code", req.Code)
	return errorResponse(respRequestCodeNotSupported, fmt.Sprintf("request type %d not supported", req.Code))
}

// notifyGroups sends NOTIFY_CONSUMER_IDS_CHANGED to every member of each
// group (one-way) except the connection skip; their clients rebalance at
// once instead of within 20 s. (RocketMQ also notifies the member whose
// heartbeat caused the change; that client rebalances on its own right
// after its first heartbeat, so the broker skips it.)
func (b *Broker) notifyGroups(names []string, skip *conn) {
	for _, name := range names {
		for _, c := range b.groups.conns(name) {
			if c == skip {
				continue
			}
			c.write(&command{
				Code:   CodeNotifyConsumerIDsChange,
				Opaque: b.opaque.Add(1),
				Flag:   flagOneway,
				Ext:    map[string]string{"consumerGroup": name},
			})
		}
	}
}

// scheduleLoop moves delayed messages to their topics when due.
func (b *Broker) scheduleLoop() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		wait := b.st.moveDue()
		if wait <= 0 {
			wait = time.Hour
		}
		t.Reset(wait)
		select {
		case <-t.C:
		case <-b.st.schedWake:
		case <-b.done:
			return
		}
	}
}

// janitorLoop expires silent consumers and writes changed offsets to the
// data directory.
func (b *Broker) janitorLoop() {
	tick := time.NewTicker(min(flushInterval, b.cfg.ClientTimeout/4))
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-b.done:
			return
		}
		if changed := b.groups.expire(time.Now().Add(-b.cfg.ClientTimeout)); len(changed) > 0 {
			b.log.Debug("consumers expired", "groups", changed)
			b.notifyGroups(changed, nil)
		}
		if err := b.flushState(); err != nil {
			b.log.Warn("cannot write offsets", "error", err)
		}
	}
}

// flushState writes offsets and delay cursors to DataDir if they changed.
func (b *Broker) flushState() error {
	if b.cfg.DataDir == "" {
		return nil
	}
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	offs, oc := b.offsets.snapshot()
	cur, cc := b.st.snapshotCursors()
	if !oc && !cc {
		return nil
	}
	st := b.saved
	if oc {
		st.Offsets = offs
	}
	if cc {
		st.ScheduleCursors = cur
	}
	if err := writeState(b.cfg.DataDir, st); err != nil {
		// Try again at the next flush.
		if oc {
			b.offsets.markDirty()
		}
		if cc {
			b.st.markCursorsDirty()
		}
		return err
	}
	b.saved = st
	return nil
}
