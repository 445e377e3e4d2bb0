//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"
)

var httpc = &http.Client{Timeout: 20 * time.Second}

// pod is one app instance: a demo app container, which owns the network
// namespace, and the sidecar container in it.
type pod struct {
	name    string // the app container's compose service: orders1
	app     string // orders
	mesh    string // the sidecar's compose service: orders1-mesh
	appCID  string
	meshCID string // the sidecar container now serving (the upgrade replaces it)

	demoURL    string // the demo app's API on the host
	sidecarURL string // the sidecar's HTTP API on the host
}

// fwdAddr is the pod's forwarding address: its instance id at the
// control plane.
func (p *pod) fwdAddr() string { return p.name + ":7602" }

// refresh looks up where the pod's ports are published (they move when
// the pod's network is disconnected and connected again).
func (p *pod) refresh() error {
	a, err := hostPort(p.appCID, 8080)
	if err != nil {
		return err
	}
	b, err := hostPort(p.appCID, 7601)
	if err != nil {
		return err
	}
	p.demoURL, p.sidecarURL = "http://"+a, "http://"+b
	return nil
}

// httpOK says whether GET url answers 200.
func httpOK(url string) (bool, string) {
	resp, err := httpc.Get(url)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode == http.StatusOK, fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(b))
}

// call sends a JSON request and decodes a JSON answer into out (if not
// nil). The status must be one of want (200 when none given).
func call(method, url, token string, in, out any, want ...int) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if len(want) == 0 {
		want = []int{http.StatusOK}
	}
	ok := false
	for _, w := range want {
		ok = ok || resp.StatusCode == w
	}
	if !ok {
		return &statusError{method: method, url: url, status: resp.StatusCode, body: strings.TrimSpace(string(b))}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: %w in %q", method, url, err, b)
		}
	}
	return nil
}

type statusError struct {
	method, url string
	status      int
	body        string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.method, e.url, e.status, e.body)
}

// ctrl calls the control plane's API with the operator token.
func (s *system) ctrl(method, path string, in, out any, want ...int) error {
	return call(method, s.ctrlURL+path, operatorToken, in, out, want...)
}

// setWeight sets a weight through the control plane's HTTP API.
func (s *system) setWeight(t testing.TB, p *pod, w int) {
	t.Helper()
	if err := s.ctrl("PUT", "/v1/apps/"+p.app+"/instances/"+p.fwdAddr()+"/weight", map[string]int{"weight": w}, nil); err != nil {
		t.Fatal(err)
	}
}

// waitWeights waits until each pod's sidecar reports the weight given.
func waitWeights(t testing.TB, want map[*pod]int) {
	t.Helper()
	start := time.Now()
	for p, w := range want {
		if err := poll(15*time.Second, func() (bool, string) {
			st, err := p.stats()
			if err != nil {
				return false, err.Error()
			}
			return st.Weight == w, fmt.Sprintf("%s reports weight %d, want %d", p.name, st.Weight, w)
		}); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("every sidecar applied its weight within %s", time.Since(start).Round(time.Millisecond))
}

// stats is a sidecar's GET /v1/stats.
type stats struct {
	FromBroker   int `json:"from_broker"`
	Forwarded    int `json:"forwarded"`
	Fallbacks    int `json:"forward_fallbacks"`
	FromSiblings int `json:"from_siblings"`
	Weight       int `json:"weight"`
	// RulesInForce are the routing rules of the sidecar's last push.
	RulesInForce []string `json:"rules_in_force"`
}

func (a stats) minus(b stats) stats {
	return stats{FromBroker: a.FromBroker - b.FromBroker, Forwarded: a.Forwarded - b.Forwarded,
		Fallbacks: a.Fallbacks - b.Fallbacks, FromSiblings: a.FromSiblings - b.FromSiblings, Weight: a.Weight}
}

func (p *pod) stats() (stats, error) {
	var st stats
	err := call("GET", p.sidecarURL+"/v1/stats", "", nil, &st)
	return st, err
}

func (p *pod) mustStats(t testing.TB) stats {
	t.Helper()
	st, err := p.stats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// demoState is the demo app's GET /v1/state.
type demoState struct {
	Ready       bool           `json:"ready"`
	Connections int            `json:"connections"`
	DialErrors  int            `json:"dial_errors"`
	Consumed    map[string]int `json:"consumed"`
	Tracing     bool           `json:"tracing"`
}

func (p *pod) state(t testing.TB) demoState {
	t.Helper()
	var st demoState
	if err := call("GET", p.demoURL+"/v1/state", "", nil, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// jobSpec and jobStatus mirror cmd/demoapp's publish jobs.
type jobSpec struct {
	Topic   string  `json:"topic"`
	Prefix  string  `json:"prefix"`
	Count   int     `json:"count"`
	Rate    float64 `json:"rate"`
	Workers int     `json:"workers"`
	Size    int     `json:"size"`
	Colour  string  `json:"colour,omitempty"`
}

type jobStatus struct {
	ID        int            `json:"id"`
	Done      bool           `json:"done"`
	Acked     int            `json:"acked"`
	AckedIDs  []string       `json:"acked_ids"`
	Attempts  int            `json:"attempts"`
	Failures  int            `json:"failures"`
	Codes     map[string]int `json:"error_codes"`
	Abandoned []string       `json:"abandoned"`
	LastError string         `json:"last_error"`
}

// job is a publish job running in a pod's demo app.
type job struct {
	p  *pod
	id int
}

func (p *pod) startJob(t testing.TB, spec jobSpec) *job {
	t.Helper()
	var out struct {
		ID int `json:"id"`
	}
	if err := call("POST", p.demoURL+"/v1/jobs", "", spec, &out, http.StatusCreated); err != nil {
		t.Fatal(err)
	}
	return &job{p: p, id: out.ID}
}

func (j *job) status(t testing.TB) jobStatus {
	t.Helper()
	var st jobStatus
	if err := call("GET", fmt.Sprintf("%s/v1/jobs/%d", j.p.demoURL, j.id), "", nil, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// stop ends the job and returns its final status with the acked ids.
func (j *job) stop(t testing.TB) jobStatus {
	t.Helper()
	var st jobStatus
	if err := call("POST", fmt.Sprintf("%s/v1/jobs/%d/stop", j.p.demoURL, j.id), "", nil, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// wait waits until a counted job has published everything.
func (j *job) wait(t testing.TB, timeout time.Duration) jobStatus {
	t.Helper()
	if err := poll(timeout, func() (bool, string) {
		st := j.status(t)
		return st.Done, fmt.Sprintf("%s job %d: %d acked, %d failed attempts (%v) %s", j.p.name, j.id, st.Acked, st.Failures, st.Codes, st.LastError)
	}); err != nil {
		t.Fatal(err)
	}
	return j.stop(t)
}

// acked sums jobs' acked counts as they run.
func ackedSoFar(t testing.TB, jobs ...*job) int {
	n := 0
	for _, j := range jobs {
		n += j.status(t).Acked
	}
	return n
}

// seen is one id's entry in GET /v1/consumed.
type seen struct {
	N           int    `json:"n"`
	Redelivered int    `json:"redelivered"`
	TraceParent string `json:"traceparent"`
}

func (p *pod) consumed(group, topic, prefix string) (map[string]seen, error) {
	var out struct {
		IDs map[string]seen `json:"ids"`
	}
	q := url.Values{"group": {group}, "topic": {topic}, "prefix": {prefix}}
	err := call("GET", p.demoURL+"/v1/consumed?"+q.Encode(), "", nil, &out)
	return out.IDs, err
}

// publishRequest and publishAnswer mirror cmd/demoapp's POST /v1/publish.
type publishRequest struct {
	Topic   string            `json:"topic"`
	ID      string            `json:"id"`
	Key     string            `json:"key,omitempty"`
	Body    string            `json:"body"`
	Headers map[string]string `json:"headers,omitempty"`
	Trace   bool              `json:"trace,omitempty"`
}

type publishAnswer struct {
	OK        bool   `json:"ok"`
	Code      string `json:"code"`
	Message   string `json:"message"`
	MessageID string `json:"message_id"`
	TraceID   string `json:"trace_id"`
}

func (p *pod) publish(req publishRequest) (publishAnswer, error) {
	var ans publishAnswer
	err := call("POST", p.demoURL+"/v1/publish", "", req, &ans)
	return ans, err
}

// groupCount is what a consumer group got of a set of acked ids, summed
// over the group's pods.
type groupCount struct {
	Acked      int            // ids the broker acknowledged to a producer
	Consumed   int            // distinct ids consumed
	Deliveries int            // deliveries in all
	Lost       []string       // acked, never consumed
	Dups       map[string]int // consumed more than once: id → deliveries
	Unacked    int            // consumed ids no producer saw acked (a publish retried or abandoned)
	ByPod      map[string]int // deliveries per pod
}

func (g groupCount) String() string {
	return fmt.Sprintf("acked %d, consumed %d distinct in %d deliveries (per pod %v), lost %d, duplicated %d, consumed but not seen acked %d",
		g.Acked, g.Consumed, g.Deliveries, g.ByPod, len(g.Lost), len(g.Dups), g.Unacked)
}

func countGroup(pods []*pod, group, topic, prefix string, acked []string) (groupCount, error) {
	g := groupCount{Acked: len(acked), Dups: map[string]int{}, ByPod: map[string]int{}}
	all := map[string]int{}
	for _, p := range pods {
		ids, err := p.consumed(group, topic, prefix)
		if err != nil {
			return g, err
		}
		for id, s := range ids {
			all[id] += s.N
			g.ByPod[p.name] += s.N
			g.Deliveries += s.N
		}
	}
	want := make(map[string]bool, len(acked))
	for _, id := range acked {
		want[id] = true
		if all[id] == 0 {
			g.Lost = append(g.Lost, id)
		}
	}
	for id, n := range all {
		if n > 1 {
			g.Dups[id] = n
		}
		if !want[id] {
			g.Unacked++
		}
	}
	g.Consumed = len(all)
	sort.Strings(g.Lost)
	return g, nil
}

// waitConsumed waits until group consumed every acked id (at least once)
// and returns the counts; after settle it counts again, so duplicates that
// arrive late are seen too.
func waitConsumed(t testing.TB, timeout, settle time.Duration, pods []*pod, group, topic, prefix string, acked []string) groupCount {
	t.Helper()
	var g groupCount
	start := time.Now()
	err := poll(timeout, func() (bool, string) {
		var err error
		if g, err = countGroup(pods, group, topic, prefix, acked); err != nil {
			return false, err.Error()
		}
		return len(g.Lost) == 0, g.String() + firstIDs(g.Lost)
	})
	if err != nil {
		t.Fatalf("group %s on %s: %v", group, topic, err)
	}
	took := time.Since(start)
	if settle > 0 {
		time.Sleep(settle)
		if g, err = countGroup(pods, group, topic, prefix, acked); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("group %s on %s (%s*): %s; all consumed %s after the last publish", group, topic, prefix, g, took.Round(time.Millisecond))
	return g
}

func firstIDs(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	if len(ids) > 5 {
		return fmt.Sprintf("; missing %v ...", ids[:5])
	}
	return fmt.Sprintf("; missing %v", ids)
}

// exactlyOnce fails unless every acked id was consumed exactly once and
// nothing else was consumed.
func exactlyOnce(t testing.TB, what string, g groupCount) {
	t.Helper()
	if len(g.Lost) > 0 || len(g.Dups) > 0 || g.Unacked > 0 || g.Deliveries != g.Acked {
		dups := []string{}
		for id, n := range g.Dups {
			if len(dups) < 5 {
				dups = append(dups, fmt.Sprintf("%s×%d", id, n))
			}
		}
		t.Errorf("%s: want every acked message consumed exactly once: %s; duplicates e.g. %v%s", what, g, dups, firstIDs(g.Lost))
	}
}

func idsOf(sts ...jobStatus) []string {
	var out []string
	for _, st := range sts {
		out = append(out, st.AckedIDs...)
	}
	return out
}
