package natsbroker_test

import (
	"errors"
	"testing"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
)

// Check follows the server: nil while it runs, an ErrUnavailable error
// soon after it stops (without waiting for a timeout: the client knows it
// is disconnected), nil again once it is back on the same address.
func TestCheckFollowsTheServer(t *testing.T) {
	addr, dir := brokertest.FreeAddr(t), t.TempDir()
	start := func() *natsbroker.Embedded {
		e, err := natsbroker.StartEmbedded(natsbroker.EmbeddedConfig{StoreDir: dir, Listen: addr})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Shutdown)
		return e
	}
	e := start()
	b, err := natsbroker.New(brokertest.Ctx(t), natsbroker.Config{URL: "nats://" + addr, Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Check(brokertest.Ctx(t)); err != nil {
		t.Fatalf("Check with the server up: %v", err)
	}
	e.Shutdown()
	err = brokertest.WaitCheck(t, b, false, brokertest.WaitLong)
	if !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("Check with the server down: %v, want ErrUnavailable", err)
	}
	start()
	brokertest.WaitCheck(t, b, true, brokertest.WaitLong)
	_ = b.Close()
	if err := b.Check(brokertest.Ctx(t)); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Check after Close: %v, want ErrClosed", err)
	}
}

// A Broker on an embedded server passes the server's own check on: store
// damage found at load makes Check fail.
func TestCheckAsksTheServer(t *testing.T) {
	dir := fillStream(t, t.TempDir(), false)
	if err := removeFirstBlock(dir); err != nil {
		t.Fatal(err)
	}
	e, _ := startStore(t, dir)
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b, err := natsbroker.New(brokertest.Ctx(t), natsbroker.Config{Conn: nc, Logger: quietLog, Embedded: e})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := b.Check(brokertest.Ctx(t)); !errors.Is(err, natsbroker.ErrStoreDamaged) {
		t.Fatalf("Check: %v, want ErrStoreDamaged", err)
	}
}
