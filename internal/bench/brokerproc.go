package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/msgmesh/msgmesh/internal/freeport"
	"github.com/msgmesh/msgmesh/internal/syncbuf"
	"github.com/msgmesh/msgmesh/topology"
)

// Where the broker runs (Config.BrokerAt).
const (
	// BrokerInProcess runs the broker inside the bench's process: the
	// direct client then shares one Go runtime with the broker, so a
	// message between them never wakes another process (the scheduler
	// hands it over between goroutines), which no real deployment has.
	BrokerInProcess = "inprocess"
	// BrokerProcess runs the broker as a child process of its own (the
	// repo's natsd, kafkad and rmq-testbroker commands, the same servers
	// as the in-process ones): both paths cross a process boundary to
	// reach it, as they do in production, and the sidecar path crosses
	// one more.
	BrokerProcess = "process"
)

// brokerCommands are the commands that run each broker as a process.
var brokerCommands = map[string]string{
	"nats":     "natsd",
	"kafka":    "kafkad",
	"rocketmq": "rmq-testbroker",
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
			return nil, fmt.Errorf("%s exited: %s", filepath.Base(bin), strings.TrimSpace(c.stderr.String()))
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

// startBrokerProcess runs broker name as a process (BrokerProcess), its
// data in dir, with bin built by buildCommand; sync is the NATS server's
// sync setting as in startNATS.
func startBrokerProcess(ctx context.Context, name, bin, dir string, sync time.Duration) (*setup, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	addr, err := freeport.Addr()
	if err != nil {
		return nil, err
	}
	var (
		args    []string
		ready   = []string{addr}
		cluster topology.Cluster
		direct  func(ctx context.Context, topic string) (path, func(), error)
	)
	switch name {
	case "nats":
		host, port, _ := net.SplitHostPort(addr)
		syncArg := "always"
		if sync > 0 {
			syncArg = sync.String()
		}
		args = []string{"--host", host, "--port", port, "--http-port", "0", "--data-dir", dir, "--sync", syncArg}
		url := "nats://" + addr
		cluster = topology.Cluster{Name: "bench", Kind: topology.KindNATS, Endpoints: []string{url}}
		direct = func(ctx context.Context, topic string) (path, func(), error) {
			d, closeD, err := newDirect(ctx, url, topic)
			if err != nil {
				return nil, nil, err
			}
			return d, closeD, nil
		}
	case "kafka":
		args = []string{"--listen", addr, "--partitions", "1", "--log-level", "none"}
		cluster = topology.Cluster{Name: "bench", Kind: topology.KindKafka, Endpoints: []string{addr}}
		direct = func(ctx context.Context, topic string) (path, func(), error) {
			d := newKafkaDirect([]string{addr}, topic)
			return d, func() { _ = d.w.Close(); _ = d.r.Close() }, nil
		}
	case "rocketmq":
		brokerAddr, err := freeport.Addr()
		if err != nil {
			return nil, err
		}
		args = []string{"--listen", addr, "--broker-listen", brokerAddr}
		ready = append(ready, brokerAddr)
		cluster = topology.Cluster{Name: "bench", Kind: topology.KindRocketMQ, Endpoints: []string{addr}}
		direct = func(_ context.Context, topic string) (path, func(), error) {
			return newRocketDirect(addr, topic)
		}
	default:
		return nil, fmt.Errorf("bench: no broker command for %q", name)
	}
	p, err := startChild(ctx, bin, args, listening(ready...))
	if err != nil {
		return nil, err
	}
	if name == "kafka" {
		// As the in-process cluster's seeded topics: one partition each,
		// there before either path's first request.
		if err := createKafkaTopics(ctx, addr); err != nil {
			p.close()
			return nil, err
		}
	}
	return &setup{cluster: cluster, direct: direct, close: p.close, pid: p.pid()}, nil
}

// createKafkaTopics creates every bench topic with one partition.
func createKafkaTopics(ctx context.Context, addr string) error {
	topics := make([]kafka.TopicConfig, len(allTopics))
	for i, t := range allTopics {
		topics[i] = kafka.TopicConfig{Topic: t, NumPartitions: 1, ReplicationFactor: 1}
	}
	cl := &kafka.Client{Addr: kafka.TCP(addr), Timeout: 30 * time.Second}
	resp, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: topics})
	if err != nil {
		return fmt.Errorf("create kafka topics: %w", err)
	}
	for t, err := range resp.Errors {
		if err != nil {
			return fmt.Errorf("create kafka topic %s: %w", t, err)
		}
	}
	return nil
}
