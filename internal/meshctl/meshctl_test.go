package meshctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
)

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code = Main(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestHelp(t *testing.T) {
	code, out, _ := run(t, "help")
	if code != 0 {
		t.Fatalf("help exit %d", code)
	}
	for _, want := range []string{"meshctl register", "meshctl deregister", "meshctl registrations", "meshctl pub", "meshctl sub", "meshctl bench", "-consume", "-window", "-timeout"} {
		if !strings.Contains(out, want) {
			t.Errorf("help does not mention %q:\n%s", want, out)
		}
	}
	if code, out, _ := run(t, "help", "pub"); code != 0 || !strings.Contains(out, "-window") || strings.Contains(out, "-consume") {
		t.Fatalf("help pub: exit %d\n%s", code, out)
	}
	if code, _, _ := run(t); code != 2 {
		t.Fatalf("no command: exit %d, want 2", code)
	}
	if code, _, errs := run(t, "frobnicate"); code != 2 || !strings.Contains(errs, "unknown command") {
		t.Fatalf("unknown command: exit %d, %q", code, errs)
	}
	if code, _, _ := run(t, "pub", "--nope"); code != 2 {
		t.Fatalf("unknown flag: exit %d, want 2", code)
	}
	if code, _, errs := run(t, "pub"); code != 2 || !strings.Contains(errs, "--app is required") {
		t.Fatalf("missing --app: exit %d, %q", code, errs)
	}
	if code, _, errs := run(t, "sub", "--topic", "t", "--group", "g"); code != 2 || !strings.Contains(errs, "--app is required") {
		t.Fatalf("sub without --app: exit %d, %q", code, errs)
	}
	if code, _, errs := run(t, "pub", "--app", "a"); code != 2 || !strings.Contains(errs, "--topic is required") {
		t.Fatalf("missing flag: exit %d, %q", code, errs)
	}
	if code, _, errs := run(t, "register", "--app", "a", "--consume", "nocolon"); code != 2 || !strings.Contains(errs, "group:topic") {
		t.Fatalf("bad binding: exit %d, %q", code, errs)
	}
	if code, _, errs := run(t, "register", "--app", "a", "--consume", "g:t,max_attempts=0x"); code != 2 || !strings.Contains(errs, "max_attempts") {
		t.Fatalf("bad dead-letter option: exit %d, %q", code, errs)
	}
	if code, _, errs := run(t, "register", "--app", "a", "--produce", "g:t,max_attempts=3"); code != 2 {
		t.Fatalf("dead-letter option on --produce: exit %d, %q", code, errs)
	}
}

func TestRegistrations(t *testing.T) {
	type call struct {
		method, path string
		body         []byte
		auth         string
	}
	var mu sync.Mutex
	var calls []call
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		calls = append(calls, call{r.Method, r.URL.Path, body, r.Header.Get("Authorization")})
		mu.Unlock()
		switch {
		case r.Method == http.MethodPost:
			var reg registry.Registration
			if err := json.Unmarshal(body, &reg); err != nil || reg.App == "bad" {
				w.WriteHeader(http.StatusBadRequest)
				io.WriteString(w, `{"error":"INVALID","message":"registry: consume[0].topic: \"\" is empty"}`)
				return
			}
			w.WriteHeader(http.StatusCreated)
			json.NewEncoder(w).Encode(reg)
		case r.Method == http.MethodDelete && r.URL.Path == "/v1/registrations/orders":
			w.WriteHeader(http.StatusNoContent)
		case r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":"NOT_FOUND","message":"no registration for app \"ghost\""}`)
		case r.Method == http.MethodGet:
			io.WriteString(w, `[{"app":"orders"}]`)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")

	code, out, errs := run(t, "register", "--app", "orders", "--consume", "g1:orders.created",
		"--consume", "g2:payments,max_attempts=5,dead_letter_topic=payments.poison,broker_group=com.example.payments", "--produce", "p1:orders.created", "--http", addr)
	if code != 0 {
		t.Fatalf("register: exit %d: %s", code, errs)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil || got["app"] != "orders" {
		t.Fatalf("register printed %q (%v)", out, err)
	}
	mu.Lock()
	c := calls[0]
	mu.Unlock()
	var sent map[string]any
	if err := json.Unmarshal(c.body, &sent); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"app":     "orders",
		"produce": []any{map[string]any{"group": "p1", "topic": "orders.created"}},
		"consume": []any{map[string]any{"group": "g1", "topic": "orders.created"},
			map[string]any{"group": "g2", "topic": "payments", "max_attempts": float64(5), "dead_letter_topic": "payments.poison", "broker_group": "com.example.payments"}},
	}
	if c.method != http.MethodPost || c.path != "/v1/registrations" || !jsonEqual(sent, want) || c.auth != "" {
		t.Fatalf("register sent %s %s %s (Authorization %q)", c.method, c.path, c.body, c.auth)
	}

	// The app's secret goes in Authorization, from --secret-file or the
	// environment, never from a flag value.
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte("from-the-file-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(secretEnv, "from-the-env-0123456789")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"register", "--app", "orders", "--produce", "p:t", "--http", addr}, "Bearer from-the-env-0123456789"},
		{[]string{"register", "--app", "orders", "--produce", "p:t", "--http", addr, "--secret-file", secretFile}, "Bearer from-the-file-0123456789"},
		{[]string{"deregister", "--app", "orders", "--http", addr, "--secret-file", secretFile}, "Bearer from-the-file-0123456789"},
	} {
		if code, _, errs := run(t, tc.args...); code != 0 {
			t.Fatalf("%v: exit %d: %s", tc.args, code, errs)
		}
		mu.Lock()
		got := calls[len(calls)-1].auth
		mu.Unlock()
		if got != tc.want {
			t.Fatalf("%v sent Authorization %q, want %q", tc.args, got, tc.want)
		}
	}
	t.Setenv(secretEnv, "")
	if code, _, errs := run(t, "register", "--app", "orders", "--produce", "p:t", "--http", addr, "--secret-file", filepath.Join(t.TempDir(), "missing")); code != 1 || !strings.Contains(errs, "--secret-file") {
		t.Fatalf("missing secret file: exit %d, %q", code, errs)
	}

	code, _, errs = run(t, "register", "--app", "bad", "--http", srv.URL)
	if code != 1 || !strings.Contains(errs, `consume[0].topic: "" is empty`) || !strings.Contains(errs, "400") {
		t.Fatalf("refused register: exit %d, %q", code, errs)
	}

	if code, out, errs := run(t, "deregister", "--app", "orders", "--http", addr); code != 0 || !strings.Contains(out, "deregistered orders") {
		t.Fatalf("deregister: exit %d, %q %q", code, out, errs)
	}
	if code, _, errs := run(t, "deregister", "--app", "ghost", "--http", addr); code != 1 || !strings.Contains(errs, `no registration for app "ghost"`) {
		t.Fatalf("deregister ghost: exit %d, %q", code, errs)
	}
	if code, out, _ := run(t, "registrations", "--http", addr); code != 0 || !strings.Contains(out, `"app": "orders"`) {
		t.Fatalf("registrations: exit %d, %q", code, out)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// fakeSidecar stands in for the msgmesh sidecar (tested with the SDK in
// package msgmesh): it answers HELLO, DECLARE and HEARTBEAT with OK,
// PUBLISH with PUBLISH_ACK (or with ERROR once failAfter publishes), and
// pushes push deliveries after a DECLARE of a push subscription.
type fakeSidecar struct {
	ln        net.Listener
	failAfter int64 // 0: never
	push      int
	published atomic.Int64
	acked     atomic.Int64
	nacked    atomic.Int64
	wg        sync.WaitGroup
}

func startFake(t *testing.T, f *fakeSidecar) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.ln = ln
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.serve(nc)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.wg.Wait()
	})
	return ln.Addr().String()
}

func (f *fakeSidecar) serve(nc net.Conn) {
	defer nc.Close()
	var wmu sync.Mutex
	send := func(kind mesh.Kind, flags mesh.Flags, id uint64, p mesh.Encoder) {
		b, _ := mesh.AppendFrame(nil, 0, kind, flags, id, p)
		wmu.Lock()
		nc.Write(b)
		wmu.Unlock()
	}
	r := mesh.NewReader(nc, 0)
	for {
		fr, err := r.ReadFrame()
		if err != nil {
			return
		}
		switch {
		case fr.Kind == mesh.KindAck && fr.IsResponse():
			f.acked.Add(1)
		case fr.Kind == mesh.KindNack && fr.IsResponse():
			f.nacked.Add(1)
		case fr.IsResponse():
		case fr.Kind == mesh.KindPublish:
			n := f.published.Add(1)
			if f.failAfter > 0 && n > f.failAfter {
				send(mesh.KindError, mesh.FlagResponse, fr.ID, &mesh.Error{Code: mesh.CodeRateLimited, Message: "slow down"})
				continue
			}
			send(mesh.KindPublishAck, mesh.FlagResponse, fr.ID, &mesh.PublishAck{Partition: -1, Offset: n})
		case fr.Kind == mesh.KindDeclare:
			send(mesh.KindOK, mesh.FlagResponse, fr.ID, nil)
			var d mesh.Declare
			if d.Decode(fr.Payload) == nil && len(d.Subs) == 1 && d.Subs[0].Mode == mesh.ModePush {
				go func() {
					for i := range f.push {
						id := uint64(i + 1)
						send(mesh.KindDeliver, 0, id, &mesh.Message{DeliveryID: id, Group: d.Subs[0].Group, Topic: d.Subs[0].Topic, Body: []byte("m" + strconv.Itoa(i))})
					}
				}()
			}
		default:
			send(mesh.KindOK, mesh.FlagResponse, fr.ID, nil)
		}
	}
}

func TestPub(t *testing.T) {
	f := &fakeSidecar{}
	addr := startFake(t, f)
	code, out, errs := run(t, "pub", "--addr", addr, "--app", "a", "--topic", "t", "--count", "2000", "--size", "100", "--window", "64")
	if code != 0 {
		t.Fatalf("pub: exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "published 2000 messages of 100 bytes") || !strings.Contains(out, "msgs/s") || !strings.Contains(out, "MiB/s") {
		t.Fatalf("pub printed %q", out)
	}
	if f.published.Load() != 2000 {
		t.Fatalf("sidecar saw %d publishes", f.published.Load())
	}
}

func TestPubFailure(t *testing.T) {
	f := &fakeSidecar{failAfter: 10}
	addr := startFake(t, f)
	code, _, errs := run(t, "pub", "--addr", addr, "--app", "a", "--topic", "t", "--count", "100", "--window", "4")
	if code != 1 || !strings.Contains(errs, "RATE_LIMITED") || !strings.Contains(errs, "slow down") {
		t.Fatalf("pub: exit %d, %q", code, errs)
	}
}

func TestSub(t *testing.T) {
	f := &fakeSidecar{push: 50}
	addr := startFake(t, f)
	code, out, errs := run(t, "sub", "--addr", addr, "--app", "a", "--topic", "t", "--group", "g", "--count", "40")
	if code != 0 {
		t.Fatalf("sub: exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "received 40 messages") {
		t.Fatalf("sub printed %q", out)
	}
	if f.acked.Load() < 40 {
		t.Fatalf("sidecar saw %d ACKs, want 40", f.acked.Load())
	}
	if f.acked.Load() > 40 {
		t.Fatalf("sidecar saw %d ACKs, want 40 (the rest must be nacked)", f.acked.Load())
	}
}

func TestSubTimeout(t *testing.T) {
	f := &fakeSidecar{push: 3}
	addr := startFake(t, f)
	code, _, errs := run(t, "sub", "--addr", addr, "--app", "a", "--topic", "t", "--group", "g", "--count", "5", "--timeout", "200ms")
	if code != 1 || !strings.Contains(errs, "timed out after 200ms: received 3 of 5") {
		t.Fatalf("sub: exit %d, %q", code, errs)
	}
}

func TestSidecarDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if code, _, errs := run(t, "pub", "--addr", addr, "--app", "a", "--topic", "t"); code != 1 || !strings.Contains(errs, "dial") {
		t.Fatalf("pub: exit %d, %q", code, errs)
	}
	_ = errors.New
}

// "bench" is a command and also the first word of "bench rpc": with flags
// or nothing after it, it must run itself, not ask which one.
func TestCommandThatIsAlsoAGroup(t *testing.T) {
	var out, errb strings.Builder
	code := Main(context.Background(), []string{"bench", "--count", "0"}, &out, &errb)
	if code != 2 || strings.Contains(errb.String(), "which one") || !strings.Contains(errb.String(), "--count") {
		t.Fatalf("meshctl bench --count 0: exit %d, stderr %q; want bench's own usage error", code, errb.String())
	}
}

func TestBenchNATSSyncFlag(t *testing.T) {
	var out, errb strings.Builder
	code := Main(context.Background(), []string{"bench", "--nats-sync", "always,sometimes"}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), `"sometimes"`) {
		t.Fatalf("meshctl bench --nats-sync always,sometimes: exit %d, stderr %q; want a usage error naming the bad value", code, errb.String())
	}
}
