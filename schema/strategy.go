package schema

import "fmt"

// Subject name strategies: how a topic's value schema is found among the
// registry's subjects (Confluent's *SubjectNameStrategy), per topic.
const (
	// StrategyTopicName is Confluent's TopicNameStrategy, what its
	// serializers use by default: subject "<topic>-value". A topic without
	// such a subject falls back to the subject "<topic>", msgmesh's rule
	// before strategies, so registries written that way keep validating.
	// The default.
	StrategyTopicName = "topic_name"
	// StrategyTopic: subject "<topic>" only.
	StrategyTopic = "topic"
	// StrategyRecordName is Confluent's RecordNameStrategy: a body's
	// schema (named by its Confluent header or Msgmesh-Schema-Id) must be
	// a version of a subject named after the schema's record, its full
	// name ("com.acme.Order"): several record types share the topic.
	StrategyRecordName = "record_name"
	// StrategyTopicRecordName is Confluent's TopicRecordNameStrategy:
	// as StrategyRecordName, with subjects "<topic>-<full name>".
	StrategyTopicRecordName = "topic_record_name"
)

// ParseStrategy checks a subject name strategy; "" is StrategyTopicName.
func ParseStrategy(s string) (string, error) {
	switch s {
	case "":
		return StrategyTopicName, nil
	case StrategyTopicName, StrategyTopic, StrategyRecordName, StrategyTopicRecordName:
		return s, nil
	}
	return "", fmt.Errorf("schema: subject name strategy %q: want %s, %s, %s or %s", s, StrategyTopicName, StrategyTopic, StrategyRecordName, StrategyTopicRecordName)
}
