package flowctl

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/msgmesh/msgmesh/topology"
)

// Config is the whole flow-control configuration: the `limits:` section of
// the sidecar's config file, and what the control plane pushes. The zero
// value limits nothing (and has a breaker with the default settings).
type Config struct {
	// Topics limits publishes, by topic. A key is a topic or a pattern in
	// the syntax of topology.Match ("orders.*": one token, "orders.>": one
	// or more trailing tokens). An exact key wins over patterns; among
	// matching patterns the most specific wins: the one with most literal
	// tokens, then one without '>' over one with, then the alphabetically
	// first. A pattern's limits apply to each matching topic separately
	// (each topic has its own rate).
	Topics map[string]TopicLimits `yaml:"topics,omitempty" json:"topics,omitempty"`
	// Groups limits deliveries, by consumer group. A key is either
	// "group", whose limits the group shares across all its topics (one
	// rate and one in-flight bound for the group as a whole), or
	// "group:topic", where topic may be a pattern as for Topics, whose
	// limits apply to that group on each matching topic separately. For a
	// (group, topic), "group:topic" wins over "group:pattern" (most
	// specific first), which wins over "group".
	Groups map[string]GroupLimits `yaml:"groups,omitempty" json:"groups,omitempty"`
	// Breaker configures the circuit breaker of every broker cluster.
	Breaker BreakerConfig `yaml:"breaker,omitempty" json:"breaker,omitempty"`
	// MaxMessageBytes is the size limit of topics whose TopicLimits do not
	// set one. Zero: no limit here (the sidecar's own MaxMessageSize
	// applies).
	MaxMessageBytes int `yaml:"max_message_bytes,omitempty" json:"max_message_bytes,omitempty"`
}

// OnLimit values.
const (
	// OnLimitWait makes a publish over the rate wait for its turn, up to
	// its deadline; one that cannot get a turn before its deadline fails
	// at once with ErrRateLimited.
	OnLimitWait = "wait"
	// OnLimitReject fails a publish over the rate at once with
	// ErrRateLimited.
	OnLimitReject = "reject"
)

// TopicLimits are the publish limits of one topic.
type TopicLimits struct {
	// PublishRate is the sustained rate in messages per second. Zero:
	// unlimited.
	PublishRate float64 `yaml:"publish_rate,omitempty" json:"publish_rate,omitempty"`
	// Burst is how many publishes may go at once above the rate. Zero: a
	// tenth of a second's worth of PublishRate, at least 1.
	Burst int `yaml:"burst,omitempty" json:"burst,omitempty"`
	// OnLimit is what a publish over the rate does: OnLimitWait (zero
	// value) or OnLimitReject.
	OnLimit string `yaml:"on_limit,omitempty" json:"on_limit,omitempty"`
	// MaxMessageBytes bounds the body of a message. Zero: Config's
	// MaxMessageBytes.
	MaxMessageBytes int `yaml:"max_message_bytes,omitempty" json:"max_message_bytes,omitempty"`
}

// GroupLimits are the delivery limits of a consumer group.
type GroupLimits struct {
	// DeliveryRate caps deliveries in messages per second. Zero: unlimited.
	DeliveryRate float64 `yaml:"delivery_rate,omitempty" json:"delivery_rate,omitempty"`
	// Burst is how many deliveries may go at once above the rate. Zero: a
	// tenth of a second's worth of DeliveryRate, at least 1.
	Burst int `yaml:"burst,omitempty" json:"burst,omitempty"`
	// MaxInflight bounds the deliveries handed to the group's apps and not
	// settled yet. Zero: unbounded here (each connection's own in-flight
	// bound still applies).
	MaxInflight int `yaml:"max_inflight,omitempty" json:"max_inflight,omitempty"`
}

// BreakerConfig configures the circuit breaker of each broker cluster.
type BreakerConfig struct {
	// Failures is how many consecutive failures open the breaker. Zero: 5.
	// Negative: the breaker never opens.
	Failures int `yaml:"failures,omitempty" json:"failures,omitempty"`
	// OpenFor is how long an open breaker fails requests fast before it
	// lets probes through (half-open). It is also how long a half-open
	// breaker waits for its probes' outcomes before it lets new ones
	// through. Zero: 5s. In YAML a duration string ("5s").
	OpenFor time.Duration `yaml:"open_for,omitempty" json:"open_for,omitempty"`
	// HalfOpenProbes is how many requests a half-open breaker lets through,
	// and how many of them must succeed to close it; one failure opens it
	// again. Zero: 1.
	HalfOpenProbes int `yaml:"half_open_probes,omitempty" json:"half_open_probes,omitempty"`
}

// Breaker defaults.
const (
	DefaultFailures       = 5
	DefaultOpenFor        = 5 * time.Second
	DefaultHalfOpenProbes = 1
)

func (b BreakerConfig) withDefaults() BreakerConfig {
	if b.Failures == 0 {
		b.Failures = DefaultFailures
	}
	if b.OpenFor == 0 {
		b.OpenFor = DefaultOpenFor
	}
	if b.HalfOpenProbes == 0 {
		b.HalfOpenProbes = DefaultHalfOpenProbes
	}
	return b
}

// Validate checks every key and value, and returns all problems found,
// each wrapping ErrInvalidConfig.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	rate := func(field string, r float64, burst int) {
		if r < 0 || math.IsNaN(r) || math.IsInf(r, 0) {
			bad("%s: rate %g: must be a finite number >= 0", field, r)
		}
		if burst < 0 {
			bad("%s: burst %d: must be >= 0", field, burst)
		}
	}
	for _, k := range sortedKeys(c.Topics) {
		l := c.Topics[k]
		field := fmt.Sprintf("topics[%q]", k)
		if err := checkPattern(k); err != nil {
			bad("%s: %v", field, err)
		}
		rate(field, l.PublishRate, l.Burst)
		if l.OnLimit != "" && l.OnLimit != OnLimitWait && l.OnLimit != OnLimitReject {
			bad("%s: on_limit %q: must be %q or %q", field, l.OnLimit, OnLimitWait, OnLimitReject)
		}
		if l.MaxMessageBytes < 0 {
			bad("%s: max_message_bytes %d: must be >= 0", field, l.MaxMessageBytes)
		}
	}
	for _, k := range sortedKeys(c.Groups) {
		l := c.Groups[k]
		field := fmt.Sprintf("groups[%q]", k)
		group, topic, pair := strings.Cut(k, ":")
		switch {
		case group == "":
			bad("%s: the group is empty; keys are \"group\" or \"group:topic\"", field)
		case strings.ContainsAny(group, "*>"):
			bad("%s: the group %q cannot be a pattern; only the topic part can", field, group)
		case pair:
			if err := checkPattern(topic); err != nil {
				bad("%s: topic: %v", field, err)
			}
		}
		rate(field, l.DeliveryRate, l.Burst)
		if l.MaxInflight < 0 {
			bad("%s: max_inflight %d: must be >= 0", field, l.MaxInflight)
		}
	}
	if c.Breaker.OpenFor < 0 {
		bad("breaker: open_for %s: must be >= 0", c.Breaker.OpenFor)
	}
	if c.Breaker.HalfOpenProbes < 0 {
		bad("breaker: half_open_probes %d: must be >= 0", c.Breaker.HalfOpenProbes)
	}
	if c.MaxMessageBytes < 0 {
		bad("max_message_bytes %d: must be >= 0", c.MaxMessageBytes)
	}
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// checkPattern checks a topic or topic pattern (topology.Match syntax).
func checkPattern(p string) error {
	if p == "" {
		return errors.New("empty topic")
	}
	toks := strings.Split(p, ".")
	for i, tk := range toks {
		switch {
		case tk == "":
			return fmt.Errorf("%q: empty token", p)
		case tk == ">" && i != len(toks)-1:
			return fmt.Errorf("%q: '>' must be the last token", p)
		case strings.ContainsAny(tk, "*>") && len(tk) > 1:
			return fmt.Errorf("%q: wildcard inside token %q", p, tk)
		}
	}
	return nil
}

func isPattern(p string) bool { return strings.ContainsAny(p, "*>") }

// patterned is one pattern key and its value.
type patterned[V any] struct {
	pattern string
	v       V
}

// specificity orders patterns most specific first (see Config.Topics).
func specificity[V any](a, b patterned[V]) int {
	lit := func(p string) (n int) {
		for _, tk := range strings.Split(p, ".") {
			if tk != "*" && tk != ">" {
				n++
			}
		}
		return n
	}
	if c := cmp.Compare(lit(b.pattern), lit(a.pattern)); c != 0 {
		return c
	}
	ga, gb := strings.HasSuffix(a.pattern, ">"), strings.HasSuffix(b.pattern, ">")
	if ga != gb {
		if ga {
			return 1
		}
		return -1
	}
	return strings.Compare(a.pattern, b.pattern)
}

// compiled is a validated Config indexed for lookups. It is immutable.
type compiled struct {
	cfg        Config
	breaker    BreakerConfig // defaults applied
	topicExact map[string]TopicLimits
	topicPats  []patterned[TopicLimits]
	groupWhole map[string]GroupLimits              // "group" keys
	groupExact map[[2]string]GroupLimits           // "group:topic" keys
	groupPats  map[string][]patterned[GroupLimits] // group → its "group:pattern" keys
}

func compile(cfg Config) (*compiled, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &compiled{
		cfg:        cfg,
		breaker:    cfg.Breaker.withDefaults(),
		topicExact: map[string]TopicLimits{},
		groupWhole: map[string]GroupLimits{},
		groupExact: map[[2]string]GroupLimits{},
		groupPats:  map[string][]patterned[GroupLimits]{},
	}
	for k, l := range cfg.Topics {
		if isPattern(k) {
			c.topicPats = append(c.topicPats, patterned[TopicLimits]{k, l})
		} else {
			c.topicExact[k] = l
		}
	}
	slices.SortFunc(c.topicPats, specificity)
	for k, l := range cfg.Groups {
		group, topic, pair := strings.Cut(k, ":")
		switch {
		case !pair:
			c.groupWhole[group] = l
		case isPattern(topic):
			c.groupPats[group] = append(c.groupPats[group], patterned[GroupLimits]{topic, l})
		default:
			c.groupExact[[2]string{group, topic}] = l
		}
	}
	for _, ps := range c.groupPats {
		slices.SortFunc(ps, specificity)
	}
	return c, nil
}

// topicLimits returns the limits of topic (size default applied).
func (c *compiled) topicLimits(topic string) TopicLimits {
	l, ok := c.topicExact[topic]
	if !ok {
		for _, p := range c.topicPats {
			if topology.Match(p.pattern, topic) {
				l, ok = p.v, true
				break
			}
		}
	}
	if l.MaxMessageBytes == 0 {
		l.MaxMessageBytes = c.cfg.MaxMessageBytes
	}
	return l
}

// groupLimits returns the limits of (group, topic) and the key of the
// state they are kept in: the group alone for a "group" key, else the pair.
func (c *compiled) groupLimits(group, topic string) (GroupLimits, stateKey, bool) {
	if l, ok := c.groupExact[[2]string{group, topic}]; ok {
		return l, stateKey{group, topic}, true
	}
	for _, p := range c.groupPats[group] {
		if topology.Match(p.pattern, topic) {
			return p.v, stateKey{group, topic}, true
		}
	}
	if l, ok := c.groupWhole[group]; ok {
		return l, stateKey{group, wholeGroup}, true
	}
	return GroupLimits{}, stateKey{}, false
}

// wholeGroup is the topic part of the state key of a "group" key: a value
// no topic can have.
const wholeGroup = "\x00"

// stateKey names one group limiter state: (group, topic), or (group,
// wholeGroup) for limits the group shares across its topics.
type stateKey [2]string

// burstOf is the burst to use for rate r and configured burst b.
func burstOf(r float64, b int) int {
	if b > 0 {
		return b
	}
	return max(1, int(math.Ceil(r/10)))
}
