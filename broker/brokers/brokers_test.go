package brokers_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/brokers"
	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/broker/natsbroker/natstest"
	"github.com/msgmesh/msgmesh/topology"
)

// The options replicas and max_age are the older spelling of the streams
// settings: still read, and refused when both spellings set one knob.
func TestNATSOldStreamOptions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := natstest.Start(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	age := time.Hour
	c := topology.Cluster{Name: "n", Kind: topology.KindNATS, Endpoints: []string{e.ClientURL()},
		Options: map[string]string{"max_age": "1h"}, Streams: &topology.Streams{StreamSettings: topology.StreamSettings{MaxAge: &age}}}
	if _, err := brokers.Open(ctx, c, log); err == nil || !strings.Contains(err.Error(), "both set") {
		t.Fatalf("max_age as option and in streams: %v; want an error", err)
	}
	c.Streams = nil
	b, err := brokers.Open(ctx, c, log)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Publish(ctx, &broker.Message{Topic: "old.opt", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(ctx, "MESH_old_opt")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxAge; got != time.Hour {
		t.Fatalf("stream max_age %v, want the option's 1h", got)
	}
}

// TestOpenUnreachable: when the cluster cannot be reached, Open returns
// the adapter's error (wrapping broker.ErrUnavailable) and no Broker, for
// every kind. The NATS branch once lost the error: the stream options'
// err shadowed it, and Open returned a nil Broker and no error.
func TestOpenUnreachable(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tt := range []struct {
		kind     topology.Kind
		endpoint string
	}{
		{topology.KindNATS, "nats://" + brokertest.FreeAddr(t)},
		{topology.KindKafka, brokertest.FreeAddr(t)},
		{topology.KindRocketMQ, brokertest.FreeAddr(t)},
	} {
		t.Run(string(tt.kind), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c := topology.Cluster{Name: "gone", Kind: tt.kind, Endpoints: []string{tt.endpoint}}
			b, err := brokers.Open(ctx, c, log)
			if !errors.Is(err, broker.ErrUnavailable) || b != nil {
				t.Fatalf("Open of a cluster nobody serves: %v, %v; want no Broker and ErrUnavailable", b, err)
			}
		})
	}
}
