package msgmesh

import (
	"context"
	"fmt"
	"strings"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/pipeline"
	"github.com/msgmesh/msgmesh/schema"
)

// TopicSchema is a registry subject's schema versions and what to do with
// a body that does not match (docs/schemas.md).
type TopicSchema struct {
	Schemas schema.TopicSchemas
	// Policy: enforce (refuse with SCHEMA_INVALID), warn (publish, log and
	// count), off. It is the policy of the topic named like the subject;
	// SchemaSet.Policies, when they name a topic, come first.
	Policy schema.Policy
}

// SchemaSet is everything the sidecar validates with: every registry
// subject with its versions, and the topics' own settings.
type SchemaSet struct {
	// Subjects by subject name.
	Subjects map[string]TopicSchema
	// Policies and Strategies by topic, for the topics that have their
	// own; the others take the policy of a subject named like the topic,
	// else enforce, and schema.StrategyTopicName.
	Policies   map[string]schema.Policy
	Strategies map[string]string
}

// SetSchemas replaces the schemas publishes are validated against. The
// map is keyed by subject (a subject named like a topic, or
// "<topic>-value", is that topic's schema; see SetSchemaSet). It takes
// effect for the next publish, without a restart. A nil or empty map
// validates nothing.
func (s *Sidecar) SetSchemas(bySubject map[string]TopicSchema) {
	s.SetSchemaSet(SchemaSet{Subjects: bySubject})
}

// SetSchemaSet replaces the schemas and topic settings publishes are
// validated with; the control plane pushes them (docs/design.md flow 9). Each
// publish's topic finds its value schema by its subject name strategy
// and its key schema in subject "<topic>-key".
func (s *Sidecar) SetSchemaSet(set SchemaSet) {
	cp := &compiledSchemas{subjects: make(map[string]TopicSchema, len(set.Subjects)), policies: set.Policies, strategies: set.Strategies,
		recordNames: map[string]string{}}
	for k, v := range set.Subjects {
		cp.subjects[k] = v
		if n := len(v.Schemas.Versions); n > 0 {
			if name := schema.FullName(v.Schemas.Versions[n-1].Schema); name != "" {
				cp.recordNames[k] = name
			}
		}
	}
	s.schemas.Store(cp)
	s.log.Info("schemas updated", "subjects", len(cp.subjects), "topic_settings", len(set.Policies)+len(set.Strategies))
}

// compiledSchemas is a SchemaSet ready for lookups.
type compiledSchemas struct {
	subjects    map[string]TopicSchema
	policies    map[string]schema.Policy
	strategies  map[string]string
	recordNames map[string]string // subject → full name of its latest schema's named type
}

// policy is topic's policy: its own, else that of the subject named like
// it, else enforce.
func (c *compiledSchemas) policy(topic string) schema.Policy {
	if p, ok := c.policies[topic]; ok {
		return p
	}
	if ts, ok := c.subjects[topic]; ok {
		return ts.Policy
	}
	return schema.PolicyEnforce
}

// valueSchemas returns the versions a body published on topic may match,
// and whether the body must name its schema by id (record strategies,
// where versions of several subjects are merged); ok is false when the
// topic has no value schema.
func (c *compiledSchemas) valueSchemas(topic string) (ts schema.TopicSchemas, byID, ok bool) {
	switch c.strategies[topic] {
	case schema.StrategyTopic:
		v, ok := c.subjects[topic]
		return v.Schemas, false, ok
	case schema.StrategyRecordName, schema.StrategyTopicRecordName:
		prefix := ""
		if c.strategies[topic] == schema.StrategyTopicRecordName {
			prefix = topic + "-"
		}
		merged := schema.TopicSchemas{Subject: "the record subjects of " + topic}
		for subject, name := range c.recordNames {
			if subject == prefix+name {
				merged.Versions = append(merged.Versions, c.subjects[subject].Schemas.Versions...)
			}
		}
		return merged, true, len(merged.Versions) > 0
	}
	if v, ok := c.subjects[topic+"-value"]; ok {
		return v.Schemas, false, true
	}
	v, ok := c.subjects[topic]
	return v.Schemas, false, ok
}

// validate checks m against its topic's schemas, if it has any, and may
// rewrite its body (JSON is encoded to Avro). contentType is the body's
// content type when no header gives one. The key is checked against the
// subject "<topic>-key" when that exists and the message has a key: keys
// are Confluent-framed Avro, as Confluent's key serializers write them. It
// runs on the publish lane, not the connection's read loop.
func (s *Sidecar) validate(m *broker.Message, contentType string) error {
	set := s.schemas.Load()
	if set == nil {
		return nil
	}
	policy := set.policy(m.Topic)
	if policy == schema.PolicyOff {
		return nil
	}
	if err := s.validateKey(set, m, policy); err != nil {
		return err
	}
	if m.NullBody {
		return nil // a tombstone has no value to check, as Confluent's deserializers read it
	}
	ts, byID, ok := set.valueSchemas(m.Topic)
	if !ok {
		return nil
	}
	hints := schema.HintsFromHeaders(headerSeq(m.Headers))
	if hints.ContentType == "" {
		hints.ContentType = contentType
	}
	var res schema.Result
	var err error
	if byID && hints.SchemaID == "" && (hints.SchemaVersion != "" || schema.EncodingOf(hints) != schema.EncodingConfluent) {
		err = &schema.ValidationError{Reason: fmt.Sprintf("topic %q takes several record types (subject name strategy %s): name the body's schema with the Confluent wire format or the header %s", m.Topic, set.strategies[m.Topic], schema.HeaderSchemaID)}
	} else {
		res, err = s.validator.Validate(ts, m.Body, hints)
	}
	if err != nil {
		if policy == schema.PolicyWarn {
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

// validateKey checks m's key against subject "<topic>-key", when there is
// one and m has a key, in the Confluent wire format.
func (s *Sidecar) validateKey(set *compiledSchemas, m *broker.Message, policy schema.Policy) error {
	ks, ok := set.subjects[m.Topic+"-key"]
	if !ok || m.Key == "" {
		return nil
	}
	if _, err := s.validator.Validate(ks.Schemas, []byte(m.Key), schema.Hints{}); err != nil {
		if policy == schema.PolicyWarn {
			s.log.Warn("publish's key does not match its topic's key schema; published anyway (policy warn)", "topic", m.Topic, "err", err)
			return nil
		}
		return fmt.Errorf("msgmesh: topic %q: key: %w", m.Topic, err)
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

// schemaStage is the pipeline stage that validates every publish against
// its topic's schemas (validate), before anything is traced, waited for
// or sent.
type schemaStage struct{ s *Sidecar }

var _ pipeline.PublishHook = schemaStage{}

func (st schemaStage) OnPublish(ctx context.Context, p *pipeline.Publish) (context.Context, error) {
	if err := st.s.validate(p.Msg, p.ContentType); err != nil {
		return ctx, schemaRefusal{err}
	}
	return ctx, nil
}

// schemaRefusal is validate's error as the schema stage refuses with: it
// carries the metrics reason (observe.ReasonOf) "schema_invalid".
type schemaRefusal struct{ err error }

func (e schemaRefusal) Error() string  { return e.err.Error() }
func (e schemaRefusal) Unwrap() error  { return e.err }
func (e schemaRefusal) Reason() string { return "schema_invalid" }
