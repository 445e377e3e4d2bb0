package registry

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/msgmesh/msgmesh/broker"
)

// Name limits (bytes).
const (
	maxNameLen  = 128 // app and group names
	maxTopicLen = 249 // Kafka's topic name limit
)

// MaxAttemptsLimit is the highest MaxAttempts a consume binding (and the
// sidecar's default) may set. There is no "unlimited": every message a
// group cannot process ends on a dead-letter topic. Broker adapters whose
// broker has a delivery limit of its own set it above this one, so that
// the broker's mechanism never acts before the sidecar's.
const MaxAttemptsLimit = 1000

// deadLetterSuffix ends every default dead-letter topic name.
const deadLetterSuffix = ".dlq"

// Binding is one (group, topic) pair: a producer group producing a topic or
// a consumer group consuming it. A consume binding also carries the
// group's dead-letter policy on that topic (docs/http-api.md); its two
// fields stay zero on produce bindings.
type Binding struct {
	Group string `json:"group"`
	Topic string `json:"topic"`
	// MaxAttempts is how many times a message is delivered to the group
	// (attempts end in a nack or a delivery timeout) before the sidecar
	// moves it to DeadLetterTopic. 0: the sidecar's default
	// (msgmesh.Config.MaxAttempts). Consume bindings only, 0 to
	// MaxAttemptsLimit.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// DeadLetterTopic is where the sidecar moves the group's poison
	// messages. Empty: DefaultDeadLetterTopic(Group, Topic). Consume
	// bindings only; a valid topic name other than Topic.
	DeadLetterTopic string `json:"dead_letter_topic,omitempty"`
	// BrokerGroup names the consumer group on the broker, verbatim: the
	// Kafka group id, the NATS durable consumer name, the RocketMQ
	// consumer group. Empty: derived from Group (docs/brokers.md). Set it
	// to move a service into the mesh inside the group its own clients
	// use. Consume bindings only; 1 to 249 letters, digits, '.', '_' or
	// '-', starting with a letter or digit (a broker may allow fewer:
	// NATS and RocketMQ refuse '.', and the sidecar asks them when the
	// app registers).
	BrokerGroup string `json:"broker_group,omitempty"`
	// Tags is the group's tag filter on the topic, a RocketMQ tag
	// subscription expression ("TagA || TagB"; "*" or empty: every
	// message). Only messages whose tag (header Msgmesh-Tag) it names are
	// delivered; on RocketMQ the broker filters, elsewhere the sidecar acks
	// the others without delivering them. Consume bindings only.
	Tags string `json:"tags,omitempty"`
	// PushURL makes the binding an HTTP push subscription: the sidecar
	// POSTs each delivery of the group on the topic to this URL as a
	// CloudEvent (docs/http-api.md, "Push subscriptions") instead of
	// waiting for the app to connect or pull. Empty: no push. An http or
	// https URL with a host and no user information or fragment; which
	// hosts the sidecar accepts is its own setting (loopback unless
	// --push-allow-hosts says more), checked when the app registers.
	// Consume bindings only.
	PushURL string `json:"push_url,omitempty"`
	// PushConcurrency is how many deliveries the sidecar POSTs to PushURL
	// at once (its push session's in-flight bound). 0: 1, so deliveries
	// arrive one at a time. 0 to MaxPushConcurrency; only with PushURL.
	PushConcurrency int `json:"push_concurrency,omitempty"`
	// PushMode is the CloudEvents HTTP content mode of the POSTs:
	// PushModeBinary (the default when empty) or PushModeStructured.
	// Only with PushURL.
	PushMode string `json:"push_mode,omitempty"`
	// PushTimeout bounds one POST, a Go duration ("5s"); an answer not
	// complete in time is a failed attempt. Empty: the sidecar's
	// --push-timeout. Above 0 and at most MaxPushTimeout; the sidecar also
	// keeps it below its delivery timeout. Only with PushURL.
	PushTimeout string `json:"push_timeout,omitempty"`
}

// Push subscription bounds and modes (Binding.PushURL).
const (
	// MaxPushConcurrency bounds Binding.PushConcurrency.
	MaxPushConcurrency = 1024
	// MaxPushTimeout bounds Binding.PushTimeout.
	MaxPushTimeout = 5 * time.Minute
	// PushModeBinary POSTs a delivery in CloudEvents binary content mode:
	// attributes in ce-* headers, the body as it is.
	PushModeBinary = "binary"
	// PushModeStructured POSTs a delivery as an
	// application/cloudevents+json document.
	PushModeStructured = "structured"
)

// Push reports whether the binding is an HTTP push subscription.
func (b Binding) Push() bool { return b.PushURL != "" }

// PushWindow is the binding's effective push concurrency: PushConcurrency,
// or 1 when it is 0.
func (b Binding) PushWindow() int { return max(b.PushConcurrency, 1) }

// PushTimeoutValue is PushTimeout parsed; 0 when empty (the sidecar's
// default) or malformed (Validate refuses that).
func (b Binding) PushTimeoutValue() time.Duration {
	d, _ := time.ParseDuration(b.PushTimeout)
	return d
}

// DefaultDeadLetterTopic names the dead-letter topic of group on topic when
// its binding names none: "<topic>.<group>.dlq", with every '.' of the
// group turned into '_' so that the group is one segment (and the name is
// a valid topic whatever the group's dots). A name over 249 bytes is cut
// and made unique again with 8 hex digits of FNV-1a of the full name:
// "<cut>-<hash>.dlq".
func DefaultDeadLetterTopic(group, topic string) string {
	name := topic + "." + strings.ReplaceAll(group, ".", "_") + deadLetterSuffix
	if len(name) <= maxTopicLen {
		return name
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	tail := fmt.Sprintf("-%08x%s", h.Sum32(), deadLetterSuffix)
	return name[:maxTopicLen-len(tail)] + tail
}

// DeadLetter is the dead-letter topic of a consume binding: the one it
// names, or DefaultDeadLetterTopic.
func (b Binding) DeadLetter() string {
	if b.DeadLetterTopic != "" {
		return b.DeadLetterTopic
	}
	return DefaultDeadLetterTopic(b.Group, b.Topic)
}

// key is the binding's identity: two bindings of one list with the same
// key are duplicates whatever their policies.
func (b Binding) key() [2]string { return [2]string{b.Group, b.Topic} }

// ParseBinding parses "group:topic", as written on the command line
// (meshctl register --consume g1:orders.created), and checks both names.
// Bad input gives a *ValidationError: Field is "group" or "topic" for a bad
// name, empty when there is no single ':'.
func ParseBinding(s string) (Binding, error) {
	group, topic, ok := strings.Cut(s, ":")
	if !ok || strings.Contains(topic, ":") {
		return Binding{}, invalid("", "binding %s: expected group:topic with exactly one ':'", quote(s))
	}
	b := Binding{Group: group, Topic: topic}
	if err := b.validate(""); err != nil {
		return Binding{}, err
	}
	return b, nil
}

// ParseConsumeBinding parses a consume binding as written on the command
// line: "group:topic", optionally followed by its dead-letter policy,
// broker group, tag filter and push subscription as comma-separated
// key=value options named like the JSON fields
// ("g1:orders.created,max_attempts=5,dead_letter_topic=orders.poison",
// "g1:orders.created,broker_group=orders-service",
// "g1:orders.created,push_url=http://127.0.0.1:8080/orders,push_concurrency=4").
// A push URL holding ',' can only be registered in JSON.
// Bad input gives a *ValidationError as for ParseBinding; Field names the
// option ("max_attempts") when an option is wrong.
func ParseConsumeBinding(s string) (Binding, error) {
	head, opts, hasOpts := strings.Cut(s, ",")
	b, err := ParseBinding(head)
	if err != nil {
		return Binding{}, err
	}
	if hasOpts {
		for _, opt := range strings.Split(opts, ",") {
			k, v, ok := strings.Cut(opt, "=")
			if !ok {
				return Binding{}, invalid("", "binding %s: option %s: expected key=value", quote(s), quote(opt))
			}
			o, known := b.option(k)
			switch {
			case !known:
				return Binding{}, invalid(k, "unknown option; allowed are %s", optionNames())
			case o.num != nil:
				n, err := strconv.Atoi(v)
				if err != nil {
					return Binding{}, invalid(k, "%s is not a whole number", quote(v))
				}
				*o.num = n
			default:
				*o.str = v
			}
		}
	}
	if err := b.validatePolicy(""); err != nil {
		return Binding{}, err
	}
	return b, nil
}

// String returns "group:topic", the form ParseBinding reads, followed by
// the options ParseConsumeBinding reads when they are set.
func (b Binding) String() string {
	s := b.Group + ":" + b.Topic
	for _, o := range b.options() {
		switch {
		case o.num != nil && *o.num != 0:
			s += "," + o.name + "=" + strconv.Itoa(*o.num)
		case o.str != nil && *o.str != "":
			s += "," + o.name + "=" + *o.str
		}
	}
	return s
}

// bindingOption is one option of a consume binding on the command line,
// named like its JSON field: a string or a whole number field of the
// binding.
type bindingOption struct {
	name string
	str  *string
	num  *int
}

// options lists b's options in the order String writes them.
func (b *Binding) options() []bindingOption {
	return []bindingOption{
		{name: "max_attempts", num: &b.MaxAttempts},
		{name: "dead_letter_topic", str: &b.DeadLetterTopic},
		{name: "broker_group", str: &b.BrokerGroup},
		{name: "tags", str: &b.Tags},
		{name: "push_url", str: &b.PushURL},
		{name: "push_concurrency", num: &b.PushConcurrency},
		{name: "push_mode", str: &b.PushMode},
		{name: "push_timeout", str: &b.PushTimeout},
	}
}

// option finds b's option name.
func (b *Binding) option(name string) (bindingOption, bool) {
	for _, o := range b.options() {
		if o.name == name {
			return o, true
		}
	}
	return bindingOption{}, false
}

// optionNames lists the options for an error message.
func optionNames() string {
	var b Binding
	var names []string
	for _, o := range b.options() {
		names = append(names, o.name)
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// validate checks both names; prefix is the field path of the binding
// ("consume[1]"), empty for a lone binding.
func (b Binding) validate(prefix string) *ValidationError {
	if prefix != "" {
		prefix += "."
	}
	if reason := checkName(b.Group); reason != "" {
		return invalid(prefix+"group", "%s %s", quote(b.Group), reason)
	}
	if reason := checkTopic(b.Topic); reason != "" {
		return invalid(prefix+"topic", "%s %s", quote(b.Topic), reason)
	}
	return nil
}

// validatePolicy checks the dead-letter policy and the broker group of a
// consume binding whose names are valid; prefix as for validate.
func (b Binding) validatePolicy(prefix string) *ValidationError {
	if prefix != "" {
		prefix += "."
	}
	if b.BrokerGroup != "" {
		if reason := checkBrokerGroup(b.BrokerGroup); reason != "" {
			return invalid(prefix+"broker_group", "%s %s", quote(b.BrokerGroup), reason)
		}
	}
	if _, err := broker.ParseTagExpression(b.Tags); err != nil {
		return invalid(prefix+"tags", "%s", strings.TrimPrefix(err.Error(), "broker: "))
	}
	if err := b.validatePush(prefix); err != nil {
		return err
	}
	if b.MaxAttempts < 0 || b.MaxAttempts > MaxAttemptsLimit {
		return invalid(prefix+"max_attempts", "%d is out of range; want 1 to %d, or 0 (or none) for the sidecar's default", b.MaxAttempts, MaxAttemptsLimit)
	}
	if b.DeadLetterTopic == "" {
		return nil
	}
	if reason := checkTopic(b.DeadLetterTopic); reason != "" {
		return invalid(prefix+"dead_letter_topic", "%s %s", quote(b.DeadLetterTopic), reason)
	}
	if b.DeadLetterTopic == b.Topic {
		return invalid(prefix+"dead_letter_topic", "%s is the consumed topic itself; dead letters would come back to the group", quote(b.DeadLetterTopic))
	}
	return nil
}

// validatePush checks the push subscription of a consume binding; prefix
// ends in '.' when not empty.
func (b Binding) validatePush(prefix string) *ValidationError {
	if b.PushURL == "" {
		switch {
		case b.PushConcurrency != 0:
			return invalid(prefix+"push_concurrency", "set without push_url")
		case b.PushMode != "":
			return invalid(prefix+"push_mode", "set without push_url")
		case b.PushTimeout != "":
			return invalid(prefix+"push_timeout", "set without push_url")
		}
		return nil
	}
	if reason := checkPushURL(b.PushURL); reason != "" {
		return invalid(prefix+"push_url", "%s %s", quote(b.PushURL), reason)
	}
	if b.PushConcurrency < 0 || b.PushConcurrency > MaxPushConcurrency {
		return invalid(prefix+"push_concurrency", "%d is out of range; want 1 to %d, or 0 (or none) for 1", b.PushConcurrency, MaxPushConcurrency)
	}
	switch b.PushMode {
	case "", PushModeBinary, PushModeStructured:
	default:
		return invalid(prefix+"push_mode", "%s is not %q or %q", quote(b.PushMode), PushModeBinary, PushModeStructured)
	}
	if b.PushTimeout != "" {
		d, err := time.ParseDuration(b.PushTimeout)
		if err != nil || d <= 0 || d > MaxPushTimeout {
			return invalid(prefix+"push_timeout", "%s is not a Go duration above 0 and at most %s (\"5s\", \"500ms\")", quote(b.PushTimeout), MaxPushTimeout)
		}
	}
	return nil
}

// checkPushURL checks the form of a push URL; which hosts are allowed is
// the sidecar's decision. It returns "" when the URL is valid, else the
// reason.
func checkPushURL(s string) string {
	if len(s) > maxPushURLLen {
		return fmt.Sprintf("is %d bytes long; the limit is %d", len(s), maxPushURLLen)
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "is not a URL: " + strings.TrimPrefix(err.Error(), "parse ")
	case u.Scheme != "http" && u.Scheme != "https":
		return "is not an http:// or https:// URL"
	case u.Host == "" || u.Hostname() == "":
		return "names no host"
	case u.User != nil:
		return "holds user information; registrations are shown by GET /v1/registrations, so credentials do not belong in them"
	case u.Fragment != "" || strings.Contains(s, "#"):
		return "has a fragment"
	}
	return ""
}

// maxPushURLLen bounds Binding.PushURL.
const maxPushURLLen = 2048

func compareBindings(a, b Binding) int {
	return cmp.Or(strings.Compare(a.Group, b.Group), strings.Compare(a.Topic, b.Topic))
}

// Registration is what an app registers with its sidecar.
type Registration struct {
	App     string    `json:"app"`
	Produce []Binding `json:"produce,omitempty"`
	Consume []Binding `json:"consume,omitempty"`
	// UpdatedAt is set by Store.Put (UTC). It is left out of JSON while
	// zero, and DecodeJSON ignores it.
	UpdatedAt time.Time `json:"updated_at,omitzero"`
	// SecretHash is the SHA-256 of the app's secret (the sidecar checks
	// it on HELLO and HTTP requests, docs/protocol.md §9); nil when the app
	// has none. The Store keeps it with the registration; it is never part
	// of the registration's JSON (the HTTP API), so DecodeJSON cannot set it.
	SecretHash []byte `json:"-"`
}

// Validate checks the registration against the rules in the package doc
// and returns the first violation as a *ValidationError (errors.Is(err,
// ErrInvalid)), with Field as the path of the offending value in the
// order the bindings are in now: "app", "produce[0].group",
// "consume[1].topic", "consume[2]" for a duplicate binding.
func (r *Registration) Validate() error {
	if r == nil {
		return invalid("", "no registration")
	}
	if reason := checkName(r.App); reason != "" {
		return invalid("app", "%s %s", quote(r.App), reason)
	}
	if len(r.Produce) == 0 && len(r.Consume) == 0 {
		return invalid("", "no bindings: register at least one produce or consume binding (group and topic)")
	}
	if err := validateBindings("produce", r.Produce, false); err != nil {
		return err
	}
	if err := validateBindings("consume", r.Consume, true); err != nil {
		return err
	}
	return nil
}

// validateBindings checks one binding list; consume says whether its
// bindings may carry a dead-letter policy.
func validateBindings(field string, bs []Binding, consume bool) *ValidationError {
	var seen map[[2]string]int
	if len(bs) > 1 {
		seen = make(map[[2]string]int, len(bs))
	}
	for i, b := range bs {
		path := fmt.Sprintf("%s[%d]", field, i)
		if err := b.validate(path); err != nil {
			return err
		}
		switch {
		case consume:
			if err := b.validatePolicy(path); err != nil {
				return err
			}
		case b.MaxAttempts != 0:
			return invalid(path+".max_attempts", "only consume bindings have a dead-letter policy")
		case b.DeadLetterTopic != "":
			return invalid(path+".dead_letter_topic", "only consume bindings have a dead-letter policy")
		case b.BrokerGroup != "":
			return invalid(path+".broker_group", "only consume bindings have a broker group (producers join no group)")
		case b.Tags != "":
			return invalid(path+".tags", "only consume bindings filter by tag")
		case b.PushURL != "" || b.PushConcurrency != 0 || b.PushMode != "" || b.PushTimeout != "":
			return invalid(path+".push_url", "only consume bindings are pushed to")
		}
		if seen == nil {
			continue
		}
		if j, dup := seen[b.key()]; dup {
			return invalid(path, "duplicate binding %s:%s (same group and topic as %s[%d])", b.Group, b.Topic, field, j)
		}
		seen[b.key()] = i
	}
	return nil
}

// Normalize sorts both binding lists by group, then topic, and turns empty
// lists into nil, so that equal registrations are stored, compared and
// serialised identically. It does not validate.
func (r *Registration) Normalize() {
	r.Produce = normalizeBindings(r.Produce)
	r.Consume = normalizeBindings(r.Consume)
}

func normalizeBindings(bs []Binding) []Binding {
	if len(bs) == 0 {
		return nil
	}
	slices.SortFunc(bs, compareBindings)
	return bs
}

// clone returns a copy that shares no slice with r.
func (r Registration) clone() Registration {
	r.Produce = slices.Clone(r.Produce)
	r.Consume = slices.Clone(r.Consume)
	r.SecretHash = slices.Clone(r.SecretHash)
	return r
}

// checkName checks an app or group name, ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$.
// It returns "" when the name is valid, else the reason.
func checkName(s string) string {
	switch {
	case s == "":
		return "is empty; want 1 to 128 letters, digits, '_', '.' or '-'"
	case len(s) > maxNameLen:
		return fmt.Sprintf("is %d bytes long; the limit is %d", len(s), maxNameLen)
	case !isAlnum(s[0]):
		return fmt.Sprintf("starts with %s; it must start with a letter or digit", quoteByte(s[0]))
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '_' && c != '.' && c != '-' {
			return fmt.Sprintf("has %s at byte %d; allowed are letters, digits, '_', '.' and '-'", quoteByte(c), i)
		}
	}
	return ""
}

// checkBrokerGroup checks a broker group name,
// ^[A-Za-z0-9][A-Za-z0-9_.-]{0,248}$: the characters every broker's
// group names share with the names Java and librdkafka apps commonly use
// ('.' included, which Kafka allows and NATS and RocketMQ do not; their
// adapters refuse it). It returns "" when the name is valid, else the
// reason.
func checkBrokerGroup(s string) string {
	switch {
	case s == "":
		return "is empty"
	case len(s) > maxTopicLen:
		return fmt.Sprintf("is %d bytes long; the limit is %d", len(s), maxTopicLen)
	case !isAlnum(s[0]):
		return fmt.Sprintf("starts with %s; it must start with a letter or digit", quoteByte(s[0]))
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '_' && c != '.' && c != '-' {
			return fmt.Sprintf("has %s at byte %d; allowed are letters, digits, '_', '.' and '-'", quoteByte(c), i)
		}
	}
	return ""
}

// checkTopic checks a topic name, ^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$ and
// at most 249 bytes. It returns "" when the name is valid, else the reason.
func checkTopic(s string) string {
	switch {
	case s == "":
		return "is empty; want dot-separated segments of letters, digits, '_' or '-'"
	case len(s) > maxTopicLen:
		return fmt.Sprintf("is %d bytes long; the limit is %d", len(s), maxTopicLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			if i == 0 || i == len(s)-1 || s[i-1] == '.' {
				return fmt.Sprintf("has an empty segment at byte %d; '.' may only separate non-empty segments", i)
			}
			continue
		}
		if !isAlnum(c) && c != '_' && c != '-' {
			return fmt.Sprintf("has %s at byte %d; allowed are letters, digits, '_', '-' and '.' between segments", quoteByte(c), i)
		}
	}
	return ""
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func quoteByte(c byte) string {
	if c < 0x80 {
		return fmt.Sprintf("%q", rune(c))
	}
	return fmt.Sprintf("non-ASCII byte 0x%02x", c)
}

// quote quotes a user-supplied value for an error message, cut to a
// readable length.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return fmt.Sprintf("%q...", s[:max])
	}
	return fmt.Sprintf("%q", s)
}
