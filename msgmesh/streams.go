package msgmesh

import (
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/msgmesh/msgmesh/broker"
)

// streamEntry is one topic in GET /v1/streams: its cluster and, when the
// cluster keeps topics in streams of their own (NATS JetStream), the
// stream and its settings in effect.
type streamEntry struct {
	Cluster string `json:"cluster"`
	broker.StreamInfo
	// Error says why the cluster could not describe the stream.
	Error string `json:"error,omitempty"`
}

// streamsTimeout bounds asking one cluster about one topic.
const streamsTimeout = 3 * time.Second

// handleStreams answers GET /v1/streams: every topic the registrations
// produce or consume, sorted, on a cluster whose adapter is a
// broker.StreamDescriber (the others keep their broker's own topic
// settings, which msgmesh neither sets nor shows).
func (sc *Sidecar) handleStreams(w http.ResponseWriter, r *http.Request) {
	snap := sc.snap.Load()
	var topics []string
	for t := range snap.produce {
		topics = append(topics, t)
	}
	for k := range snap.consume {
		if !slices.Contains(topics, k.topic) {
			topics = append(topics, k.topic)
		}
	}
	slices.Sort(topics)
	out := []streamEntry{}
	for _, t := range topics {
		cluster := sc.clusterOf(t)
		d, ok := sc.cfg.Brokers[cluster].(broker.StreamDescriber)
		if !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(r.Context(), streamsTimeout)
		info, err := d.DescribeStream(ctx, t)
		cancel()
		e := streamEntry{Cluster: cluster, StreamInfo: info}
		if err != nil {
			e.Topic, e.Error = t, err.Error()
		}
		out = append(out, e)
	}
	writeJSON(w, http.StatusOK, out)
}
