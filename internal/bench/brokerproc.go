package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/msgmesh/msgmesh/internal/freeport"
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

// startBrokerProcess runs broker name as a process (BrokerProcess), its
// data in dir, with bin built by buildCommand; sync is the NATS server's
// sync setting as in startNATS.
func startBrokerProcess(ctx context.Context, name, bin, dir string, sync time.Duration) (*setup, error) {
	return withFreshPorts(func() (*setup, error) { return startBrokerProcessOnce(ctx, name, bin, dir, sync) })
}

// startBrokerProcessOnce is one try of startBrokerProcess.
func startBrokerProcessOnce(ctx context.Context, name, bin, dir string, sync time.Duration) (*setup, error) {
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
		cluster = natsCluster(url, sync)
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
