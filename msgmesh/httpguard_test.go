package msgmesh_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
)

// TestHTTPGuardRules sends the HTTP API requests the way browsers, DNS
// rebinding and programs send them, and checks each answer: which Host
// names are served, which Origin and Sec-Fetch-Site headers are refused,
// and which content types each body takes (docs/http-api.md).
func TestHTTPGuardRules(t *testing.T) {
	e := newEnv(t, func(c *msgmesh.Config) {
		c.HTTPAllowedHosts = []string{"sidecar.pod.local", "10.1.0.0/16", "fd00::5"}
	})
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	_, port, _ := net.SplitHostPort(e.http)
	self := "127.0.0.1:" + port
	reg := []byte(`{"app":"orders","produce":[{"group":"p1","topic":"` + topic + `"}],"consume":[{"group":"g1","topic":"` + topic + `"}]}`)
	type req struct {
		method, path string
		hdr          map[string]string
		body         []byte
	}
	get := func(hdr map[string]string) req { return req{"GET", "/v1/registrations", hdr, nil} }
	host := func(h string) req { return get(map[string]string{"Host": h}) }
	register := func(ctype string) req {
		return req{"POST", "/v1/registrations", map[string]string{"Content-Type": ctype}, reg}
	}
	publish := func(ctype string) req {
		return req{"POST", "/v1/publish/" + topic, map[string]string{"Content-Type": ctype}, []byte("m")}
	}
	for _, c := range []struct {
		name   string
		req    req
		status int
		code   string // the error answer's code
	}{
		// Host: loopback names and addresses on any port, and the allowed ones.
		{"Host 127.0.0.1", host(self), 200, ""},
		{"Host localhost", host("localhost:" + port), 200, ""},
		{"Host localhost without port", host("localhost"), 200, ""},
		{"Host LOCALHOST.", host("LOCALHOST.:" + port), 200, ""},
		{"Host 127.0.0.2", host("127.0.0.2:" + port), 200, ""},
		{"Host [::1]", host("[::1]:" + port), 200, ""},
		{"Host allowed name", host("sidecar.pod.local:7601"), 200, ""},
		{"Host in allowed prefix", host("10.1.200.3:7601"), 200, ""},
		{"Host allowed IPv6", host("[fd00::5]:7601"), 200, ""},
		{"Host evil.example (DNS rebinding)", host("evil.example:" + port), 403, "FORBIDDEN"},
		{"Host localhost.evil.example", host("localhost.evil.example:" + port), 403, "FORBIDDEN"},
		{"Host 127.0.0.1.nip.io", host("127.0.0.1.nip.io:" + port), 403, "FORBIDDEN"},
		{"Host 0.0.0.0", host("0.0.0.0:" + port), 403, "FORBIDDEN"},
		{"Host outside allowed prefix", host("10.2.0.1:7601"), 403, "FORBIDDEN"},
		{"Host of an allowed name's subdomain", host("x.sidecar.pod.local"), 403, "FORBIDDEN"},
		{"healthz with a foreign Host", req{"GET", "/healthz", map[string]string{"Host": "10.9.9.9:7601", "Sec-Fetch-Site": "cross-site"}, nil}, 200, ""},

		// Browsers' marks of a request a page sent.
		{"Sec-Fetch-Site cross-site", get(map[string]string{"Sec-Fetch-Site": "cross-site"}), 403, "FORBIDDEN"},
		{"Sec-Fetch-Site same-site", get(map[string]string{"Sec-Fetch-Site": "same-site"}), 403, "FORBIDDEN"},
		{"Sec-Fetch-Site none (typed in the address bar)", get(map[string]string{"Sec-Fetch-Site": "none"}), 200, ""},
		{"Sec-Fetch-Site same-origin", get(map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://" + self}), 200, ""},
		{"Origin of another site", get(map[string]string{"Origin": "http://evil.example"}), 403, "FORBIDDEN"},
		{"Origin null", get(map[string]string{"Origin": "null"}), 403, "FORBIDDEN"},
		{"Origin another loopback port", get(map[string]string{"Origin": "http://127.0.0.1:1"}), 403, "FORBIDDEN"},
		{"Origin localhost for Host 127.0.0.1", get(map[string]string{"Origin": "http://localhost:" + port}), 403, "FORBIDDEN"},
		{"Origin https of the same host", get(map[string]string{"Origin": "https://" + self}), 403, "FORBIDDEN"},
		{"Origin the sidecar's own", get(map[string]string{"Origin": "http://" + self}), 200, ""},
		{"preflight", req{"OPTIONS", "/v1/registrations", map[string]string{"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}, nil}, 403, "FORBIDDEN"},
		{"cross-site publish", req{"POST", "/v1/publish/" + topic, map[string]string{"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, []byte("m")}, 403, "FORBIDDEN"},
		{"cross-site delete", req{"DELETE", "/v1/registrations/orders", map[string]string{"Origin": "http://evil.example"}, nil}, 403, "FORBIDDEN"},

		// Content types: JSON where JSON is expected, no "simple" type for publishes.
		{"register application/json", register("application/json"), 201, ""},
		{"register application/json; charset=utf-8", register("application/json; charset=utf-8"), 201, ""},
		{"register text/plain", register("text/plain;charset=UTF-8"), 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"register form", register("application/x-www-form-urlencoded"), 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"register without Content-Type", register(""), 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"publish application/octet-stream", publish("application/octet-stream"), 200, ""},
		{"publish application/json", publish("application/json"), 200, ""},
		{"publish without Content-Type", publish(""), 200, ""},
		{"publish text/plain", publish("text/plain"), 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"publish form (curl -d)", publish("application/x-www-form-urlencoded"), 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"publish multipart", publish("multipart/form-data; boundary=x"), 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"publish malformed Content-Type", publish("text/"), 415, "UNSUPPORTED_MEDIA_TYPE"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range c.req.hdr {
				if v != "" {
					h.Set(k, v)
				}
			}
			status, body := sidecartest.HTTPDoHeader(t, c.req.method, "http://"+e.http+c.req.path, h, c.req.body)
			if status != c.status {
				t.Fatalf("%s %s %v: HTTP %d %s, want %d", c.req.method, c.req.path, c.req.hdr, status, body, c.status)
			}
			if c.code == "" {
				return
			}
			var eb struct{ Error, Message string }
			if err := json.Unmarshal([]byte(body), &eb); err != nil || eb.Error != c.code || eb.Message == "" {
				t.Fatalf("answer %q (%v), want the error %s with a message", body, err, c.code)
			}
			t.Logf("%d %s: %s", status, eb.Error, eb.Message)
		})
	}
	// Nothing refused changed the registration.
	status, body := sidecartest.HTTPDo(t, "GET", "http://"+e.http+"/v1/registrations", "", nil)
	if regs := decodeRegs(t, body); status != 200 || len(regs) != 1 || len(regs[0].Consume) != 1 || regs[0].Consume[0].Group != "g1" {
		t.Fatalf("registrations after the refused requests: %d %s", status, body)
	}
}

// TestHTTPAllowedHostsErrors: New refuses entries that are not a host
// name, an address or a prefix.
func TestHTTPAllowedHostsErrors(t *testing.T) {
	b, err := brokers.Open(context.Background(), sidecartest.NATSCluster(t), sidecartest.Logger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	for _, bad := range []string{"*", "pod.local:7601", "http://pod.local", "", "a b", "10.0.0.0/33"} {
		_, err := msgmesh.New(msgmesh.Config{DataDir: t.TempDir(), Broker: b, HTTPAllowedHosts: []string{bad}})
		if err == nil || !strings.Contains(err.Error(), "HTTPAllowedHosts[0]") {
			t.Errorf("HTTPAllowedHosts %q: New error %v, want one naming the entry", bad, err)
		}
	}
}
