package ctrlplane

import (
	"cmp"
	"context"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
)

// Traffic reports (docs/ctrlplane.md, "Traffic reports").
//
// A sidecar's lease renewal carries its counters (cumulative since it
// started, with a boot id) and the registrations it serves. The control
// plane keeps them in memory only: they are telemetry, not state. A
// restart forgets them (the page shows the rates again after two
// renewals), and each replica holds the reports of the renewals it took:
// behind a load balancer that spreads renewals, each replica's view has
// gaps, which lengthen its intervals but do not skew its rates, since
// rates are counter differences over the time between the samples.
const (
	// trafficWindow is how far back the samples of an instance go.
	trafficWindow = 10 * time.Minute
	// trafficStep is the sampling interval the ring is sized for: sidecars
	// renew every LeaseTTL/3, 5 s by default. Samples are kept at least
	// half of it apart (record), so a sidecar renewing fast cannot fill
	// the ring with near-duplicates; it only shortens what the ring
	// covers, down to maxSamples × trafficStep/2.
	trafficStep = 5 * time.Second
	// maxSamples bounds an instance's ring: a window of 5 s samples and
	// a few more. With samples of about 130 bytes, an instance costs at
	// most about 17 KB (plus its last reported registrations).
	maxSamples = int(trafficWindow/trafficStep) + 8
	// rateWindow is what InstanceTraffic.LastMinute covers.
	rateWindow = time.Minute
)

// trafficBook holds the recent traffic reports of every instance.
type trafficBook struct {
	mu   sync.Mutex
	apps map[string]map[string]*instanceTraffic // app → instance id
}

// instanceTraffic is one instance's samples, oldest first, and the
// registrations its newest report named.
type instanceTraffic struct {
	samples []trafficSample
	started time.Time
	apps    []api.AppBindings
	rules   map[string]api.RuleCounters // the newest report's
}

// trafficSample is one report, at the control plane's time.
type trafficSample struct {
	at       time.Time
	boot     string
	c        api.TrafficCounters
	inFlight int
}

func newTrafficBook() *trafficBook {
	return &trafficBook{apps: map[string]map[string]*instanceTraffic{}}
}

// record adds a report of instance id of app, received at now.
func (b *trafficBook) record(app, id string, r *api.TrafficReport, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ins := b.apps[app]
	if ins == nil {
		ins = map[string]*instanceTraffic{}
		b.apps[app] = ins
	}
	it := ins[id]
	if it == nil {
		it = &instanceTraffic{}
		ins[id] = it
	}
	s := trafficSample{at: now, boot: r.Boot, c: r.Counters, inFlight: r.InFlight}
	// The newest sample stays open (a new report replaces it) until it is
	// half a step after the one before: samples are at least that far
	// apart, but for the newest, however often a sidecar renews.
	if n := len(it.samples); n > 1 && now.Sub(it.samples[n-2].at) < trafficStep/2 {
		it.samples[n-1] = s
	} else {
		it.samples = append(it.samples, s)
	}
	cut := 0
	for cut < len(it.samples)-1 && now.Sub(it.samples[cut].at) > trafficWindow {
		cut++
	}
	cut = max(cut, len(it.samples)-maxSamples)
	it.samples = slices.Delete(it.samples, 0, cut)
	it.started, it.apps, it.rules = r.Started, r.Apps, r.Rules
}

// prune forgets the instances that sent no report within the window.
func (b *trafficBook) prune(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for app, ins := range b.apps {
		for id, it := range ins {
			if now.Sub(it.samples[len(it.samples)-1].at) > trafficWindow {
				delete(ins, id)
			}
		}
		if len(ins) == 0 {
			delete(b.apps, app)
		}
	}
}

// view is the traffic of app's instances ins (the app record's, in its
// order) at now, and the topology their reports name.
func (b *trafficBook) view(app string, ins []api.Instance, now time.Time) api.AppTraffic {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := api.AppTraffic{App: app, Window: trafficWindow.String(), WindowSeconds: trafficWindow.Seconds(), Step: trafficStep.String(), Now: now,
		Instances: make([]api.InstanceTraffic, 0, len(ins))}
	topics := map[string]*api.TopicView{}
	for _, in := range ins {
		v := api.InstanceTraffic{ID: in.ID, State: in.State(), Weight: in.Weight}
		it := b.apps[app][in.ID]
		if it == nil {
			out.Instances = append(out.Instances, v)
			continue
		}
		last := it.samples[len(it.samples)-1]
		v.LastReport, v.Boot, v.Started, v.Totals, v.InFlight = last.at, last.boot, it.started, last.c, last.inFlight
		v.LastMinute = it.rates(now.Add(-rateWindow))
		v.Rules = maps.Clone(it.rules)
		for i := 1; i < len(it.samples); i++ {
			p, q := it.samples[i-1], it.samples[i]
			if now.Sub(p.at) > trafficWindow {
				continue
			}
			v.Series = append(v.Series, api.TrafficPoint{At: q.at, Rates: ratesOf(diff(p, q), q.at.Sub(p.at)), InFlight: q.inFlight})
		}
		out.Instances = append(out.Instances, v)
		addTopology(topics, in.ID, it.apps)
	}
	out.Topology = make([]api.TopicView, 0, len(topics))
	for _, t := range topics {
		out.Topology = append(out.Topology, *t)
	}
	slices.SortFunc(out.Topology, func(a, b api.TopicView) int { return cmp.Compare(a.Topic, b.Topic) })
	return out
}

// rates are the rates over the intervals that start at or after from;
// nil if there is none.
func (it *instanceTraffic) rates(from time.Time) *api.TrafficRates {
	var sum api.TrafficCounters
	var d time.Duration
	for i := 1; i < len(it.samples); i++ {
		p, q := it.samples[i-1], it.samples[i]
		if p.at.Before(from) {
			continue
		}
		sum = add(sum, diff(p, q))
		d += q.at.Sub(p.at)
	}
	if d <= 0 {
		return nil
	}
	r := ratesOf(sum, d)
	return &r
}

// diff is what q counted since p: q's counters minus p's, or all of q's
// when the sidecar restarted in between (another boot, or a counter that
// went down), since a restarted sidecar counts from zero.
func diff(p, q trafficSample) api.TrafficCounters {
	a, b := p.c, q.c
	if p.boot != q.boot || b.FromBroker < a.FromBroker || b.Forwarded < a.Forwarded || b.Fallbacks < a.Fallbacks ||
		b.FromSiblings < a.FromSiblings || b.Delivered < a.Delivered || b.Acked < a.Acked || b.Nacked < a.Nacked ||
		b.TimedOut < a.TimedOut || b.Errors < a.Errors || b.Published < a.Published {
		return b
	}
	return api.TrafficCounters{FromBroker: b.FromBroker - a.FromBroker, Forwarded: b.Forwarded - a.Forwarded,
		Fallbacks: b.Fallbacks - a.Fallbacks, FromSiblings: b.FromSiblings - a.FromSiblings,
		Delivered: b.Delivered - a.Delivered, Acked: b.Acked - a.Acked, Nacked: b.Nacked - a.Nacked,
		TimedOut: b.TimedOut - a.TimedOut, Errors: b.Errors - a.Errors, Published: b.Published - a.Published}
}

func add(a, b api.TrafficCounters) api.TrafficCounters {
	return api.TrafficCounters{FromBroker: a.FromBroker + b.FromBroker, Forwarded: a.Forwarded + b.Forwarded,
		Fallbacks: a.Fallbacks + b.Fallbacks, FromSiblings: a.FromSiblings + b.FromSiblings,
		Delivered: a.Delivered + b.Delivered, Acked: a.Acked + b.Acked, Nacked: a.Nacked + b.Nacked,
		TimedOut: a.TimedOut + b.TimedOut, Errors: a.Errors + b.Errors, Published: a.Published + b.Published}
}

// ratesOf divides the counts c by d.
func ratesOf(c api.TrafficCounters, d time.Duration) api.TrafficRates {
	sec := d.Seconds()
	per := func(n uint64) float64 { return float64(n) / sec }
	r := api.TrafficRates{Seconds: sec, FromBroker: per(c.FromBroker), Kept: per(c.Kept()), Forwarded: per(c.Forwarded),
		FromSiblings: per(c.FromSiblings), Delivered: per(c.Delivered), Acked: per(c.Acked), Nacked: per(c.Nacked),
		TimedOut: per(c.TimedOut), Errors: per(c.Errors), Published: per(c.Published), KeptShare: -1}
	if c.FromBroker > 0 {
		r.KeptShare = float64(c.Kept()) / float64(c.FromBroker)
	}
	return r
}

// addTopology adds the registrations instance id reported to topics.
func addTopology(topics map[string]*api.TopicView, id string, apps []api.AppBindings) {
	get := func(topic, cluster string) *api.TopicView {
		t := topics[topic]
		if t == nil {
			t = &api.TopicView{Topic: topic, Cluster: cluster}
			topics[topic] = t
		}
		if !slices.Contains(t.Instances, id) {
			t.Instances = append(t.Instances, id)
		}
		return t
	}
	for _, a := range apps {
		for _, p := range a.Produces {
			t := get(p.Topic, p.Cluster)
			if !slices.Contains(t.Producers, a.App) {
				t.Producers = append(t.Producers, a.App)
				slices.Sort(t.Producers)
			}
		}
		for _, c := range a.Consumes {
			t := get(c.Topic, c.Cluster)
			i := slices.IndexFunc(t.Consumers, func(v api.ConsumerView) bool { return v.App == a.App && v.Group == c.Group })
			if i < 0 {
				t.Consumers = append(t.Consumers, api.ConsumerView{App: a.App, Group: c.Group})
				slices.SortFunc(t.Consumers, func(x, y api.ConsumerView) int {
					return cmp.Or(cmp.Compare(x.App, y.App), cmp.Compare(x.Group, y.Group))
				})
				i = slices.IndexFunc(t.Consumers, func(v api.ConsumerView) bool { return v.App == a.App && v.Group == c.Group })
			}
			if c.Lag != nil && (t.Consumers[i].Lag == nil || *c.Lag > *t.Consumers[i].Lag) {
				lag := *c.Lag
				t.Consumers[i].Lag = &lag
			}
		}
	}
}

// handleTraffic answers GET /v1/apps/{app}/traffic (operators).
func (s *Server) handleTraffic(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	app, err := pathApp(r)
	if err != nil {
		return err
	}
	a, _, err := s.getApp(ctx, app)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.traffic.view(app, a.Instances, s.now()))
	return nil
}
