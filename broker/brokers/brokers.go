// Package brokers opens a broker adapter from a cluster description
// (topology.Cluster), so the sidecar binary, tests and the benchmark go
// from config to a broker.Broker the same way. It is the only package that
// imports every adapter.
//
// Options per kind (docs/brokers.md):
//
//	nats:     stream_prefix, max_ack_pending, max_batch; replicas and
//	          max_age are an older spelling of streams.replicas and
//	          streams.max_age
//	kafka:    client_id, partitions, replication_factor
//	rocketmq: group_prefix, retries, max_message_size (the brokers' maxMessageSize),
//	          max_batch
//
// An unknown option is an error, so a typo never passes silently.
package brokers

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/kafkabroker"
	"github.com/msgmesh/msgmesh/broker/natsbroker"
	"github.com/msgmesh/msgmesh/broker/rocketmqbroker"
	"github.com/msgmesh/msgmesh/topology"
)

// Open connects to the cluster c describes. The caller closes the broker.
func Open(ctx context.Context, c topology.Cluster, log *slog.Logger) (broker.Broker, error) {
	o := options{m: c.Options}
	var (
		b   broker.Broker
		err error
	)
	switch c.Kind {
	case topology.KindNATS:
		cfg := natsbroker.Config{URL: joinURLs(c.Endpoints), Logger: log}
		cfg.StreamPrefix = o.str("stream_prefix")
		cfg.MaxAckPending = o.int("max_ack_pending")
		cfg.MaxBatch = o.int("max_batch")
		streams, serr := oldStreamOptions(&o, c.Streams)
		if serr != nil {
			return nil, fmt.Errorf("brokers: cluster %q: %w", c.Name, serr)
		}
		cfg.Streams = streams
		if err := o.done(); err != nil {
			return nil, fmt.Errorf("brokers: cluster %q: %w", c.Name, err)
		}
		b, err = natsbroker.New(ctx, cfg)
	case topology.KindKafka:
		cfg := kafkabroker.Config{Brokers: c.Endpoints, Logger: log}
		cfg.ClientID = o.str("client_id")
		cfg.Partitions = o.int("partitions")
		cfg.ReplicationFactor = o.int("replication_factor")
		if err := o.done(); err != nil {
			return nil, fmt.Errorf("brokers: cluster %q: %w", c.Name, err)
		}
		b, err = kafkabroker.New(ctx, cfg)
	case topology.KindRocketMQ:
		cfg := rocketmqbroker.Config{NameServers: c.Endpoints, Logger: log}
		cfg.GroupPrefix = o.str("group_prefix")
		cfg.Retries = o.int("retries")
		cfg.MaxMessageSize = o.int("max_message_size")
		cfg.MaxBatch = o.int("max_batch")
		if err := o.done(); err != nil {
			return nil, fmt.Errorf("brokers: cluster %q: %w", c.Name, err)
		}
		b, err = rocketmqbroker.New(ctx, cfg)
	default:
		return nil, fmt.Errorf("brokers: cluster %q: kind %q is not supported by this build", c.Name, c.Kind)
	}
	if err != nil {
		return nil, fmt.Errorf("brokers: cluster %q: %w", c.Name, err)
	}
	return b, nil
}

// oldStreamOptions folds the options replicas and max_age, the older
// spelling of the streams settings, into a copy of s. Setting one both ways
// is an error.
func oldStreamOptions(o *options, s *topology.Streams) (*topology.Streams, error) {
	replicas, age := o.int("replicas"), o.dur("max_age")
	if o.m["replicas"] == "" && o.m["max_age"] == "" {
		return s, nil
	}
	out := topology.Streams{}
	if s != nil {
		out = *s
	}
	if o.m["replicas"] != "" {
		if out.Replicas != 0 {
			return nil, fmt.Errorf("option replicas and streams.replicas both set; keep streams.replicas")
		}
		out.Replicas = replicas
	}
	if o.m["max_age"] != "" {
		if out.MaxAge != nil {
			return nil, fmt.Errorf("option max_age and streams.max_age both set; keep streams.max_age")
		}
		out.MaxAge = &age
	}
	if err := out.Validate("options"); err != nil {
		return nil, err
	}
	return &out, nil
}

func joinURLs(eps []string) string {
	s := ""
	for i, e := range eps {
		if i > 0 {
			s += ","
		}
		s += e
	}
	return s
}

// options reads adapter options and remembers which were used and the
// first bad value.
type options struct {
	m    map[string]string
	used map[string]bool
	err  error
}

func (o *options) str(k string) string {
	if o.used == nil {
		o.used = map[string]bool{}
	}
	o.used[k] = true
	return o.m[k]
}

func (o *options) int(k string) int {
	v := o.str(k)
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil && o.err == nil {
		o.err = fmt.Errorf("option %s=%q: not a whole number", k, v)
	}
	return n
}

func (o *options) dur(k string) time.Duration {
	v := o.str(k)
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil && o.err == nil {
		o.err = fmt.Errorf("option %s=%q: not a duration (like 72h)", k, v)
	}
	return d
}

// done reports a bad value, or an option no adapter field read.
func (o *options) done() error {
	if o.err != nil {
		return o.err
	}
	for k := range o.m {
		if !o.used[k] {
			return fmt.Errorf("unknown option %q", k)
		}
	}
	return nil
}
