package sidecarapp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/internal/syncbuf"
)

// waitLong bounds every wait of these tests; generous for -race builds on
// a busy machine. Nothing waits this long when the code is right.
const waitLong = 60 * time.Second

// sidecar is one msgmesh (Run, in this process) on a data directory.
type sidecar struct {
	t      *testing.T
	http   string
	mesh   string
	log    *syncbuf.Buffer
	app    string // the app register registered last: dial connects as it
	cancel context.CancelFunc
	done   chan error

	stopOnce sync.Once
}

// startSidecar runs msgmesh with args plus its data dir and listeners, and
// waits until its HTTP API answers. Stop it with stop; t.Cleanup stops it
// too and prints its log if the test failed. The listeners' ports are
// picked free and then bound by msgmesh: another socket may take one in
// between (an outgoing connection's ephemeral port, while other packages'
// tests run), so a start that fails to bind is tried again on new ports.
func startSidecar(t *testing.T, dataDir string, args ...string) *sidecar {
	t.Helper()
	for attempt := 1; ; attempt++ {
		s, err := tryStartSidecar(t, dataDir, args...)
		if err == nil {
			return s
		}
		if !strings.Contains(err.Error(), "address already in use") || attempt == 3 {
			t.Fatalf("msgmesh exited while starting: %v\n%s", err, s.log.String())
		}
		t.Logf("msgmesh could not bind a port picked free a moment ago (%v); trying new ports", err)
	}
}

// tryStartSidecar is one attempt of startSidecar; the error is Run's if
// msgmesh exited while starting.
func tryStartSidecar(t *testing.T, dataDir string, args ...string) (*sidecar, error) {
	t.Helper()
	s := &sidecar{t: t, http: brokertest.FreeAddr(t), mesh: brokertest.FreeAddr(t), log: &syncbuf.Buffer{}, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	args = append([]string{"--data-dir", dataDir, "--listen", s.mesh, "--http", s.http, "--grpc", "127.0.0.1:0", "--shutdown-grace", "5s"}, args...)
	go func() { s.done <- Run(ctx, args, s.log) }()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() || os.Getenv("MSGMESH_TEST_LOG") != "" {
			t.Logf("sidecar log:\n%s", s.log.String())
		}
	})
	deadline := time.Now().Add(waitLong)
	for {
		select {
		case err := <-s.done:
			s.stopOnce.Do(func() {})
			cancel()
			if err == nil {
				err = errors.New("Run returned nil before the HTTP API answered")
			}
			return s, err
		default:
		}
		if resp, err := http.Get("http://" + s.http + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("msgmesh not healthy after %v\n%s", waitLong, s.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop shuts the sidecar down and waits for Run to return. Idempotent.
func (s *sidecar) stop() {
	s.stopOnce.Do(func() {
		s.cancel()
		select {
		case err := <-s.done:
			if err != nil && !errors.Is(err, context.Canceled) {
				s.t.Errorf("msgmesh exited with %v", err)
			}
		case <-time.After(waitLong):
			s.t.Errorf("msgmesh did not stop within %v", waitLong)
		}
	})
}

// answer is the HTTP API's answer: the status and, for errors, the wire
// code name and message.
type answer struct {
	Status  int
	Code    string `json:"error"`
	Message string `json:"message"`
	Offset  int64  `json:"offset"`
}

func (a answer) String() string {
	return fmt.Sprintf("%d %s %s", a.Status, a.Code, a.Message)
}

func (s *sidecar) post(path, ctype string, body []byte) answer {
	s.t.Helper()
	resp, err := http.Post("http://"+s.http+path, ctype, bytes.NewReader(body))
	if err != nil {
		s.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{Status: resp.StatusCode}
	if err := json.Unmarshal(raw, &a); err != nil {
		s.t.Fatalf("POST %s: %d, body %q: %v", path, resp.StatusCode, raw, err)
	}
	return a
}

// register stores a registration of app producing topics with group "p"
// and, if consume, consuming them with group "g".
func (s *sidecar) register(app string, consume bool, topics ...string) answer {
	s.t.Helper()
	type binding struct {
		Group string `json:"group"`
		Topic string `json:"topic"`
	}
	reg := struct {
		App     string    `json:"app"`
		Produce []binding `json:"produce"`
		Consume []binding `json:"consume"`
	}{App: app}
	for _, topic := range topics {
		reg.Produce = append(reg.Produce, binding{"p", topic})
		if consume {
			reg.Consume = append(reg.Consume, binding{"g", topic})
		}
	}
	body, _ := json.Marshal(reg)
	a := s.post("/v1/registrations", "application/json", body)
	if a.Status == http.StatusCreated {
		s.app = app
	}
	return a
}

// dial connects an SDK client as the app registered last.
func (s *sidecar) dial(ctx context.Context) (*client.Client, error) {
	return client.Dial(ctx, s.mesh, client.WithApp(s.app))
}

func (s *sidecar) publish(topic string, body []byte) answer {
	s.t.Helper()
	return s.post("/v1/publish/"+topic, "application/octet-stream", body)
}

// drain pulls group "g" on topic through the SDK, acking, until every
// body of want was delivered; it returns how often each body came (a body
// not in want fails the test).
func (s *sidecar) drain(topic string, want map[string]bool) map[string]int {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	c, err := s.dial(ctx)
	if err != nil {
		s.t.Fatalf("client.Dial: %v", err)
	}
	defer c.Close()
	got := map[string]int{}
	for missing := len(want); missing > 0; {
		ds, err := c.Pull(ctx, "g", topic, 64)
		if err != nil {
			s.t.Fatalf("Pull %s with %d of %d messages missing: %v", topic, missing, len(want), err)
		}
		for _, d := range ds {
			b := string(d.Body)
			if !want[b] {
				s.t.Fatalf("Pull %s: unexpected message %q", topic, b)
			}
			if got[b] == 0 {
				missing--
			}
			got[b]++
			if err := d.Ack(ctx); err != nil {
				s.t.Fatalf("Ack: %v", err)
			}
		}
	}
	return got
}

// waitCond polls cond every 20 ms (a polling interval, not a
// synchronisation) until it holds, failing after waitLong with detail's
// text, if given.
func waitCond(t *testing.T, what string, cond func() bool, detail ...func() string) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("timed out after %v waiting for %s", waitLong, what)
			for _, d := range detail {
				msg += "; " + d()
			}
			t.Fatal(msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
