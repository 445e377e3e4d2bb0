package sidecartest

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/kafkabroker/kafkatest"
	"github.com/msgmesh/msgmesh/broker/natsbroker/natstest"
	"github.com/msgmesh/msgmesh/internal/rmqtest"
	"github.com/msgmesh/msgmesh/internal/rmqtest/testbroker"
	"github.com/msgmesh/msgmesh/topology"
)

// BrokerKit is one broker technology as the tests see it: how to start one
// for a test, and what it does not promise.
type BrokerKit struct {
	Name string
	// Start runs a broker for the test (in this process, on loopback) and
	// describes it as a cluster for brokers.Open and the config file.
	Start func(t *testing.T) topology.Cluster
	// NoKeyOrder, when set, is why the broker does not keep per-key order.
	NoKeyOrder string
}

// BrokerKits lists every adapter the sidecar has; each adds itself here,
// and the suites that run on every broker range over it.
func BrokerKits() []BrokerKit {
	return []BrokerKit{
		{Name: "nats", Start: func(t *testing.T) topology.Cluster { return NATSCluster(t) }},
		{Name: "kafka", Start: func(t *testing.T) topology.Cluster {
			return topology.Cluster{Name: "kafka", Kind: topology.KindKafka, Endpoints: kafkatest.Addrs(kafkatest.Start(t))}
		}},
		{Name: "rocketmq", Start: func(t *testing.T) topology.Cluster {
			b := testbroker.Start(t, rmqtest.Config{})
			return topology.Cluster{Name: "rocketmq", Kind: topology.KindRocketMQ, Endpoints: []string{b.NameServer()}}
		}},
	}
}

// NATSCluster starts an embedded JetStream server for the test and
// describes it as a cluster.
func NATSCluster(t testing.TB) topology.Cluster {
	emb := natstest.Start(t)
	return topology.Cluster{Name: "nats", Kind: topology.KindNATS, Endpoints: []string{emb.ClientURL()}}
}

// ClusterYAML is a sidecar config file holding just c.
func ClusterYAML(c topology.Cluster) string {
	eps := make([]string, len(c.Endpoints))
	for i, e := range c.Endpoints {
		eps[i] = strconv.Quote(e)
	}
	return fmt.Sprintf("brokers:\n  clusters:\n    - name: %s\n      kind: %s\n      endpoints: [%s]\n", c.Name, c.Kind, strings.Join(eps, ", "))
}

// WriteConfig writes yaml to a config file for msgmesh --config in a
// temporary directory of t's, and returns its path.
func WriteConfig(t testing.TB, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "msgmesh.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// UpgradeSetup builds the binary and returns the flags for one sidecar on
// its own data dir: the embedded broker, or kit's broker through --config.
// It skips the test in -short.
func UpgradeSetup(t *testing.T, kit *BrokerKit) (bin string, args []string, meshAddr, httpAddr string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the msgmesh binary")
	}
	bin, err := Build()
	if err != nil {
		t.Fatal(err)
	}
	meshAddr, httpAddr = brokertest.FreeAddr(t), brokertest.FreeAddr(t)
	args = []string{"--data-dir", t.TempDir(), "--listen", meshAddr, "--http", httpAddr, "--log-level", "info", "--delivery-timeout", "5s"}
	if kit != nil {
		args = append(args, "--config", WriteConfig(t, ClusterYAML(kit.Start(t))))
	}
	return bin, args, meshAddr, httpAddr
}

// ForBinaryKits runs f as a subtest on the binary's embedded broker (kit
// nil) and on each broker kit, which UpgradeSetup passes with --config.
func ForBinaryKits(t *testing.T, f func(t *testing.T, kit *BrokerKit)) {
	t.Run("embedded", func(t *testing.T) { f(t, nil) })
	kits := BrokerKits()
	for i := range kits {
		t.Run(kits[i].Name, func(t *testing.T) { f(t, &kits[i]) })
	}
}

// UpgradeFrom starts the binary with args and --upgrade, waits until old
// handed over and exited 0 and the new process is healthy, and returns it
// with the time from its start to the old one's exit (the handoff).
func UpgradeFrom(t *testing.T, bin string, args []string, old *Proc, httpAddr string) (*Proc, time.Duration) {
	t.Helper()
	start := time.Now()
	next := StartProc(t, bin, slices.Concat(args, []string{"--upgrade"})...)
	select {
	case <-old.Done:
	case <-time.After(Scaled(90 * time.Second)):
		t.Fatal("with --upgrade and the same flags, the old process did not hand over and exit")
	}
	gone := time.Since(start)
	if code := old.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("old process exited %d", code)
	}
	WaitHealthy(t, next, httpAddr)
	return next, gone
}
