package msgmesh

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
)

// topicCheckTimeout bounds asking the clusters about a registration's
// topic names (broker.TopicChecker); a cluster that does not answer in
// time does not block the registration.
const topicCheckTimeout = 3 * time.Second

// others is regs without app's own registration.
func others(regs []registry.Registration, app string) []registry.Registration {
	return slices.DeleteFunc(slices.Clone(regs), func(r registry.Registration) bool { return r.App == app })
}

// checkPolicies refuses a consume binding whose effective dead-letter
// policy differs from the one another app registered for the same
// (group, topic): deliveries of a group are not tied to one app, so the
// policy could not be told apart.
func (sc *Sidecar) checkPolicies(reg registry.Registration, others []registry.Registration) error {
	type owner struct {
		app string
		p   deadLetterPolicy
	}
	have := map[routeKey]owner{}
	for _, r := range others {
		for _, b := range r.Consume {
			k := routeKey{group: b.Group, topic: b.Topic}
			if _, ok := have[k]; !ok {
				have[k] = owner{r.App, sc.policyFor(b)}
			}
		}
	}
	for i, b := range reg.Consume {
		o, ok := have[routeKey{group: b.Group, topic: b.Topic}]
		if p := sc.policyFor(b); ok && p != o.p {
			return fmt.Errorf("%w: consume[%d]: group %q on topic %q has max_attempts %d, dead_letter_topic %q and tags %q in app %q's registration, not %d, %q and %q; a group has one dead-letter policy and one tag filter per topic, so register the same values (or change both)",
				ErrInvalid, i, b.Group, b.Topic, o.p.maxAttempts, o.p.topic, o.p.tags, o.app, p.maxAttempts, p.topic, p.tags)
		}
	}
	return nil
}

// checkBrokerGroups refuses a consume binding whose broker group (its
// broker_group, else its group) its cluster cannot name
// (broker.GroupNameChecker), that differs from the broker group another app
// registered for the same (group, topic), or that another group already
// uses on the same topic: two groups of the sidecar in one broker-side
// group would split each other's messages.
func (sc *Sidecar) checkBrokerGroups(reg registry.Registration, others []registry.Registration) error {
	type owner struct {
		app, group, brokerGroup string
	}
	byBinding := map[routeKey]owner{}
	byName := map[[3]string]owner{} // (cluster, topic, broker name) → first user
	note := func(app string, b registry.Binding) {
		o := owner{app, b.Group, b.BrokerGroup}
		if _, ok := byBinding[routeKey{group: b.Group, topic: b.Topic}]; !ok {
			byBinding[routeKey{group: b.Group, topic: b.Topic}] = o
		}
		k := [3]string{sc.clusterOf(b.Topic), b.Topic, cmp.Or(b.BrokerGroup, b.Group)}
		if _, ok := byName[k]; !ok {
			byName[k] = o
		}
	}
	for _, r := range others {
		for _, b := range r.Consume {
			note(r.App, b)
		}
	}
	for i, b := range reg.Consume {
		if b.BrokerGroup != "" {
			if gc, ok := sc.cfg.Brokers[sc.clusterOf(b.Topic)].(broker.GroupNameChecker); ok {
				if err := gc.CheckBrokerGroup(b.BrokerGroup); err != nil {
					return fmt.Errorf("%w: consume[%d].broker_group: cluster %q: %w", ErrInvalid, i, sc.clusterOf(b.Topic), err)
				}
			}
		}
		if o, ok := byBinding[routeKey{group: b.Group, topic: b.Topic}]; ok && o.brokerGroup != b.BrokerGroup {
			return fmt.Errorf("%w: consume[%d]: group %q on topic %q has broker_group %q in app %q's registration, not %q; a group consumes a topic in one broker-side group, so register the same value (or change both)",
				ErrInvalid, i, b.Group, b.Topic, o.brokerGroup, o.app, b.BrokerGroup)
		}
		name := cmp.Or(b.BrokerGroup, b.Group)
		if o, ok := byName[[3]string{sc.clusterOf(b.Topic), b.Topic, name}]; ok && o.group != b.Group {
			return fmt.Errorf("%w: consume[%d]: broker group %q on topic %q is already used by group %q (app %q); two groups in one broker-side group would split each other's messages",
				ErrInvalid, i, name, b.Topic, o.group, o.app)
		}
		note(reg.App, b)
	}
	return nil
}

// checkTopics asks each cluster whose adapter is a broker.TopicChecker
// about the topics reg puts on it.
func (sc *Sidecar) checkTopics(ctx context.Context, reg registry.Registration, others []registry.Registration) error {
	mine, theirs := sc.topicsByCluster([]registry.Registration{reg}), sc.topicsByCluster(others)
	clusters := make([]string, 0, len(mine))
	for c := range mine {
		clusters = append(clusters, c)
	}
	slices.Sort(clusters)
	for _, c := range clusters {
		tc, ok := sc.cfg.Brokers[c].(broker.TopicChecker)
		if !ok {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, topicCheckTimeout)
		err := tc.CheckTopics(cctx, mine[c], theirs[c])
		cancel()
		switch {
		case errors.Is(err, broker.ErrTopicConflict):
			return fmt.Errorf("%w: cluster %q cannot hold the topics of this registration: %w", ErrInvalid, c, err)
		case err != nil:
			sc.log.Warn("could not check the registration's topic names with the cluster; registering anyway",
				"app", reg.App, "cluster", c, "err", err)
		}
	}
	return nil
}

// topicsByCluster lists, per cluster and sorted, every topic regs use:
// produced, consumed, and the consume bindings' dead-letter topics.
func (sc *Sidecar) topicsByCluster(regs []registry.Registration) map[string][]string {
	out := map[string][]string{}
	add := func(t string) {
		c := sc.clusterOf(t)
		if !slices.Contains(out[c], t) {
			out[c] = append(out[c], t)
		}
	}
	for _, r := range regs {
		for _, b := range r.Produce {
			add(b.Topic)
		}
		for _, b := range r.Consume {
			add(b.Topic)
			add(sc.policyFor(b).topic)
		}
	}
	for _, ts := range out {
		slices.Sort(ts)
	}
	return out
}

// checkGroups asks the cluster of each topic reg consumes, when its
// adapter is a broker.GroupChecker, whether every group the registrations
// (reg and others) consume the topic with can have a consumer there: a
// NATS work-queue stream takes one. A conflict refuses the registration
// (400 INVALID) instead of starting an upstream consumer that could only
// retry for ever; a cluster that cannot be asked does not block it.
func (sc *Sidecar) checkGroups(ctx context.Context, reg registry.Registration, others []registry.Registration) error {
	groups := map[string][]string{} // topic → groups
	for _, r := range append([]registry.Registration{reg}, others...) {
		for _, b := range r.Consume {
			if !slices.Contains(groups[b.Topic], b.Group) {
				groups[b.Topic] = append(groups[b.Topic], b.Group)
			}
		}
	}
	for _, b := range reg.Consume {
		gc, ok := sc.cfg.Brokers[sc.clusterOf(b.Topic)].(broker.GroupChecker)
		if !ok {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, topicCheckTimeout)
		err := gc.CheckGroups(cctx, b.Topic, groups[b.Topic])
		cancel()
		switch {
		case errors.Is(err, broker.ErrGroupConflict):
			return fmt.Errorf("%w: consume %s: %w", ErrInvalid, b.Group+":"+b.Topic, err)
		case err != nil:
			sc.log.Warn("could not check the registration's consumer groups with the cluster; registering anyway",
				"app", reg.App, "topic", b.Topic, "err", err)
		}
	}
	return nil
}
