package msgmesh_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
)

// TestBadInputIsTypedAndContained: every kind of bad input gets a typed
// error, and a bystander connection keeps publishing and consuming
// throughout.
func TestBadInputIsTypedAndContained(t *testing.T) {
	e := newEnv(t, func(c *msgmesh.Config) { c.MaxMessageSize = 1024 })
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})

	// The bystander: one client publishing and consuming the whole time.
	by := e.dial()
	got := sidecartest.NewTally()
	if _, err := by.Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
		got.Add("bystander", string(d.Body))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	round := 0
	bystanderWorks := func() {
		t.Helper()
		round++
		prefix := "round" + string(rune('a'+round))
		sidecartest.PublishN(t, by, topic, prefix, 10, 10)
		sidecartest.WaitFor(t, 10*time.Second, "the bystander's messages", func() bool {
			return got.Times(prefix+"-9") > 0
		})
	}
	bystanderWorks()

	t.Run("unregistered group", func(t *testing.T) {
		c := e.dial()
		_, err := c.Subscribe(context.Background(), "nobody", topic, func(context.Context, *client.Delivery) error { return nil })
		if client.CodeOf(err) != mesh.CodeNotRegistered || !errors.Is(err, &client.Error{Code: mesh.CodeNotRegistered}) {
			t.Fatalf("subscribe to an unregistered group: %v, want NOT_REGISTERED", err)
		}
		// The refused declaration leaves the connection usable.
		if _, err := c.Publish(context.Background(), &client.Message{Topic: topic, Body: []byte("still-ok")}); err != nil {
			t.Fatalf("publish after a refused declaration: %v", err)
		}
	})
	t.Run("unregistered topic", func(t *testing.T) {
		_, err := e.dial().Publish(context.Background(), &client.Message{Topic: "no.such.topic", Body: []byte("x")})
		if client.CodeOf(err) != mesh.CodeNotRegistered {
			t.Fatalf("publish to an unregistered topic: %v, want NOT_REGISTERED", err)
		}
	})
	t.Run("message too big", func(t *testing.T) {
		_, err := e.dial().Publish(context.Background(), &client.Message{Topic: topic, Body: make([]byte, 1025)})
		if client.CodeOf(err) != mesh.CodeMessageTooBig {
			t.Fatalf("publish over the size limit: %v, want MESSAGE_TOO_BIG", err)
		}
	})
	t.Run("request before HELLO", func(t *testing.T) {
		raw := dialRaw(t, e.addr)
		wantError(t, raw.request(mesh.KindPublish, &mesh.Publish{Topic: topic}), mesh.CodeInvalid)
		raw.hello()
		// A kind apps never send is refused, and the connection goes on.
		wantError(t, raw.request(mesh.KindDeliver, &mesh.Message{Topic: topic}), mesh.CodeUnsupported)
		if f := raw.request(mesh.KindHeartbeat, nil); f.Kind != mesh.KindHeartbeat {
			t.Fatalf("heartbeat answered %s", f.Kind)
		}
	})
	t.Run("malformed payload", func(t *testing.T) {
		raw := dialRaw(t, e.addr)
		raw.hello()
		raw.ids++
		b, _ := mesh.AppendFrame(nil, 0, mesh.KindPublish, 0, raw.ids, rawBytes{0xff, 0xff, 0xff})
		raw.write(b)
		wantError(t, raw.read(), mesh.CodeBadFrame)
		// Framing was intact, so the connection goes on.
		if f := raw.request(mesh.KindHeartbeat, nil); f.Kind != mesh.KindHeartbeat {
			t.Fatalf("heartbeat after a bad payload answered %s", f.Kind)
		}
	})
	t.Run("bad header", func(t *testing.T) {
		raw := dialRaw(t, e.addr)
		b, _ := mesh.AppendFrame(nil, 0, mesh.KindHeartbeat, 0, 7, nil)
		b[4] = 99 // protocol version
		raw.write(b)
		e := wantError(t, raw.read(), mesh.CodeUnsupported)
		if !strings.Contains(e.Message, "version") {
			t.Errorf("error message %q does not say what is wrong", e.Message)
		}
		wantClosed(t, raw)
	})
	t.Run("frame over the limit", func(t *testing.T) {
		raw := dialRaw(t, e.addr)
		raw.hello()
		// A valid header claiming 64 MiB: refused at once, before the
		// payload arrives and without storing it; the payload is then
		// read and dropped, and the connection goes on.
		const size = 64 << 20
		raw.write(frameHeader(mesh.KindPublish, 99, size-mesh.HeaderSize))
		wantError(t, raw.read(), mesh.CodeFrameTooLarge)
		chunk := make([]byte, 1<<20)
		for n := 0; n < size-mesh.HeaderSize; n += len(chunk) {
			raw.write(chunk[:min(len(chunk), size-mesh.HeaderSize-n)])
		}
		if f := raw.request(mesh.KindHeartbeat, nil); f.Kind != mesh.KindHeartbeat {
			t.Fatalf("heartbeat after an oversized frame answered %s", f.Kind)
		}
	})
	t.Run("frame over the limit with a bad header", func(t *testing.T) {
		raw := dialRaw(t, e.addr)
		var hdr [mesh.HeaderSize]byte
		binary.BigEndian.PutUint32(hdr[:], 1<<30) // claims 1 GiB; kind 0
		hdr[4] = mesh.Version
		raw.write(hdr[:])
		wantError(t, raw.read(), mesh.CodeBadFrame)
		wantClosed(t, raw)
	})
	t.Run("garbage bytes", func(t *testing.T) {
		raw := dialRaw(t, e.addr)
		raw.write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		f, err := raw.rd.ReadFrame()
		if err == nil && f.Kind != mesh.KindError {
			t.Fatalf("garbage answered with %s", f.Kind)
		}
		wantClosed(t, raw)
	})
	t.Run("bad registration bodies", func(t *testing.T) {
		for name, body := range map[string]string{
			"syntax":        `{"app": "x",`,
			"unknown field": `{"app":"x","consume":[{"group":"g","topic":"t"}],"color":"red"}`,
			"bad topic":     `{"app":"x","consume":[{"group":"g","topic":"a..b"}]}`,
			"no bindings":   `{"app":"x"}`,
			"empty":         ``,
		} {
			status, resp := sidecartest.HTTPDo(t, http.MethodPost, "http://"+e.http+"/v1/registrations", "application/json", []byte(body))
			var eb struct{ Error, Message string }
			if status != http.StatusBadRequest || json.Unmarshal([]byte(resp), &eb) != nil || eb.Error != "INVALID" || eb.Message == "" {
				t.Errorf("%s: HTTP %d %s; want 400 with an INVALID error and a message", name, status, resp)
			}
		}
	})
	t.Run("http publish errors", func(t *testing.T) {
		status, resp := sidecartest.HTTPDo(t, http.MethodPost, "http://"+e.http+"/v1/publish/no.such.topic", "", []byte("x"))
		if status != http.StatusNotFound || !strings.Contains(resp, "NOT_REGISTERED") {
			t.Errorf("HTTP publish to an unregistered topic: %d %s", status, resp)
		}
		status, resp = sidecartest.HTTPDo(t, http.MethodPost, "http://"+e.http+"/v1/publish/"+topic, "", make([]byte, 2048))
		if status != http.StatusRequestEntityTooLarge {
			t.Errorf("HTTP publish over the size limit: %d %s", status, resp)
		}
		status, resp = sidecartest.HTTPDo(t, http.MethodPost, "http://"+e.http+"/v1/publish/"+topic+"?key=k1", "", []byte("via-http"))
		if status != http.StatusOK || !strings.Contains(resp, `"offset"`) {
			t.Errorf("HTTP publish: %d %s", status, resp)
		}
	})
	bystanderWorks()
	if status, _ := sidecartest.HTTPDo(t, http.MethodGet, "http://"+e.http+"/healthz", "", nil); status != http.StatusOK {
		t.Fatalf("healthz after bad input: %d", status)
	}
}

// rawBytes is a payload of arbitrary bytes.
type rawBytes []byte

func (r rawBytes) AppendTo(b []byte) []byte { return append(b, r...) }

// wantClosed fails unless the sidecar closes the connection.
func wantClosed(t *testing.T, raw *rawConn) {
	t.Helper()
	_ = raw.c.SetReadDeadline(time.Now().Add(sidecartest.Scaled(5 * time.Second)))
	for {
		if _, err := raw.rd.ReadFrame(); err != nil {
			var ne interface{ Timeout() bool }
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("connection still open after a framing error")
			}
			return
		}
	}
}
