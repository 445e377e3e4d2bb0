package observe

import (
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Other is the label value that distinct values beyond the cap fold into.
const Other = "other"

// DefaultMaxSeries is the default cap on distinct label sets per instrument
// family (WithMaxSeries).
const DefaultMaxSeries = 1000

// maxFolded bounds the label sets that exist only because of folding (the
// enumerated labels — reason, outcome — kept beside "other"); past it every
// label folds.
const maxFolded = 64

// labels is one label set's values, in the order of its family's keys.
type labels [3]string

// seriesOpts are the pre-built measurement options of one label set, so a
// recording allocates nothing: the attribute set is built once, and the
// options are slices passed with ... (no variadic array per call).
//
// It also keeps the values of its family's counted instruments
// (family.counted) for this label set, which a callback reports at each
// collection (Metrics.observeCounts).
type seriesOpts struct {
	add []metric.AddOption
	rec []metric.RecordOption
	obs []metric.ObserveOption

	counts [maxCounted]atomic.Int64
	// seen[i]: counts[i] was recorded, if only with 0; a series exists
	// from its first recording on, as a synchronous instrument's does.
	seen [maxCounted]atomic.Bool
}

// maxCounted bounds a family's counted instruments.
const maxCounted = 3

// count adds n to the value of the family's counted instrument i.
func (o *seriesOpts) count(i int, n int64) {
	if !o.seen[i].Load() {
		o.seen[i].Store(true) // first: a collection now reports 0, not nothing, as before an Add
	}
	o.counts[i].Add(n)
}

// family is the set of label sets one group of instruments records with,
// capped at max. Instruments that are always recorded together share a
// family (for instance messages in, bytes in and publish latency, all by
// topic), so the cap holds for each of them.
//
// Label values past the cap fold into Other: the free labels (topic, group,
// cluster) become "other" and the enumerated ones (reason, outcome) stay,
// unless those folded sets pass maxFolded too. So an instrument never has
// more than max + maxFolded + 1 series, whatever its callers pass.
type family struct {
	keys []attribute.Key
	enum []bool // enum[i]: keys[i] is kept when folding
	max  int
	// counted are the instruments of the family whose values its label
	// sets keep (seriesOpts.counts, in this order) and a callback
	// observes: those recorded on every delivery, for which an atomic
	// add is much cheaper than the SDK's Add (it checks the attribute
	// set and looks it up in a map for every call). Set once by
	// NewMetrics.
	counted []metric.Int64Observable

	mu     sync.RWMutex
	sets   map[labels]*seriesOpts
	folded int // sets admitted by folding
}

func newFamily(max int, keys ...attribute.Key) *family {
	return &family{keys: keys, enum: make([]bool, len(keys)), max: max, sets: make(map[labels]*seriesOpts)}
}

// enumerated marks keys kept as they are when a label set folds.
func (f *family) enumerated(keys ...attribute.Key) *family {
	for i, k := range f.keys {
		for _, e := range keys {
			if k == e {
				f.enum[i] = true
			}
		}
	}
	return f
}

// get returns the options of the label set vs (in the order of f.keys),
// admitting it if the cap allows, else its folded form.
func (f *family) get(vs labels) *seriesOpts {
	f.mu.RLock()
	o := f.sets[vs]
	f.mu.RUnlock()
	if o != nil {
		return o
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if o := f.sets[vs]; o != nil {
		return o
	}
	if len(f.sets)-f.folded < f.max {
		return f.admit(vs)
	}
	// Over the cap: fold the free labels, keep the enumerated ones.
	var fv labels
	for i := range f.keys {
		if f.enum[i] {
			fv[i] = vs[i]
		} else {
			fv[i] = Other
		}
	}
	if o := f.sets[fv]; o != nil {
		return o
	}
	if f.folded >= maxFolded {
		for i := range f.keys {
			fv[i] = Other
		}
		if o := f.sets[fv]; o != nil {
			return o
		}
	}
	f.folded++
	return f.admit(fv)
}

// admit builds and stores the options of vs. f.mu must be held.
func (f *family) admit(vs labels) *seriesOpts {
	kvs := make([]attribute.KeyValue, len(f.keys))
	for i, k := range f.keys {
		kvs[i] = k.String(vs[i])
	}
	opt := metric.WithAttributeSet(attribute.NewSet(kvs...))
	o := &seriesOpts{add: []metric.AddOption{opt}, rec: []metric.RecordOption{opt}, obs: []metric.ObserveOption{opt}}
	f.sets[vs] = o
	return o
}

// observe reports the values of f's counted instruments for every label
// set recorded with them.
func (f *family) observe(o metric.Observer) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, so := range f.sets {
		for i, inst := range f.counted {
			if so.seen[i].Load() {
				o.ObserveInt64(inst, so.counts[i].Load(), so.obs...)
			}
		}
	}
}
