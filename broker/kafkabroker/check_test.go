package kafkabroker_test

import (
	"errors"
	"net"
	"strconv"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/kafkabroker"
)

// Check follows the cluster: nil while it runs, an ErrUnavailable error
// once it stopped, nil again once it is back on the same port.
func TestCheckFollowsTheCluster(t *testing.T) {
	addr := brokertest.FreeAddr(t)
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	start := func() *kfake.Cluster {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	c := start()
	b, err := kafkabroker.New(brokertest.Ctx(t), kafkabroker.Config{Brokers: []string{addr}, Logger: testLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Check(brokertest.Ctx(t)); err != nil {
		t.Fatalf("Check with the cluster up: %v", err)
	}
	c.Close()
	err = brokertest.WaitCheck(t, b, false, brokertest.WaitLong)
	if !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("Check with the cluster down: %v, want ErrUnavailable", err)
	}
	start()
	brokertest.WaitCheck(t, b, true, brokertest.WaitLong)
}
