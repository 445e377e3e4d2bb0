package msgmesh_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
)

// Profiles are served only with Config.Pprof, and behind the HTTP API's
// guard like the rest of it: a request for another Host is refused.
func TestPprofEndpoint(t *testing.T) {
	off := newEnv(t)
	on := newEnv(t, func(c *msgmesh.Config) { c.Pprof = true })
	for _, tc := range []struct {
		name   string
		e      *env
		host   string
		status int
		body   string
	}{
		{"off", off, "", http.StatusNotFound, ""},
		{"on", on, "", http.StatusOK, "goroutine"},
		{"on, foreign Host", on, "evil.example", http.StatusForbidden, "FORBIDDEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.host != "" {
				h.Set("Host", tc.host)
			}
			status, body := sidecartest.HTTPDoHeader(t, http.MethodGet, "http://"+tc.e.http+"/debug/pprof/goroutine?debug=1", h, nil)
			if status != tc.status || !strings.Contains(body, tc.body) {
				t.Fatalf("GET /debug/pprof/goroutine: %d %.200s; want %d with %q", status, body, tc.status, tc.body)
			}
		})
	}
}
