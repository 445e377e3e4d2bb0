package broker

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// HeaderTag carries a message's tag, RocketMQ's TAGS property, on every
// broker: the RocketMQ adapter stores it as the message's tag (which
// RocketMQ filters on, broker-side) and hands a delivered message's tag
// back under this name; NATS and Kafka keep it as an ordinary header, and
// the sidecar filters on it. Apps may set it (docs/protocol.md §5.3);
// CheckTag says which values.
const HeaderTag = "Msgmesh-Tag"

// ErrInvalidTagExpression is wrapped by ParseTagExpression's errors.
var ErrInvalidTagExpression = errors.New("broker: invalid tag expression")

// CheckTag reports why tag cannot be a message tag, or "": a tag is
// 1 to 255 bytes without "||" (RocketMQ's subscription separator), without
// leading or trailing white space (a subscription drops it), and not "*"
// (a subscription to every tag), so that a subscription can name it.
func CheckTag(tag string) string {
	switch {
	case tag == "":
		return "a tag is not empty; send no Msgmesh-Tag header for an untagged message"
	case len(tag) > 255:
		return fmt.Sprintf("a tag is at most 255 bytes, not %d", len(tag))
	case strings.Contains(tag, "||"):
		return `a tag may not contain "||", which separates the tags of a subscription`
	case strings.TrimSpace(tag) != tag:
		return "a tag may not start or end with white space, which subscriptions drop"
	case tag == "*":
		return `"*" subscribes to every tag and cannot be a tag`
	}
	return ""
}

// TagOf returns the tag of m (its HeaderTag header), "" when untagged.
// Header names compare case-insensitively, as the header rule does.
func TagOf(m *Message) string { return headerValue(m, HeaderTag) }

// headerValue is the value of m's header name (compared
// case-insensitively, as the header rule does), "" when it has none.
func headerValue(m *Message, name string) string {
	for _, h := range m.Headers {
		if strings.EqualFold(h.Key, name) {
			return h.Value
		}
	}
	return ""
}

// TagFilter is a RocketMQ tag subscription expression: "*" (or empty) for
// every message, else tags separated by "||" ("TagA || TagB"), white
// space around each ignored. A message matches when its tag is one of
// them; an untagged message matches only "*", as on RocketMQ.
type TagFilter struct {
	tags []string // sorted, unique; nil: every message
}

// ParseTagExpression parses a tag subscription expression. An expression
// naming no tag ("||", " ") or with a tag CheckTag refuses is an error
// wrapping ErrInvalidTagExpression.
func ParseTagExpression(expr string) (TagFilter, error) {
	expr = strings.TrimSpace(expr)
	if expr == "" || expr == "*" {
		return TagFilter{}, nil
	}
	var tags []string
	for _, t := range strings.Split(expr, "||") {
		if t = strings.TrimSpace(t); t == "" {
			continue
		}
		if why := CheckTag(t); why != "" {
			return TagFilter{}, fmt.Errorf("%w: %q: tag %q: %s", ErrInvalidTagExpression, expr, t, why)
		}
		tags = append(tags, t)
	}
	if len(tags) == 0 {
		return TagFilter{}, fmt.Errorf("%w: %q names no tag; use \"*\" for every message", ErrInvalidTagExpression, expr)
	}
	slices.Sort(tags)
	return TagFilter{tags: slices.Compact(tags)}, nil
}

// All reports whether f lets every message through.
func (f TagFilter) All() bool { return f.tags == nil }

// Match reports whether a message tagged tag ("" for none) passes f.
func (f TagFilter) Match(tag string) bool {
	if f.tags == nil {
		return true
	}
	_, ok := slices.BinarySearch(f.tags, tag)
	return ok
}

// String is the expression in canonical form: "*", or the tags sorted and
// joined with " || ". Equal filters have equal strings.
func (f TagFilter) String() string {
	if f.tags == nil {
		return "*"
	}
	return strings.Join(f.tags, " || ")
}

// TagFiltering is implemented by adapters whose broker filters a
// consumer's messages by ConsumerSpec.Tags itself (RocketMQ, broker-side
// by the subscription expression). For the others the sidecar filters:
// it acks every message that does not match without delivering it.
type TagFiltering interface {
	FiltersTags() bool
}
