package topology

import (
	"errors"
	"testing"
)

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, topic string
		want           bool
	}{
		{"orders.created", "orders.created", true},
		{"orders.created", "orders.created.eu", false},
		{"orders.created", "orders", false},
		{"orders.*", "orders.created", true},
		{"orders.*", "orders.created.eu", false},
		{"orders.*", "orders", false},
		{"*.created", "orders.created", true},
		{"orders.>", "orders.created", true},
		{"orders.>", "orders.created.eu", true},
		{"orders.>", "orders", false},
		{">", "anything.at.all", true},
		{"payments.*.eu", "payments.card.eu", true},
		{"payments.*.eu", "payments.card.us", false},
	} {
		if got := Match(c.pattern, c.topic); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.topic, got, c.want)
		}
	}
}

func TestValidateAndResolve(t *testing.T) {
	topo := Topology{
		Clusters: []Cluster{
			{Name: "main", Kind: KindNATS, Endpoints: []string{"nats://127.0.0.1:4222"}},
			{Name: "events", Kind: KindKafka, Endpoints: []string{"127.0.0.1:9092"}},
			{Name: "legacy", Kind: KindRocketMQ, Endpoints: []string{"127.0.0.1:9876"}},
		},
		Routes: []Route{
			{Topic: "payments.>", Cluster: "events"},
			{Topic: "old.*", Cluster: "legacy"},
			{Topic: "payments.card.refund", Cluster: "legacy"}, // shadowed: first match wins
		},
		Default: "main",
	}
	if err := topo.Validate(); err != nil {
		t.Fatal(err)
	}
	for topic, want := range map[string]string{
		"payments.card.refund": "events",
		"payments.card":        "events",
		"old.orders":           "legacy",
		"old.orders.x":         "main",
		"orders.created":       "main",
	} {
		if got := topo.Resolve(topic); got != want {
			t.Errorf("Resolve(%q) = %q, want %q", topic, got, want)
		}
	}
}

func TestValidateErrors(t *testing.T) {
	one := func(mod func(*Topology)) Topology {
		tp := Topology{Clusters: []Cluster{{Name: "a", Kind: KindNATS, Endpoints: []string{"x"}}}}
		mod(&tp)
		return tp
	}
	for name, tp := range map[string]Topology{
		"no clusters":       {},
		"no name":           one(func(t *Topology) { t.Clusters[0].Name = "" }),
		"bad kind":          one(func(t *Topology) { t.Clusters[0].Kind = "pulsar" }),
		"no endpoints":      one(func(t *Topology) { t.Clusters[0].Endpoints = nil }),
		"duplicate":         one(func(t *Topology) { t.Clusters = append(t.Clusters, t.Clusters[0]) }),
		"unknown cluster":   one(func(t *Topology) { t.Routes = []Route{{Topic: "x", Cluster: "b"}} }),
		"bad pattern":       one(func(t *Topology) { t.Routes = []Route{{Topic: "x.>.y", Cluster: "a"}} }),
		"wildcard in token": one(func(t *Topology) { t.Routes = []Route{{Topic: "x.a*", Cluster: "a"}} }),
		"empty token":       one(func(t *Topology) { t.Routes = []Route{{Topic: "x..y", Cluster: "a"}} }),
		"unknown default":   one(func(t *Topology) { t.Default = "zzz" }),
		"ambiguous default": one(func(t *Topology) {
			t.Clusters = append(t.Clusters, Cluster{Name: "b", Kind: KindKafka, Endpoints: []string{"y"}})
		}),
	} {
		if err := tp.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Validate() = %v, want ErrInvalid", name, err)
		}
	}
	tp := one(func(*Topology) {})
	if err := tp.Validate(); err != nil || tp.Default != "a" {
		t.Fatalf("single cluster: err %v, default %q; want nil, a", err, tp.Default)
	}
}
