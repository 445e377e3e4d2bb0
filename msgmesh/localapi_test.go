package msgmesh_test

import (
	"context"
	"encoding/json"
	"html/template"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/internal/browsertest"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// curlPath finds curl, or skips the test.
func curlPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl on $PATH (install Debian's curl package); skipping the test that runs it")
	}
	return p
}

// curl runs the real curl with args and returns the HTTP status and body.
func curl(t *testing.T, args ...string) (int, string) {
	t.Helper()
	out, err := exec.Command(curlPath(t), append([]string{"-s", "-w", "\n%{http_code}"}, args...)...).Output()
	if err != nil {
		t.Fatalf("curl %q: %v", args, err)
	}
	s := string(out)
	i := strings.LastIndexByte(s, '\n')
	status, err := strconv.Atoi(s[i+1:])
	if err != nil {
		t.Fatalf("curl %q: no status in %q", args, s)
	}
	return status, s[:i]
}

// sidecarBinary builds the msgmesh binary, or skips the test in -short.
func sidecarBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the msgmesh binary")
	}
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// startBinary runs the msgmesh binary on the embedded broker, on free
// loopback ports, with extra flags; it returns once /healthz answers.
func startBinary(t *testing.T, extra ...string) (p *sidecartest.Proc, meshAddr, httpAddr string) {
	t.Helper()
	bin := sidecarBinary(t)
	meshAddr, httpAddr = freePort(t), freePort(t)
	p = sidecartest.StartProc(t, bin, append([]string{"--data-dir", t.TempDir(), "--listen", meshAddr, "--http", httpAddr}, extra...)...)
	sidecartest.WaitHealthy(t, p, httpAddr)
	return p, meshAddr, httpAddr
}

// attackPage is a web page of another site that tries to register apps
// and publish through the sidecar's HTTP API in every way a page can
// without the sidecar's consent. Each attempt tags its URL with
// attack=<name>, so the sidecar's log shows which ones reached it.
var attackPage = template.Must(template.New("attack").Parse(`<!doctype html>
<html><body>
<form id="form-text-register" method="POST" enctype="text/plain" action="{{.Sidecar}}/v1/registrations?attack=form-text-register">
  <input name='{"app":"orders","produce":[{"group":"p1","topic":"{{.Topic}}"}],"consume":[{"group":"evil","topic":"{{.Topic}}"}],"updated_at":"' value='"}'>
</form>
<form id="form-urlencoded-publish" method="POST" action="{{.Sidecar}}/v1/publish/{{.Topic}}?attack=form-urlencoded-publish">
  <input name="m" value="from-urlencoded-form">
</form>
<form id="form-multipart-publish" method="POST" enctype="multipart/form-data" action="{{.Sidecar}}/v1/publish/{{.Topic}}?attack=form-multipart-publish">
  <input name="m" value="from-multipart-form">
</form>
<form id="form-text-publish" method="POST" enctype="text/plain" action="{{.Sidecar}}/v1/publish/{{.Topic}}?attack=form-text-publish">
  <input name="m" value="from-text-form">
</form>
<script>
const sidecar = {{.Sidecar}}, topic = {{.Topic}};
const replace = JSON.stringify({app: "orders", produce: [{group: "p1", topic}], consume: [{group: "evil", topic}]});
const evil = JSON.stringify({app: "evil", produce: [{group: "p1", topic: "evil.topic"}]});
const url = (path, name) => sidecar + path + "?attack=" + name;
const fetches = {
  "fetch-text-register": () => fetch(url("/v1/registrations", "fetch-text-register"), {method: "POST", body: replace}),
  "fetch-nocors-register": () => fetch(url("/v1/registrations", "fetch-nocors-register"), {method: "POST", mode: "no-cors", headers: {"Content-Type": "application/json"}, body: evil}),
  "fetch-json-register": () => fetch(url("/v1/registrations", "fetch-json-register"), {method: "POST", headers: {"Content-Type": "application/json"}, body: evil}),
  "fetch-delete": () => fetch(url("/v1/registrations/orders", "fetch-delete"), {method: "DELETE"}),
  "fetch-read": () => fetch(url("/v1/registrations", "fetch-read")).then(r => r.text()),
  "fetch-text-publish": () => fetch(url("/v1/publish/" + topic, "fetch-text-publish"), {method: "POST", body: "from-fetch-text"}),
  "fetch-blob-publish": () => fetch(url("/v1/publish/" + topic, "fetch-blob-publish"), {method: "POST", mode: "no-cors", body: new Blob(["from-fetch-blob"])}),
  "fetch-multipart-publish": () => { const f = new FormData(); f.append("m", "from-fetch-multipart"); return fetch(url("/v1/publish/" + topic, "fetch-multipart-publish"), {method: "POST", mode: "no-cors", body: f}); },
  "fetch-octet-publish": () => fetch(url("/v1/publish/" + topic, "fetch-octet-publish"), {method: "POST", headers: {"Content-Type": "application/octet-stream"}, body: "from-fetch-octet"}),
};
// A sandboxed frame's requests carry "Origin: null".
function nullOrigin() {
  return new Promise(resolve => {
    addEventListener("message", e => resolve(String(e.data)), {once: true});
    const f = document.createElement("iframe");
    f.sandbox = "allow-scripts";
    f.srcdoc = "<script>fetch(" + JSON.stringify(url("/v1/publish/" + topic, "null-origin-publish")) +
      ", {method: 'POST', mode: 'no-cors', body: 'from-null-origin'}).then(r => parent.postMessage('sent: ' + r.type, '*'), e => parent.postMessage(String(e), '*'));<\/script>";
    document.body.appendChild(f);
  });
}
// Each form posts into a frame of its own; the frame's load ends it.
function submit(form) {
  return new Promise(resolve => {
    const f = document.createElement("iframe");
    f.name = form.id + "-frame";
    document.body.appendChild(f);
    f.onload = () => resolve(form.id + ": loaded");
    form.target = f.name;
    form.submit();
  });
}
async function attack() {
  const out = [];
  for (const [name, f] of Object.entries(fetches)) {
    try { const r = await f(); out.push(name + ": " + (typeof r === "string" ? r : r.type + " " + r.status)); }
    catch (e) { out.push(name + ": " + e); }
  }
  out.push("null-origin-publish: " + await nullOrigin());
  out.push("beacon-publish: queued " + navigator.sendBeacon(url("/v1/publish/" + topic, "beacon-publish"), "from-beacon"));
  for (const form of document.forms) out.push(await submit(form));
  return out;
}
</script>
</body></html>`))

// The attempts of attackPage that reach the sidecar, as their request or
// as the preflight the browser sends first.
var attacks = []string{
	"form-text-register", "form-urlencoded-publish", "form-multipart-publish", "form-text-publish",
	"fetch-text-register", "fetch-nocors-register", "fetch-json-register", "fetch-delete", "fetch-read",
	"fetch-text-publish", "fetch-blob-publish", "fetch-multipart-publish", "fetch-octet-publish",
	"null-origin-publish", "beacon-publish",
}

// TestWebPageCannotDriveHTTPAPI runs the msgmesh binary and a real
// headless Chromium on the same host. A page of another site
// (http://evil.example, which the browser resolves to 127.0.0.1) tries to
// replace the app's registration, register another app, delete it and
// publish, by fetch (text/plain, no-cors, JSON, Blob, multipart), form
// posts (text/plain, urlencoded, multipart), a beacon and a sandboxed
// frame (Origin: null). Then the browser is pointed at the sidecar as
// http://evil.example:<port>, as after DNS rebinding. The sidecar's own
// records decide: the registration is the one curl made, the topic's
// stream holds only what curl and the SDK publish afterwards, and the
// sidecar logged every attempt as refused. A person typing the sidecar's
// URL in the address bar still sees the registrations.
func TestWebPageCannotDriveHTTPAPI(t *testing.T) {
	bctx := browsertest.Start(t, chromedp.Flag("host-resolver-rules", "MAP evil.example 127.0.0.1"))
	curlPath(t)
	p, meshAddr, httpAddr := startBinary(t, "--log-level", "debug", "--log-json")
	_, port, _ := net.SplitHostPort(httpAddr)
	sidecar := "http://localhost:" + port

	// The app registers with curl, as the README shows, and consumes with the SDK.
	orders := `{"app":"orders","produce":[{"group":"p1","topic":"` + topic + `"}],"consume":[{"group":"g1","topic":"` + topic + `"}]}`
	if status, body := curl(t, "-X", "POST", sidecar+"/v1/registrations", "-H", "Content-Type: application/json", "-d", orders); status != http.StatusCreated {
		t.Fatalf("curl register: %d %s", status, body)
	}
	got := make(chan string, 100)
	sub := sidecartest.Dial(t, meshAddr)
	if _, err := sub.Subscribe(context.Background(), "g1", topic, func(_ context.Context, d *client.Delivery) error {
		got <- string(d.Body)
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = attackPage.Execute(w, map[string]string{"Sidecar": sidecar, "Topic": topic})
	}))
	t.Cleanup(page.Close)
	_, pagePort, _ := net.SplitHostPort(page.Listener.Addr().String())
	ctx, cancel := context.WithTimeout(bctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate("http://evil.example:"+pagePort+"/")); err != nil {
		t.Fatal(err)
	}
	outcomes, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`attack()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("running the page's attempts: %v", err)
	}
	for _, o := range outcomes {
		t.Logf("in the page: %s", o)
	}

	// Every attempt reached the sidecar and was refused there.
	refused := func() []string {
		var names []string
		for _, line := range strings.Split(p.Output(), "\n") {
			var rec struct{ Msg, URI string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "http: request refused" {
				if m := regexp.MustCompile(`attack=([a-z-]+)`).FindStringSubmatch(rec.URI); m != nil && !slices.Contains(names, m[1]) {
					names = append(names, m[1])
				}
			}
		}
		return names
	}
	// The registration is still the one curl made, and no other app is registered.
	status, body := curl(t, sidecar+"/v1/registrations")
	regs := decodeRegs(t, body)
	if status != http.StatusOK || len(regs) != 1 || regs[0].App != "orders" || len(regs[0].Consume) != 1 || regs[0].Consume[0].Group != "g1" {
		t.Fatalf("registrations after the page's attempts: %d %s", status, body)
	}
	sidecartest.WaitFor(t, 10*time.Second, "every attempt of the page to be refused by the sidecar", func() bool {
		return len(refused()) == len(attacks)
	})
	t.Logf("refused by the sidecar: %v", refused())

	// Nothing was published: curl's and the SDK's messages are the
	// topic's first and second.
	status, body = curl(t, "-X", "POST", sidecar+"/v1/publish/"+topic, "-H", "Content-Type: application/octet-stream", "-d", "from-curl")
	var ack struct{ Offset int64 }
	if err := json.Unmarshal([]byte(body), &ack); status != http.StatusOK || err != nil || ack.Offset != 1 {
		t.Fatalf("curl publish: %d %s; want offset 1 (the first message of the stream)", status, body)
	}
	pub := sidecartest.Dial(t, meshAddr)
	if a, err := pub.Publish(context.Background(), &client.Message{Topic: topic, Body: []byte("from-sdk")}); err != nil || a.Offset != 2 {
		t.Fatalf("SDK publish: %+v, %v; want offset 2", a, err)
	}
	var bodies []string
	for len(bodies) < 2 {
		select {
		case b := <-got:
			bodies = append(bodies, b)
		case <-time.After(30 * time.Second):
			t.Fatalf("consumed %q, want from-curl and from-sdk", bodies)
		}
	}
	slices.Sort(bodies)
	if !slices.Equal(bodies, []string{"from-curl", "from-sdk"}) {
		t.Fatalf("consumed %q, want from-curl and from-sdk", bodies)
	}

	// DNS rebinding: evil.example now resolves to the sidecar itself.
	var text string
	err = chromedp.Do(ctx, chromedp.Navigate("http://evil.example:"+port+"/v1/registrations"))
	if err == nil {
		text, err = chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	}
	if err != nil || !strings.Contains(text, `"FORBIDDEN"`) || strings.Contains(text, "orders") {
		t.Fatalf("the page of the rebound name reads %q (%v); want FORBIDDEN and no registration", text, err)
	}
	// A person at the browser may look at their own sidecar.
	err = chromedp.Do(ctx, chromedp.Navigate("http://127.0.0.1:"+port+"/v1/registrations"))
	if err == nil {
		text, err = chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	}
	if err != nil || !strings.Contains(text, `"orders"`) {
		t.Fatalf("the sidecar's URL typed in the address bar shows %q (%v); want the registrations", text, err)
	}
}

// TestBinaryRefusesForeignHosts is DNS rebinding without a browser: a
// request to the loopback listener that names another host is refused,
// unless --http-allowed-hosts names it; /healthz answers any Host.
func TestBinaryRefusesForeignHosts(t *testing.T) {
	_, _, httpAddr := startBinary(t, "--http-allowed-hosts", "sidecar.pod.local,10.0.0.0/8")
	base := "http://" + httpAddr
	for _, c := range []struct {
		host, path string
		want       int
	}{
		{"evil.example", "/v1/registrations", http.StatusForbidden},
		{"evil.example:7601", "/v1/upstreams", http.StatusForbidden},
		{"11.0.0.1", "/v1/stats", http.StatusForbidden},
		{"sidecar.pod.local:7601", "/v1/registrations", http.StatusOK},
		{"10.20.30.40:7601", "/v1/registrations", http.StatusOK},
		{"localhost", "/v1/registrations", http.StatusOK},
		{"evil.example", "/healthz", http.StatusOK},
	} {
		status, body := sidecartest.HTTPDoHeader(t, http.MethodGet, base+c.path, http.Header{"Host": {c.host}}, nil)
		if status != c.want {
			t.Errorf("GET %s with Host %s: %d %s, want %d", c.path, c.host, status, body, c.want)
		} else if status == http.StatusForbidden && !strings.Contains(body, `"error":"FORBIDDEN"`) {
			t.Errorf("GET %s with Host %s: %s, want a FORBIDDEN error", c.path, c.host, body)
		}
	}
}

// TestREADMECurlWalkthrough runs the README's curl commands, as written,
// with the real curl against the binary: each answers success.
func TestREADMECurlWalkthrough(t *testing.T) {
	curlPath(t)
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)The same registration with curl.*?```sh\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md: no curl walkthrough found")
	}
	_, _, httpAddr := startBinary(t)
	_, port, _ := net.SplitHostPort(httpAddr)
	script := strings.ReplaceAll(string(m[1]), "localhost:7601", "localhost:"+port)
	// Each command prints its status on a line of its own after its answer.
	wrapped := "set -e\ncurl() { command curl -w '\\nstatus=%{http_code}\\n' \"$@\"; }\n" + script
	out, err := exec.Command("sh", "-c", wrapped).CombinedOutput()
	if err != nil {
		t.Fatalf("the README's curl commands: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	var statuses []string
	for _, s := range regexp.MustCompile(`status=(\d+)`).FindAllStringSubmatch(string(out), -1) {
		statuses = append(statuses, s[1])
	}
	want := []string{"201", "200", "200", "200", "204"}
	if !slices.Equal(statuses, want) {
		t.Fatalf("statuses %v, want %v (register, list, publish, upstreams, delete)", statuses, want)
	}
	if !strings.Contains(string(out), `"offset":1`) {
		t.Errorf("the publish was not stored as the first message:\n%s", out)
	}
}
