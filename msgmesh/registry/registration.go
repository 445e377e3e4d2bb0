package registry

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Name limits (bytes).
const (
	maxNameLen  = 128 // app and group names
	maxTopicLen = 249 // Kafka's topic name limit
)

// Binding is one (group, topic) pair: a producer group producing a topic or
// a consumer group consuming it.
type Binding struct {
	Group string `json:"group"`
	Topic string `json:"topic"`
}

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

// String returns "group:topic", the form ParseBinding reads.
func (b Binding) String() string { return b.Group + ":" + b.Topic }

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
	if err := validateBindings("produce", r.Produce); err != nil {
		return err
	}
	if err := validateBindings("consume", r.Consume); err != nil {
		return err
	}
	return nil
}

func validateBindings(field string, bs []Binding) *ValidationError {
	var seen map[Binding]int
	if len(bs) > 1 {
		seen = make(map[Binding]int, len(bs))
	}
	for i, b := range bs {
		path := fmt.Sprintf("%s[%d]", field, i)
		if err := b.validate(path); err != nil {
			return err
		}
		if seen == nil {
			continue
		}
		if j, dup := seen[b]; dup {
			return invalid(path, "duplicate binding %s (same as %s[%d])", b, field, j)
		}
		seen[b] = i
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
