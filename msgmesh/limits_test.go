package msgmesh_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/broker/kafkabroker/kafkatest"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/rmqtest"
	"github.com/msgmesh/msgmesh/internal/rmqtest/testbroker"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/internal/syncbuf"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/topology"
)

// bigFrame encodes a PUBLISH whose frame may exceed every default limit.
func bigFrame(t testing.TB, id uint64, p *mesh.Publish) []byte {
	t.Helper()
	b, err := mesh.AppendFrame(nil, 64<<20, mesh.KindPublish, 0, id, p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOversizedPublishKeepsConnection: on one connection, publishes are
// pipelined with two oversized ones among them: a 1.2 MB body (within the
// 4 MiB frame limit, over the 1 MiB message limit) and a 5 MiB frame (over
// the frame limit). Each oversized one gets its own typed answer
// (MESSAGE_TOO_BIG, FRAME_TOO_LARGE); every other publish gets its
// PUBLISH_ACK, and the connection stays up, on every broker.
func TestOversizedPublishKeepsConnection(t *testing.T) {
	for _, kit := range sidecartest.BrokerKits() {
		t.Run(kit.Name, func(t *testing.T) {
			e := newEnvOn(t, kit.Start(t))
			e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
			raw := dialRaw(t, e.addr)
			raw.hello()

			const n = 40
			want := map[uint64]mesh.Code{}
			var stream bytes.Buffer
			for id := uint64(1); id <= n; id++ {
				p := &mesh.Publish{Topic: topic, Body: fmt.Appendf(nil, "m-%d", id)}
				switch id {
				case 10:
					p.Body = bytes.Repeat([]byte("a"), 1200_000)
					want[id] = mesh.CodeMessageTooBig
				case 20:
					p.Body = bytes.Repeat([]byte("b"), 5<<20)
					want[id] = mesh.CodeFrameTooLarge
				}
				stream.Write(bigFrame(t, id, p))
			}
			werr := make(chan error, 1)
			go func() { _, err := raw.c.Write(stream.Bytes()); werr <- err }()

			acks := 0
			for seen := 0; seen < n; seen++ {
				f := raw.read()
				if !f.IsResponse() || f.ID < 1 || f.ID > n {
					t.Fatalf("unexpected frame %s #%d", f.Kind, f.ID)
				}
				if code, bad := want[f.ID]; bad {
					wantError(t, f, code)
					continue
				}
				if f.Kind != mesh.KindPublishAck {
					var e mesh.Error
					_ = e.Decode(f.Payload)
					t.Fatalf("publish #%d answered %s %v, want PUBLISH_ACK", f.ID, f.Kind, e)
				}
				acks++
			}
			if err := <-werr; err != nil {
				t.Fatalf("writing the pipelined publishes: %v", err)
			}
			if acks != n-len(want) {
				t.Fatalf("%d publishes acked, want %d", acks, n-len(want))
			}
			if f := raw.request(mesh.KindHeartbeat, nil); f.Kind != mesh.KindHeartbeat {
				t.Fatalf("heartbeat after the oversized publishes answered %s", f.Kind)
			}
		})
	}
}

// TestDocumentedMaximumNeverBrokerError: a body of the documented maximum
// (1 MiB) with a header is either stored or refused by the sidecar as
// MESSAGE_TOO_BIG (413), never passed on to fail at the broker
// (BROKER_ERROR, UNAVAILABLE), on every broker and both publish paths.
func TestDocumentedMaximumNeverBrokerError(t *testing.T) {
	for _, kit := range sidecartest.BrokerKits() {
		t.Run(kit.Name, func(t *testing.T) {
			e := newEnvOn(t, kit.Start(t))
			e.register("orders", []string{"p1:" + topic}, nil)
			body := bytes.Repeat([]byte("x"), 1<<20)
			hs := []mesh.HeaderField{{Key: "X-A", Value: strings.Repeat("h", 100)}}
			ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(30*time.Second))
			defer cancel()
			_, err := e.dial().Publish(ctx, &client.Message{Topic: topic, Key: "k", Headers: hs, Body: body})
			if err != nil && client.CodeOf(err) != mesh.CodeMessageTooBig {
				t.Errorf("1 MiB body and a header over mesh: %v, want success or MESSAGE_TOO_BIG", err)
			}
			status, code := httpPublish(t, e.http, topic, "k", string(body), http.Header{"Msgmesh-Header-X-A": {hs[0].Value}})
			if status != http.StatusOK && (status != http.StatusRequestEntityTooLarge || code != "MESSAGE_TOO_BIG") {
				t.Errorf("1 MiB body and a header over HTTP: %d %s, want 200 or 413 MESSAGE_TOO_BIG", status, code)
			}
		})
	}
}

// frameHeader is a frame header claiming a payload of n bytes.
func frameHeader(kind mesh.Kind, id uint64, n int) []byte {
	var h [mesh.HeaderSize]byte
	binary.BigEndian.PutUint32(h[:], uint32(mesh.HeaderSize-4+n))
	h[4], h[5] = mesh.Version, byte(kind)
	binary.BigEndian.PutUint64(h[8:], id)
	return h[:]
}

// worstHeaders returns a key and headers that take exactly n bytes as
// broker.HeaderBytes counts them, shaped to cost each broker the most: a
// key NATS must carry base64 (leading space), many short headers (per
// header overhead) and a long one (Kafka's longer varints).
func worstHeaders(t testing.TB, n int) (string, []mesh.HeaderField) {
	t.Helper()
	key := " " + strings.Repeat("k", 999)
	var hs []mesh.HeaderField
	used := len(key)
	for i := 0; i < 100; i++ {
		h := mesh.HeaderField{Key: fmt.Sprintf("X-H%03d", i), Value: "v"}
		hs = append(hs, h)
		used += len(h.Key) + len(h.Value) + 4
	}
	name := "X-Long-" + strings.Repeat("n", 70)
	rest := n - used - len(name) - 4
	if rest < 64 {
		t.Fatalf("worstHeaders(%d): too small", n)
	}
	hs = append(hs, mesh.HeaderField{Key: name, Value: strings.Repeat("v", rest)})
	return key, hs
}

// randomBody is n incompressible bytes (RocketMQ's client compresses
// bodies over 4 KiB; these do not shrink).
func randomBody(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewChaCha8([32]byte{1}))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// atLimit publishes, over mesh and HTTP, a body of exactly limit bytes to
// topic (registered, consumed by g1) with key and headers of exactly
// maxHeader bytes, and checks that both are stored and delivered intact,
// and that one byte more of body, or of headers, is refused by the sidecar
// with MESSAGE_TOO_BIG.
func atLimit(t *testing.T, meshAddr, httpAddr string, limit, maxHeader int) {
	t.Helper()
	if limit <= 0 {
		t.Fatalf("body limit %d", limit)
	}
	got := make(chan *client.Delivery, 4)
	if _, err := sidecartest.Dial(t, meshAddr).Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
		got <- d
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	pub := sidecartest.Dial(t, meshAddr)
	ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(30*time.Second))
	defer cancel()
	key, hs := worstHeaders(t, maxHeader)
	body := randomBody(limit)
	if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Key: key, Headers: hs, Body: body}); err != nil {
		t.Fatalf("publish a body of exactly the limit (%d bytes) with %d bytes of key and headers: %v", limit, maxHeader, err)
	}
	select {
	case d := <-got:
		if !bytes.Equal(d.Body, body) || d.Key != key || len(d.Headers) != len(hs) {
			t.Fatalf("the message at the limit arrived changed: body %d bytes (equal %v), key %d bytes, %d headers",
				len(d.Body), bytes.Equal(d.Body, body), len(d.Key), len(d.Headers))
		}
	case <-ctx.Done():
		t.Fatal("the message at the limit was not delivered")
	}

	over := append(body, 'x')
	if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Key: key, Headers: hs, Body: over}); client.CodeOf(err) != mesh.CodeMessageTooBig {
		t.Fatalf("a body one byte over the limit: %v, want MESSAGE_TOO_BIG", err)
	}
	moreHeaders := append(slicesClone(hs), mesh.HeaderField{Key: "X", Value: ""})
	if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Key: key, Headers: moreHeaders, Body: body}); client.CodeOf(err) != mesh.CodeMessageTooBig {
		t.Fatalf("key and headers over MaxHeaderBytes: %v, want MESSAGE_TOO_BIG", err)
	}

	// HTTP: the same body with an ordinary key and header.
	h := http.Header{"Msgmesh-Header-X-Long": {strings.Repeat("v", maxHeader-len("X-Long")-4-1)}}
	if status, code := httpPublish(t, httpAddr, topic, "k", string(body), h); status != http.StatusOK {
		t.Fatalf("HTTP publish of a body at the limit: %d %s", status, code)
	}
	select {
	case d := <-got:
		if !bytes.Equal(d.Body, body) {
			t.Fatalf("the HTTP message at the limit arrived changed (%d bytes)", len(d.Body))
		}
	case <-ctx.Done():
		t.Fatal("the HTTP message at the limit was not delivered")
	}
	if status, code := httpPublish(t, httpAddr, topic, "k", string(over), h); status != http.StatusRequestEntityTooLarge || code != "MESSAGE_TOO_BIG" {
		t.Fatalf("HTTP publish one byte over the limit: %d %s, want 413 MESSAGE_TOO_BIG", status, code)
	}
}

func slicesClone(hs []mesh.HeaderField) []mesh.HeaderField {
	return append([]mesh.HeaderField(nil), hs...)
}

// TestMessageAtLimit: with the default limits, on each broker as it comes
// (an external NATS or Kafka takes 1 MiB with headers, so the sidecar
// lowers its body limit a little there; RocketMQ takes 4 MiB), a body of
// exactly the limit in force with the most key and headers allowed is
// stored and delivered intact; one byte more is MESSAGE_TOO_BIG.
func TestMessageAtLimit(t *testing.T) {
	for _, kit := range sidecartest.BrokerKits() {
		t.Run(kit.Name, func(t *testing.T) {
			e := newEnvOn(t, kit.Start(t))
			e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
			t.Logf("body limit in force: %d bytes", e.sc.MaxBody(topic))
			atLimit(t, e.addr, e.http, e.sc.MaxBody(topic), msgmesh.DefaultMaxHeaderBytes)
			if got := e.sc.MaxBody(topic); got > msgmesh.DefaultMaxMessageSize || got < msgmesh.DefaultMaxMessageSize-32<<10 {
				t.Errorf("MaxBody = %d; want at most the default %d, and lowered by no more than the header room", got, msgmesh.DefaultMaxMessageSize)
			}
		})
	}
}

// smallKits start each broker with a 64 KiB message limit.
var smallKits = []sidecartest.BrokerKit{
	{Name: "nats", Start: func(t *testing.T) topology.Cluster {
		emb, err := natsbroker.StartEmbedded(natsbroker.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", MaxPayload: 64 << 10})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(emb.Shutdown)
		return topology.Cluster{Name: "nats", Kind: topology.KindNATS, Endpoints: []string{emb.ClientURL()}}
	}},
	{Name: "kafka", Start: func(t *testing.T) topology.Cluster {
		c := kafkatest.Start(t, kfake.BrokerConfigs(map[string]string{"message.max.bytes": "65536"}))
		return topology.Cluster{Name: "kafka", Kind: topology.KindKafka, Endpoints: kafkatest.Addrs(c)}
	}},
	{Name: "rocketmq", Start: func(t *testing.T) topology.Cluster {
		b := testbroker.Start(t, rmqtest.Config{MaxMessageSize: 64 << 10})
		return topology.Cluster{Name: "rocketmq", Kind: topology.KindRocketMQ, Endpoints: []string{b.NameServer()},
			Options: map[string]string{"max_message_size": "65536"}}
	}},
}

// TestSmallBrokerLimit: a broker that takes smaller messages than the
// sidecar's MaxMessageSize (64 KiB against 1 MiB) lowers the sidecar's
// body limit for its topics, with a warning at start; the sidecar then
// refuses what the broker would, with MESSAGE_TOO_BIG, and a body at the
// lowered limit with the most headers is stored. A MaxHeaderBytes that
// the broker cannot carry at all stops the sidecar from starting.
func TestSmallBrokerLimit(t *testing.T) {
	for _, kit := range smallKits {
		t.Run(kit.Name, func(t *testing.T) {
			c := kit.Start(t)
			logs := &syncbuf.Buffer{}
			log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
			e := newEnvOn(t, c, func(cfg *msgmesh.Config) { cfg.Logger = log })
			e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
			limit := e.sc.MaxBody(topic)
			if limit >= 64<<10 || limit < 32<<10 {
				t.Fatalf("MaxBody = %d, want below the broker's 64 KiB and not absurdly low", limit)
			}
			if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, fmt.Sprintf("max_body=%d", limit)) {
				t.Errorf("no warning naming the lowered limit %d in the log:\n%s", limit, l)
			}
			ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(30*time.Second))
			defer cancel()
			_, err := e.dial().Publish(ctx, &client.Message{Topic: topic, Body: make([]byte, 1<<20)})
			if client.CodeOf(err) != mesh.CodeMessageTooBig || !strings.Contains(err.Error(), "takes no larger body") {
				t.Fatalf("a 1 MiB body: %v, want MESSAGE_TOO_BIG saying the cluster's limit", err)
			}
			atLimit(t, e.addr, e.http, limit, msgmesh.DefaultMaxHeaderBytes)

			b, err := brokers.Open(context.Background(), c, sidecartest.Logger())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })
			_, err = msgmesh.New(msgmesh.Config{DataDir: t.TempDir(), Broker: b, Logger: sidecartest.Logger(), MaxHeaderBytes: 64 << 10})
			if err == nil || !strings.Contains(err.Error(), "MaxHeaderBytes") {
				t.Fatalf("New with 64 KiB of headers on a broker that cannot take them: %v, want a refusal naming MaxHeaderBytes", err)
			}
		})
	}
}

// TestSDKOversizedPublish: through the SDK (with a frame limit above the
// sidecar's), a publish over the sidecar's frame limit fails with
// FRAME_TOO_LARGE and one over the message limit with MESSAGE_TOO_BIG; the
// connection stays, and the next publish on it is acked.
func TestSDKOversizedPublish(t *testing.T) {
	e := newEnv(t)
	e.register("orders", []string{"p1:" + topic}, nil)
	var dials sidecartest.CountingDialer
	c := e.dial(client.WithMaxFrameSize(16<<20), client.WithDialer(dials.Dial))
	ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(30*time.Second))
	defer cancel()
	_, err := c.Publish(ctx, &client.Message{Topic: topic, Body: make([]byte, 5<<20)})
	if !errors.Is(err, &client.Error{Code: mesh.CodeFrameTooLarge}) {
		t.Fatalf("a 5 MiB publish: %v, want FRAME_TOO_LARGE", err)
	}
	_, err = c.Publish(ctx, &client.Message{Topic: topic, Body: make([]byte, 1_200_000)})
	if !errors.Is(err, &client.Error{Code: mesh.CodeMessageTooBig}) {
		t.Fatalf("a 1.2 MB publish: %v, want MESSAGE_TOO_BIG", err)
	}
	if _, err := c.Publish(ctx, &client.Message{Topic: topic, Body: []byte("after")}); err != nil {
		t.Fatalf("publish after the oversized ones: %v", err)
	}
	if n := dials.Count(); n != 1 {
		t.Fatalf("the client dialled %d times; an oversized publish broke the connection", n)
	}
}

// TestHandoffDuringSkip: a hot upgrade that takes a connection while the
// sidecar is skipping an oversized frame hands the rest of the skip to
// the successor, which drops the rest of that frame and serves the next
// one on the same connection.
func TestHandoffDuringSkip(t *testing.T) {
	c := sidecartest.NATSCluster(t)
	dataDir := t.TempDir()
	start := func(inherit *msgmesh.HandoffState) *msgmesh.Sidecar { return startOn(t, c, dataDir, inherit) }
	sc := start(nil)
	if status, body := sidecartest.Register(t, sc.HTTPAddr().String(), "orders", []string{"p1:" + topic}, nil); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	raw := dialRaw(t, sc.Addr().String())
	raw.hello()
	const payload = 8 << 20
	raw.write(frameHeader(mesh.KindPublish, 50, payload))
	raw.write(make([]byte, 1<<20)) // an eighth of it before the upgrade
	wantError(t, raw.read(), mesh.CodeFrameTooLarge)

	ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(30*time.Second))
	defer cancel()
	st, err := sc.Handoff(ctx)
	if err != nil {
		t.Fatalf("handoff: %v", err)
	}
	if len(st.Conns) != 1 {
		t.Fatalf("handoff carried %d connections, want 1", len(st.Conns))
	}
	// At least the part not sent yet is left to skip.
	if cs := st.Conns[0]; cs.Skip < payload-1<<20 || len(cs.Buffered) > 0 {
		t.Fatalf("the handed-over connection skips %d more bytes and carries %d buffered; want at least %d to skip",
			cs.Skip, len(cs.Buffered), payload-1<<20)
	}
	start(st)
	raw.write(make([]byte, payload-1<<20))
	f := raw.request(mesh.KindPublish, &mesh.Publish{Topic: topic, Body: []byte("after the upgrade")})
	if f.Kind != mesh.KindPublishAck {
		t.Fatalf("publish after the upgrade answered %s", f.Kind)
	}
}

// TestBinaryEmbeddedTakesDocumentedMaximum: the msgmesh binary with no
// configuration sizes its embedded NATS server to its own limits, so a
// body of the documented maximum (1 MiB) with the most key and headers
// (8 KiB) is stored and delivered, and nothing is lowered (no warning).
func TestBinaryEmbeddedTakesDocumentedMaximum(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the msgmesh binary")
	}
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	meshAddr, httpAddr := freePort(t), freePort(t)
	p := sidecartest.StartProc(t, bin, "--data-dir", t.TempDir(), "--listen", meshAddr, "--http", httpAddr, "--log-level", "warn")
	sidecartest.WaitHealthy(t, p, httpAddr)
	if status, body := sidecartest.Register(t, httpAddr, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	atLimit(t, meshAddr, httpAddr, msgmesh.DefaultMaxMessageSize, msgmesh.DefaultMaxHeaderBytes)
	logs := p.Output()
	if strings.Contains(logs, "max_body") {
		t.Fatalf("the sidecar lowered its limit for its own embedded broker:\n%s", logs)
	}
}
