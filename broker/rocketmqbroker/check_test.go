package rocketmqbroker_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/rocketmqbroker"
	"github.com/msgmesh/msgmesh/internal/rmqtest"
)

// Check follows the cluster: nil while the name server lists a broker
// that answers, an ErrUnavailable error naming what does not answer once
// it stopped, nil again once it is back on the same addresses.
func TestCheckFollowsTheCluster(t *testing.T) {
	cfg := rmqtest.Config{NameServerAddr: brokertest.FreeAddr(t), BrokerAddr: brokertest.FreeAddr(t), DataDir: t.TempDir()}
	start := func() *rmqtest.Broker {
		tb, err := rmqtest.Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tb.Close() })
		return tb
	}
	tb := start()
	b, err := rocketmqbroker.New(brokertest.Ctx(t), rocketmqbroker.Config{NameServers: []string{cfg.NameServerAddr}, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Check(brokertest.Ctx(t)); err != nil {
		t.Fatalf("Check with the cluster up: %v", err)
	}
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	err = brokertest.WaitCheck(t, b, false, brokertest.WaitLong)
	if !errors.Is(err, broker.ErrUnavailable) || !strings.Contains(err.Error(), cfg.NameServerAddr) {
		t.Fatalf("Check with the cluster down: %v, want ErrUnavailable naming %s", err, cfg.NameServerAddr)
	}
	start()
	brokertest.WaitCheck(t, b, true, brokertest.WaitLong)
}

// A broker that the name server lists but that does not answer is named.
func TestCheckNamesADeadBroker(t *testing.T) {
	tb, err := rmqtest.Start(rmqtest.Config{Advertise: brokertest.FreeAddr(t)}) // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tb.Close() })
	b, err := rocketmqbroker.New(brokertest.Ctx(t), rocketmqbroker.Config{NameServers: []string{tb.NameServer()}, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	err = b.Check(brokertest.Ctx(t))
	if !errors.Is(err, broker.ErrUnavailable) || !strings.Contains(err.Error(), rmqtest.BrokerName) || !strings.Contains(err.Error(), tb.Advertise()) {
		t.Fatalf("Check: %v, want ErrUnavailable naming broker %s at %s", err, rmqtest.BrokerName, tb.Advertise())
	}
}
