package msgmesh

import (
	"fmt"
	"strings"

	"github.com/msgmesh/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/schema"
)

// TopicSchema is a topic's schema versions and what to do with a body that
// does not match (docs/schemas.md).
type TopicSchema struct {
	Schemas schema.TopicSchemas
	// Policy: enforce (refuse with SCHEMA_INVALID), warn (publish, log and
	// count), off.
	Policy schema.Policy
}

// SetSchemas replaces the schemas publishes are validated against, by
// topic; the control plane pushes them (DESIGN.md flow 9). It takes effect
// for the next publish, without a restart. A nil or empty map validates
// nothing.
func (s *Sidecar) SetSchemas(byTopic map[string]TopicSchema) {
	cp := make(map[string]TopicSchema, len(byTopic))
	for k, v := range byTopic {
		cp[k] = v
	}
	s.schemas.Store(&cp)
	s.log.Info("schemas updated", "topics", len(cp))
}

// validate checks m against its topic's schema, if it has one, and may
// rewrite its body (JSON is encoded to Avro). contentType is the body's
// content type when no header gives one. It runs on the publish lane, not
// the connection's read loop.
func (s *Sidecar) validate(m *broker.Message, contentType string) error {
	set := s.schemas.Load()
	if set == nil {
		return nil
	}
	ts, ok := (*set)[m.Topic]
	if !ok || ts.Policy == schema.PolicyOff {
		return nil
	}
	hints := schema.HintsFromHeaders(headerSeq(m.Headers))
	if hints.ContentType == "" {
		hints.ContentType = contentType
	}
	res, err := s.validator.Validate(ts.Schemas, m.Body, hints)
	if err != nil {
		if ts.Policy == schema.PolicyWarn {
			s.log.Warn("publish does not match its topic's schema; published anyway (policy warn)", "topic", m.Topic, "err", err)
			return nil
		}
		return fmt.Errorf("msgmesh: topic %q: %w", m.Topic, err)
	}
	if res.Reencoded {
		// The body is Avro in the Confluent wire format now: drop the
		// content type that said JSON, so consumers read it as such.
		m.Body = res.Body
		hs := m.Headers[:0:0]
		for _, h := range m.Headers {
			if !strings.EqualFold(h.Key, schema.HeaderContentType) && !strings.EqualFold(h.Key, "Content-Type") {
				hs = append(hs, h)
			}
		}
		m.Headers = hs
	}
	return nil
}

// headerSeq iterates message headers as key, value pairs.
func headerSeq(hs []broker.Header) func(func(string, string) bool) {
	return func(yield func(string, string) bool) {
		for _, h := range hs {
			if !yield(h.Key, h.Value) {
				return
			}
		}
	}
}
