package bench

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/internal/freeport"
	"github.com/msgmesh/msgmesh/internal/procstat"
	"github.com/msgmesh/msgmesh/internal/syncbuf"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
	"github.com/msgmesh/msgmesh/topology"
)

// Sidecar modes (Config.Sidecar).
const (
	// SidecarProcess runs the plain sidecar row against the real msgmesh
	// binary as a child process, so that the CPU time and resident memory
	// read from /proc are the sidecar's own, not the bench driver's.
	SidecarProcess = "process"
	// SidecarInProcess runs it in the bench's own process (msgmesh.New):
	// no CPU or RSS column, since the driver, the broker and the sidecar
	// share one process.
	SidecarInProcess = "inprocess"
)

// BuildSidecar compiles cmd/msgmesh into dir; it needs the go command and
// a working directory inside the msgmesh module (as `go run
// ./cmd/meshctl bench` has).
func BuildSidecar(ctx context.Context, dir string) (string, error) {
	bin, err := buildCommand(ctx, dir, "msgmesh")
	if err != nil {
		return "", fmt.Errorf("%w (or give --msgmesh-bin, or --sidecar inprocess)", err)
	}
	return bin, nil
}

// buildCommand compiles the module's cmd/<name> into dir; it needs the
// go command and a working directory inside the msgmesh module.
func buildCommand(ctx context.Context, dir, name string) (string, error) {
	bin := filepath.Join(dir, name)
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/msgmesh/msgmesh/cmd/"+name).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", name, err, out)
	}
	return bin, nil
}

// errAddrInUse: a child could not bind an address freeport.Addr gave,
// since between the pick and the bind another socket took the port.
// The starters pick new ports and try again (withFreshPorts).
var errAddrInUse = errors.New("address taken before the child bound it")

// withFreshPorts runs start, which picks its ports with freeport.Addr,
// again while it fails with errAddrInUse, at most four times in all.
func withFreshPorts[T any](start func() (T, error)) (T, error) {
	for attempt := 1; ; attempt++ {
		v, err := start()
		if err == nil || !errors.Is(err, errAddrInUse) || attempt == 4 {
			return v, err
		}
	}
}

// child is a process the bench started: a broker or the sidecar.
type child struct {
	cmd    *exec.Cmd
	done   chan struct{}
	stderr *syncbuf.Buffer
}

// startChild runs bin with args and waits until ready says it serves
// (polled every 20 ms, at most a minute), failing if it exits first.
func startChild(ctx context.Context, bin string, args []string, ready func(context.Context) error) (*child, error) {
	c := &child{cmd: exec.Command(bin, args...), done: make(chan struct{}), stderr: &syncbuf.Buffer{}}
	c.cmd.Stderr = c.stderr
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	deadline := time.Now().Add(time.Minute)
	for {
		err := ready(ctx)
		if err == nil {
			return c, nil
		}
		select {
		case <-c.done:
			out := strings.TrimSpace(c.stderr.String())
			if strings.Contains(out, "address already in use") {
				return nil, fmt.Errorf("%s exited: %w: %s", filepath.Base(bin), errAddrInUse, out)
			}
			return nil, fmt.Errorf("%s exited: %s", filepath.Base(bin), out)
		case <-ctx.Done():
			c.close()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond): // polling a port that is not up yet
		}
		if time.Now().After(deadline) {
			c.close()
			return nil, fmt.Errorf("%s not serving after a minute: %w: %s", filepath.Base(bin), err, strings.TrimSpace(c.stderr.String()))
		}
	}
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// close stops the process: SIGTERM, then SIGKILL after 10 s.
func (c *child) close() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// listening is a ready function for startChild: every address accepts
// TCP connections.
func listening(addrs ...string) func(context.Context) error {
	return func(ctx context.Context) error {
		for _, a := range addrs {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", a)
			if err != nil {
				return err
			}
			_ = c.Close()
		}
		return nil
	}
}

// procSidecar is the msgmesh binary running as a child process, with one
// broker cluster (the bench's) in its config file.
type procSidecar struct {
	*child
	meshAddr string
	httpAddr string
}

// startProcSidecar runs bin on cluster with its data in dir and waits
// until its HTTP API answers /healthz. With pprof it serves
// /debug/pprof/ (the binary's --pprof).
func startProcSidecar(ctx context.Context, bin string, cluster topology.Cluster, dir string, pprof, unix bool) (*procSidecar, error) {
	return withFreshPorts(func() (*procSidecar, error) { return startProcSidecarOnce(ctx, bin, cluster, dir, pprof, unix) })
}

// startProcSidecarOnce is one try of startProcSidecar.
func startProcSidecarOnce(ctx context.Context, bin string, cluster topology.Cluster, dir string, pprof, unix bool) (*procSidecar, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	meshAddr, err := freeport.Addr()
	if err != nil {
		return nil, err
	}
	if unix {
		meshAddr = msgmesh.UnixPrefix + filepath.Join(dir, "mesh.sock")
	}
	httpAddr, err := freeport.Addr()
	if err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(dir, "msgmesh.yaml")
	eps, _ := json.Marshal(cluster.Endpoints) // a JSON list is a YAML flow sequence
	yaml := fmt.Sprintf("brokers:\n  clusters:\n    - name: %s\n      kind: %s\n      endpoints: %s\n", cluster.Name, cluster.Kind, eps)
	if len(cluster.Options) > 0 {
		opts, _ := json.Marshal(cluster.Options) // strings only; a JSON object is a YAML flow mapping
		yaml += fmt.Sprintf("      options: %s\n", opts)
	}
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
		return nil, err
	}
	args := []string{"--data-dir", dir, "--listen", meshAddr, "--http", httpAddr, "--grpc", "", "--config", cfgPath, "--log-level", "warn"}
	if pprof {
		args = append(args, "--pprof")
	}
	c, err := startChild(ctx, bin, args, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/healthz", nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /healthz: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &procSidecar{child: c, meshAddr: meshAddr, httpAddr: httpAddr}, nil
}

// register registers reg through the HTTP API.
func (p *procSidecar) register(ctx context.Context, reg registry.Registration) error {
	body, err := json.Marshal(reg)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+p.httpAddr+"/v1/registrations", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("register: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("register: %s: %s", resp.Status, b)
	}
	return nil
}

// fetch GETs path of the HTTP API into file (a profile).
func (p *procSidecar) fetch(ctx context.Context, path, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.httpAddr+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return f.Close()
}

// PerMsg is what the sidecar process spent per message in a phase.
type PerMsg struct {
	CPU           time.Duration // user plus system CPU time
	Reads, Writes float64       // read and write syscalls
	Switches      float64       // context switches of its threads
}

// phaseCost measures a phase of the sidecar process pid: start samples
// it, and end gives what it spent per message since. With pid 0 (an
// in-process sidecar, whose costs are not its own to read) both do
// nothing and end returns zeros.
type phaseCost struct {
	pid int
	at  procstat.Stat
}

func (c *phaseCost) start() error {
	if c.pid == 0 {
		return nil
	}
	st, err := procstat.Read(c.pid)
	if err != nil {
		return fmt.Errorf("sidecar process: %w", err)
	}
	c.at = st
	return nil
}

func (c *phaseCost) end(n int) (PerMsg, error) {
	if c.pid == 0 {
		return PerMsg{}, nil
	}
	st, err := procstat.Read(c.pid)
	if err != nil {
		return PerMsg{}, fmt.Errorf("sidecar process: %w", err)
	}
	f := float64(n)
	return PerMsg{
		CPU:      (st.CPU - c.at.CPU) / time.Duration(n),
		Reads:    float64(st.ReadCalls-c.at.ReadCalls) / f,
		Writes:   float64(st.WriteCalls-c.at.WriteCalls) / f,
		Switches: float64(st.Switches-c.at.Switches) / f,
	}, nil
}

// memoryOf reads pid's memory figures: its largest resident set so far
// and the split of the current one.
func memoryOf(pid int) (procstat.Stat, error) {
	st, err := procstat.Read(pid)
	if err != nil {
		return st, fmt.Errorf("sidecar RSS: %w", err)
	}
	return st, nil
}

// profileName turns a row group's label into a file name part.
func profileName(label string) string {
	return strings.NewReplacer(" ", "-", ",", "", "/", "-").Replace(label)
}

var errNoHTTP = errors.New("bench: this path has no HTTP API to publish to")

// newProcSidecarPath is the plain sidecar path through the msgmesh binary
// as a child process (Config.Sidecar SidecarProcess). With
// Config.ProfileDir it starts a CPU profile of the process now, saved as
// <label>-sidecar.cpu.pprof, and saves <label>-sidecar.allocs.pprof when
// the path closes (after the row's phases), before stopping the process.
func newProcSidecarPath(ctx context.Context, cfg Config, cluster topology.Cluster, dataDir, topic, label string) (path, func(), error) {
	ps, err := startProcSidecar(ctx, cfg.Binary, cluster, dataDir, cfg.ProfileDir != "", cfg.AppNet == AppNetUnix)
	if err != nil {
		return nil, nil, err
	}
	group := "g-" + topic
	if err := ps.register(ctx, registration(topic, group)); err != nil {
		ps.close()
		return nil, nil, err
	}
	c, err := client.Dial(ctx, ps.meshAddr, client.WithApp(benchApp), client.WithLogger(quietLogger()))
	if err != nil {
		ps.close()
		return nil, nil, err
	}
	sp := &sidecarPath{c: c, topic: topic, group: group, httpAddr: ps.httpAddr, pid: ps.pid()}
	cpuDone := make(chan error, 1)
	base := filepath.Join(cfg.ProfileDir, profileName(label)+"-sidecar")
	if cfg.ProfileDir != "" {
		go func() {
			cpuDone <- ps.fetch(ctx, fmt.Sprintf("/debug/pprof/profile?seconds=%d", cfg.ProfileSeconds), base+".cpu.pprof")
		}()
	} else {
		close(cpuDone)
	}
	return sp, func() {
		_ = c.Close()
		if cfg.ProfileDir != "" {
			if err := ps.fetch(ctx, "/debug/pprof/allocs", base+".allocs.pprof"); err != nil {
				fmt.Fprintf(os.Stderr, "bench: allocation profile: %v\n", err)
			}
			if err := <-cpuDone; err != nil {
				fmt.Fprintf(os.Stderr, "bench: CPU profile: %v\n", err)
			}
		}
		ps.close()
	}, nil
}

// httpBatchEvents is how many events each request of the HTTP batch
// publish row carries.
const httpBatchEvents = 64

// measureHTTPPublish is the HTTP publish row on p's sidecar: cfg.Count
// messages POSTed to /v1/publish/{topic} from syncPublishers goroutines
// over as many keep-alive connections, each request answered after the
// broker's acks; the sidecar's CPU per message when it is a process.
// With batch 0 each request is one body (KindHTTPPublish); otherwise a
// CloudEvents batch of that many events with the body as data
// (KindHTTPBatch).
func measureHTTPPublish(ctx context.Context, cfg Config, p path, batch int) Result {
	r := Result{Kind: KindHTTPPublish, Path: fmt.Sprintf("HTTP publish (%d connections)", syncPublishers)}
	if batch > 0 {
		r.Kind, r.Path = KindHTTPBatch, fmt.Sprintf("HTTP batch publish (%d conns × %d)", syncPublishers, batch)
	}
	sp, ok := p.(*sidecarPath)
	if !ok || sp.httpAddr == "" {
		r.Err = errNoHTTP
		return r
	}
	body := make([]byte, cfg.Size)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	contentType, requests, perRequest := "application/octet-stream", cfg.Count, 1
	if batch > 0 {
		contentType, body = "application/cloudevents-batch+json", eventBatch(body, batch)
		requests, perRequest = max(1, cfg.Count/batch), batch
	}
	tr := &http.Transport{MaxIdleConnsPerHost: syncPublishers, MaxConnsPerHost: syncPublishers}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	url := "http://" + sp.httpAddr + "/v1/publish/" + sp.topic
	cost := phaseCost{pid: sp.pid}
	err := cost.start()
	if err != nil {
		r.Err = err
		return r
	}
	rps, err := publishers(ctx, requests, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("Msgmesh-App", benchApp)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("POST /v1/publish: %s: %s", resp.Status, b)
		}
		return nil
	})
	if err != nil {
		r.Err = fmt.Errorf("%s: %w", r.Path, err)
		return r
	}
	r.Sync32MPS = rps * float64(perRequest)
	r.Sync32Cost, r.Err = cost.end(requests * perRequest)
	return r
}

// eventBatch is a CloudEvents batch of n events, each with data as its
// data_base64.
func eventBatch(data []byte, n int) []byte {
	events := make([]map[string]string, n)
	for i := range events {
		events[i] = map[string]string{
			"specversion": "1.0", "id": fmt.Sprintf("bench-%d", i), "source": "/msgmesh/bench",
			"type": "msgmesh.bench", "data_base64": base64.StdEncoding.EncodeToString(data),
		}
	}
	b, _ := json.Marshal(events) // strings only: cannot fail
	return b
}
