package meshctl

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

// TestHTTPPushWalkthrough runs docs/http-api.md's "Push subscriptions"
// block, as written, against a real sidecar (only its ports changed): a
// Python standard-library receiver, a registration with a push_url, a
// CloudEvent and a plain message published with curl; both arrive, the
// event with its own attributes and the plain message with the defaults.
func TestHTTPPushWalkthrough(t *testing.T) {
	_, httpAddr := startSidecar(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	ln.Close() // the receiver takes it: free a moment ago
	lines := docBlock(t, "docs/http-api.md", "push_url")
	for i, l := range lines {
		lines[i] = strings.ReplaceAll(l, "8080", port)
	}
	out := runCurlBlock(t, lines, httpAddr, "python3")
	for _, want := range []string{
		"order-42-created /orders com.example.order.created 1 application/json {\"order\":42}\n",
		// The doc shows the binary's cluster name, embedded; this
		// in-process sidecar's one broker is named default.
		"MESH_orders_created:2 msgmesh://default/orders.created msgmesh.message 1 application/octet-stream plain\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the walkthrough's output lacks %q:\n%s", want, out)
		}
	}
}
