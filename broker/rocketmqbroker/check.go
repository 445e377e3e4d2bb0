package rocketmqbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"

	"github.com/msgmesh/msgmesh/broker"
)

var _ broker.Checker = (*Broker)(nil)

// Check implements broker.Checker: a name server must answer with the
// cluster's brokers, and the master of every broker it lists must answer a
// remoting request. ctx bounds the whole check. A cluster that cannot be
// reached gives an error wrapping broker.ErrUnavailable that names the
// server or broker.
func (b *Broker) Check(ctx context.Context) error {
	if b.isClosed() {
		return fmt.Errorf("rocketmqbroker: check: %w", broker.ErrClosed)
	}
	var errs []error
	for _, ns := range b.nameServers {
		masters, err := clusterMasters(ctx, ns)
		if err != nil {
			errs = append(errs, fmt.Errorf("name server %s: %w", ns, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		for _, m := range masters {
			if m.addr == "" {
				return fmt.Errorf("rocketmqbroker: broker %s has no master (name server %s): %w", m.name, ns, broker.ErrUnavailable)
			}
			if err := probe(ctx, m.addr); err != nil {
				return fmt.Errorf("rocketmqbroker: broker %s at %s does not answer: %w: %w", m.name, m.addr, broker.ErrUnavailable, err)
			}
		}
		return nil
	}
	return fmt.Errorf("rocketmqbroker: no name server answers: %w: %w", broker.ErrUnavailable, errors.Join(errs...))
}

// master is one broker of the cluster and its master's address ("" if it
// has none).
type master struct{ name, addr string }

// clusterMasters asks the name server at addr for the cluster info
// (GET_BROKER_CLUSTER_INFO) and returns every broker's master, sorted by
// broker name. No broker at all is an error: nothing could be stored.
func clusterMasters(ctx context.Context, addr string) ([]master, error) {
	ans, err := request(ctx, addr, codeGetBrokerClusterInfo)
	if err != nil {
		return nil, err
	}
	if ans.Code != 0 {
		return nil, fmt.Errorf("cluster info refused (code %d): %s", ans.Code, ans.Remark)
	}
	// RocketMQ writes the body with fastjson, whose maps with integer keys
	// (brokerAddrs: broker id → address) have unquoted keys: {0:"..."}.
	body := unquotedKey.ReplaceAll(ans.Body, []byte(`$1"$2":`))
	var info struct {
		BrokerAddrTable map[string]struct {
			BrokerAddrs map[string]string `json:"brokerAddrs"`
		} `json:"brokerAddrTable"`
	}
	if err := json.Unmarshal(body, &info); err != nil {
		return nil, fmt.Errorf("cluster info: %w", err)
	}
	if len(info.BrokerAddrTable) == 0 {
		return nil, errors.New("the name server knows no broker")
	}
	out := make([]master, 0, len(info.BrokerAddrTable))
	for name, bd := range info.BrokerAddrTable {
		out = append(out, master{name: name, addr: bd.BrokerAddrs["0"]}) // broker id 0 is the master
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// unquotedKey matches an unquoted integer object key of fastjson's output.
var unquotedKey = regexp.MustCompile(`([{,]\s*)(-?\d+)\s*:`)
