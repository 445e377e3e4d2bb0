package topology

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

// Retention values of StreamSettings.Retention.
const (
	// RetentionLimits keeps a message until it is older than MaxAge, or
	// until the stream is over MaxBytes or MaxMsgs (then new publishes are
	// refused, see StreamSettings). A new consumer group starts at the
	// oldest message kept.
	RetentionLimits = "limits"
	// RetentionInterest deletes a message once every consumer group that
	// existed when it was stored has acked it (and keeps the limits above
	// too), so space comes back as groups catch up. A message published
	// while no group exists would be kept for nobody, so publishing to
	// such a stream is refused until a group consumes the topic.
	RetentionInterest = "interest"
)

// Storage values of StreamSettings.Storage.
const (
	// StorageFile keeps a stream on disk (JetStream file storage).
	StorageFile = "file"
	// StorageMemory keeps a stream in the servers' memory: faster, and
	// lost when a server restarts (with one replica, the whole stream).
	StorageMemory = "memory"
)

// StreamSettings are the storage settings of one topic's stream, for the
// brokers where msgmesh creates them (NATS JetStream). Every field has an
// "unset" value (the empty string, a nil pointer, zero replicas) that means
// "inherit": a topic's entry inherits from its cluster's settings, and
// those from the adapter's defaults (docs/brokers.md). A stream that
// reaches MaxBytes or MaxMsgs refuses new publishes (STORAGE_FULL); it
// never drops stored messages to make room.
type StreamSettings struct {
	// Retention is RetentionLimits or RetentionInterest.
	Retention string `yaml:"retention,omitempty" json:"retention,omitempty"`
	// MaxAge deletes messages older than this, consumed or not. 0: no
	// limit. In YAML a duration ("168h").
	MaxAge *time.Duration `yaml:"max_age,omitempty" json:"max_age,omitempty"`
	// MaxBytes bounds the stream's size. 0: no limit of its own (the
	// broker's storage limit still applies).
	MaxBytes *ByteSize `yaml:"max_bytes,omitempty" json:"max_bytes,omitempty"`
	// MaxMsgs bounds the number of messages. 0: no limit.
	MaxMsgs *int64 `yaml:"max_msgs,omitempty" json:"max_msgs,omitempty"`
	// Replicas is how many servers keep a copy (JetStream R1, R3, R5).
	Replicas int `yaml:"replicas,omitempty" json:"replicas,omitempty"`
	// Storage is StorageFile or StorageMemory.
	Storage string `yaml:"storage,omitempty" json:"storage,omitempty"`
	// Duplicates is the stream's duplicate window: a message published
	// with a Nats-Msg-Id already seen within it is acknowledged and not
	// stored again. The sidecar refuses Nats-Msg-Id from apps (the header
	// rule), so it matters to native publishers only. In YAML a duration
	// ("2m").
	Duplicates *time.Duration `yaml:"duplicates,omitempty" json:"duplicates,omitempty"`
}

// Over returns s with every field that o sets replaced by o's.
func (s StreamSettings) Over(o StreamSettings) StreamSettings {
	if o.Retention != "" {
		s.Retention = o.Retention
	}
	if o.MaxAge != nil {
		s.MaxAge = o.MaxAge
	}
	if o.MaxBytes != nil {
		s.MaxBytes = o.MaxBytes
	}
	if o.MaxMsgs != nil {
		s.MaxMsgs = o.MaxMsgs
	}
	if o.Replicas != 0 {
		s.Replicas = o.Replicas
	}
	if o.Storage != "" {
		s.Storage = o.Storage
	}
	if o.Duplicates != nil {
		s.Duplicates = o.Duplicates
	}
	return s
}

// Validate checks each field that is set; field names the settings in
// messages ("streams", "streams.topics[0]").
func (s StreamSettings) Validate(field string) error {
	var errs []error
	switch s.Retention {
	case "", RetentionLimits, RetentionInterest:
	default:
		errs = append(errs, fmt.Errorf("%s.retention %q: want %s or %s", field, s.Retention, RetentionLimits, RetentionInterest))
	}
	if s.MaxAge != nil && *s.MaxAge < 0 {
		errs = append(errs, fmt.Errorf("%s.max_age %v: must not be negative", field, *s.MaxAge))
	}
	if s.MaxBytes != nil && *s.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("%s.max_bytes %d: must not be negative", field, *s.MaxBytes))
	}
	if s.MaxMsgs != nil && *s.MaxMsgs < 0 {
		errs = append(errs, fmt.Errorf("%s.max_msgs %d: must not be negative", field, *s.MaxMsgs))
	}
	if s.Replicas < 0 {
		errs = append(errs, fmt.Errorf("%s.replicas %d: must not be negative", field, s.Replicas))
	}
	switch s.Storage {
	case "", StorageFile, StorageMemory:
	default:
		errs = append(errs, fmt.Errorf("%s.storage %q: want %s or %s", field, s.Storage, StorageFile, StorageMemory))
	}
	if s.Duplicates != nil && *s.Duplicates < 0 {
		errs = append(errs, fmt.Errorf("%s.duplicates %v: must not be negative", field, *s.Duplicates))
	}
	if s.Duplicates != nil && s.MaxAge != nil && *s.MaxAge > 0 && *s.Duplicates > *s.MaxAge {
		errs = append(errs, fmt.Errorf("%s.duplicates %v: must not be longer than max_age %v (JetStream refuses such a stream)", field, *s.Duplicates, *s.MaxAge))
	}
	return errors.Join(errs...)
}

// Streams are the settings of the streams a cluster's adapter creates for
// topics that have none yet: the cluster's own (inline), and overrides for
// the topics matching a pattern. Streams that exist already (an
// operator's, or one an older msgmesh created) are never changed.
type Streams struct {
	StreamSettings `yaml:",inline"`
	// Topics override the settings above for the topics they match
	// (patterns as in routes: '*' one token, '>' the rest). The first
	// match wins; what it leaves unset comes from the settings above.
	Topics []TopicStreams `yaml:"topics,omitempty" json:"topics,omitempty"`
}

// TopicStreams are the stream settings of the topics matching Topic.
type TopicStreams struct {
	Topic          string `yaml:"topic" json:"topic"`
	StreamSettings `yaml:",inline"`
}

// For returns the settings of topic: the first entry of Topics that
// matches it over the cluster's own settings.
func (s *Streams) For(topic string) StreamSettings {
	if s == nil {
		return StreamSettings{}
	}
	for _, t := range s.Topics {
		if Match(t.Topic, topic) {
			return s.StreamSettings.Over(t.StreamSettings)
		}
	}
	return s.StreamSettings
}

// Validate checks the settings and the topic patterns; field names the
// section in messages ("clusters[0].streams").
func (s *Streams) Validate(field string) error {
	if s == nil {
		return nil
	}
	errs := []error{s.StreamSettings.Validate(field)}
	for i, t := range s.Topics {
		f := fmt.Sprintf("%s.topics[%d]", field, i)
		if err := checkPattern(t.Topic); err != nil {
			errs = append(errs, fmt.Errorf("%s.topic %q: %w", f, t.Topic, err))
		}
		errs = append(errs, t.StreamSettings.Validate(f))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// ByteSize is a number of bytes. In YAML and JSON it is a whole number or a
// string with a unit: "512MiB", "10GiB" (powers of 1024), "10GB" (powers
// of 1000).
type ByteSize int64

// UnmarshalText reads "1048576", "1MiB", "1 MB".
func (b *ByteSize) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		*b = ByteSize(n)
		return nil
	}
	n, err := humanize.ParseBytes(s)
	if err != nil || n > 1<<62 {
		return fmt.Errorf("size %q: want a number of bytes, or one with a unit such as 512MiB or 10GB", s)
	}
	*b = ByteSize(n)
	return nil
}

// UnmarshalJSON reads a JSON number or a string as UnmarshalText does.
func (b *ByteSize) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		data = []byte(s)
	}
	return b.UnmarshalText(data)
}

// String is the size with a binary unit ("1.0 GiB"), or "0".
func (b ByteSize) String() string {
	if b <= 0 {
		return strconv.FormatInt(int64(b), 10)
	}
	return humanize.IBytes(uint64(b))
}
