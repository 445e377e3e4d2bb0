package sidecartest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/msgmesh/msgmesh/msgmesh/registry"
)

// Register POSTs the registration of app (produce bindings "p:topic",
// consume bindings "g:topic" or "g:topic,max_attempts=3,...") to the
// sidecar's HTTP API at httpAddr, and returns the answer's status and
// body.
func Register(t testing.TB, httpAddr, app string, produce, consume []string) (int, string) {
	t.Helper()
	return RegisterAs(t, httpAddr, app, "", produce, consume)
}

// RegisterAs is Register presenting secret (Authorization: Bearer) when
// it is not empty.
func RegisterAs(t testing.TB, httpAddr, app, secret string, produce, consume []string) (int, string) {
	t.Helper()
	reg := registry.Registration{App: app}
	for _, s := range produce {
		b, err := registry.ParseBinding(s)
		if err != nil {
			t.Fatal(err)
		}
		reg.Produce = append(reg.Produce, b)
	}
	for _, s := range consume {
		b, err := registry.ParseConsumeBinding(s)
		if err != nil {
			t.Fatal(err)
		}
		reg.Consume = append(reg.Consume, b)
	}
	body, _ := json.Marshal(reg)
	return HTTPDo(t, http.MethodPost, "http://"+httpAddr+"/v1/registrations", "application/json", body, BearerHeader(secret)...)
}

// BearerHeader is the Authorization header of an app secret, for HTTPDo;
// none for "".
func BearerHeader(secret string) []string {
	if secret == "" {
		return nil
	}
	return []string{"Authorization", "Bearer " + secret}
}

// HTTPDo sends one request with the given headers (name, value pairs) and
// returns the status and body; it fails t if the request gets no answer.
func HTTPDo(t testing.TB, method, url, ctype string, body []byte, headers ...string) (int, string) {
	t.Helper()
	h := http.Header{}
	if ctype != "" {
		h.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		h.Set(headers[i], headers[i+1])
	}
	return HTTPDoHeader(t, method, url, h, body)
}

// HTTPDoHeader sends a request with the headers h; a "Host" in h replaces
// the Host header the URL implies.
func HTTPDoHeader(t testing.TB, method, url string, h http.Header, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if host := h.Get("Host"); host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
