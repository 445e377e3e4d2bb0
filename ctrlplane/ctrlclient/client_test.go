package ctrlclient

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
)

func TestNewURLs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		bad  bool
	}{
		{"http://127.0.0.1:7700", []string{"http://127.0.0.1:7700"}, false},
		{"127.0.0.1:7700/", []string{"http://127.0.0.1:7700"}, false},
		{"https://cp.example:443/base", []string{"https://cp.example:443/base"}, false},
		{"a:1, b:2", []string{"http://a:1", "http://b:2"}, false},
		{"", nil, true},
		{"a:1,", nil, true},
		{"ftp://a:1", nil, true},
		{"http://a:1?x=1", nil, true},
	} {
		c, err := New(tc.in, "")
		if tc.bad {
			if err == nil {
				t.Errorf("New(%q) succeeded", tc.in)
			}
			continue
		}
		if err != nil || strings.Join(c.URLs(), " ") != strings.Join(tc.want, " ") {
			t.Errorf("New(%q) = %v, %v; want %v", tc.in, c.URLs(), err, tc.want)
		}
	}
	if _, err := New("a:1", "", WithTimeout(0)); err == nil {
		t.Error("a zero timeout was accepted")
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 100*time.Millisecond, 2*time.Second
	for n, want := range map[int]time.Duration{1: lo, 2: 2 * lo, 3: 4 * lo, 5: 16 * lo, 6: hi, 50: hi} {
		for range 100 {
			if d := backoff(lo, hi, n); d < want/2 || d > want {
				t.Fatalf("backoff after %d failures = %v, want in [%v, %v]", n, d, want/2, want)
			}
		}
	}
}

func TestAPIErrorKinds(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		want   error
		text   string
	}{
		{400, `{"error":"INVALID","message":"weight: 101 is outside 0..100"}`, ErrInvalid, "400 Bad Request: weight: 101 is outside 0..100 (INVALID)"},
		{401, `{"error":"UNAUTHORIZED","message":"no credential"}`, ErrUnauthorized, "401 Unauthorized: no credential (UNAUTHORIZED)"},
		{403, `{"error":"FORBIDDEN","message":"x"}`, ErrForbidden, "403 Forbidden: x (FORBIDDEN)"},
		{404, `{"error":"NOT_FOUND","message":"no app \"a\""}`, ErrNotFound, `404 Not Found: no app "a" (NOT_FOUND)`},
		{409, `{"error":"CONFLICT","message":"x"}`, ErrConflict, "409 Conflict: x (CONFLICT)"},
		{413, `{"error":"TOO_LARGE","message":"x"}`, ErrInvalid, "413 Request Entity Too Large: x (TOO_LARGE)"},
		{503, `{"error":"SHUTTING_DOWN","message":"x"}`, ErrUnavailable, "503 Service Unavailable: x (SHUTTING_DOWN)"},
		{502, `<html>bad gateway</html>`, ErrUnavailable, "502 Bad Gateway: <html>bad gateway</html>"},
		{500, ``, nil, "500 Internal Server Error"},
	} {
		err := apiError(tc.status, []byte(tc.body))
		if err.Error() != tc.text || (tc.want != nil && !errors.Is(err, tc.want)) || (tc.want == nil && err.Unwrap() != nil) {
			t.Errorf("%d %s: %q unwraps to %v; want %q, %v", tc.status, tc.body, err.Error(), err.Unwrap(), tc.text, tc.want)
		}
	}
}

// serve runs a real HTTP server on 127.0.0.1 until the test ends.
func serve(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return "http://" + ln.Addr().String()
}

// deadURL is a URL where nothing listens.
func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func TestFailover(t *testing.T) {
	var okCalls, busyCalls atomic.Int32
	ok := serve(t, func(w http.ResponseWriter, r *http.Request) {
		okCalls.Add(1)
		if r.Header.Get("Authorization") != "Bearer tok" {
			w.WriteHeader(401)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `{"name":"x","credential":"c"}`)
			return
		}
		fmt.Fprint(w, `[]`)
	})
	busy := serve(t, func(w http.ResponseWriter, r *http.Request) {
		busyCalls.Add(1)
		w.WriteHeader(503)
		fmt.Fprintf(w, `{"error":%q,"message":"stopping"}`, api.CodeShuttingDown)
	})
	ctx := t.Context()

	// A replica that answers 503: an idempotent call moves on at once.
	c, _ := New(busy+","+ok, "tok")
	if _, err := c.ListApps(ctx); err != nil {
		t.Fatalf("GET with the first replica busy: %v", err)
	}
	if c.URLs()[0] != ok || busyCalls.Load() != 1 {
		t.Fatalf("in use: %v after %d calls to the busy one", c.URLs(), busyCalls.Load())
	}
	// A POST that reached a busy replica is not sent again, but the next
	// call goes to the other replica.
	c, _ = New(busy+","+ok, "tok")
	if _, err := c.CreateApp(ctx, "x"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("POST to a busy replica: %v", err)
	}
	if c.URLs()[0] != ok {
		t.Fatalf("after a busy POST the client uses %v", c.URLs())
	}
	// A POST that could not connect is sent to the next replica.
	c, _ = New(deadURL(t)+","+ok, "tok")
	if created, err := c.CreateApp(ctx, "x"); err != nil || created.Credential != "c" {
		t.Fatalf("POST with the first replica down = %+v, %v", created, err)
	}
	// Every replica down: the last error, with the URL.
	c, _ = New(deadURL(t)+","+deadURL(t), "tok")
	if err := c.Health(ctx); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("all down: %v", err)
	}
}
