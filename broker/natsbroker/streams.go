package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/topology"
)

// Defaults of the stream settings (topology.StreamSettings) the adapter
// creates streams with, for what Config.Streams leaves unset.
const (
	// DefaultRetention keeps messages by age and size, like a log: a new
	// consumer group starts at the oldest message kept, and no message is
	// dropped because no group existed when it was published.
	DefaultRetention = topology.RetentionLimits
	// DefaultMaxAge deletes messages a week old, consumed or not (Kafka's
	// default retention.ms), so that a store filled by consumed messages
	// empties by itself.
	DefaultMaxAge = 7 * 24 * time.Hour
	// DefaultReplicas is one copy: right for a single server; a cluster
	// wants 3.
	DefaultReplicas = 1
	// DefaultStorage keeps streams on disk.
	DefaultStorage = topology.StorageFile
	// DefaultDuplicates is JetStream's own default duplicate window.
	DefaultDuplicates = 2 * time.Minute
)

// DefaultStreams are the settings of created streams where Config.Streams
// says nothing. MaxBytes and MaxMsgs are unlimited: the server's own
// storage limit (max_file_store; EmbeddedConfig.MaxStore) bounds all
// streams together, while a byte limit per stream would reserve that much
// of it for each topic.
func DefaultStreams() topology.StreamSettings {
	age, dups := DefaultMaxAge, DefaultDuplicates
	var noBytes topology.ByteSize
	var noMsgs int64
	return topology.StreamSettings{Retention: DefaultRetention, MaxAge: &age, MaxBytes: &noBytes, MaxMsgs: &noMsgs, Replicas: DefaultReplicas,
		Storage: DefaultStorage, Duplicates: &dups}
}

// streamConfig is the configuration of the stream name the adapter creates
// for topic: the topic's settings over the defaults, file storage, and
// discard new, so that a stream at its limit refuses publishes instead of
// dropping stored messages.
func (b *Broker) streamConfig(name, topic string) jetstream.StreamConfig {
	s := DefaultStreams().Over(b.cfg.Streams.For(topic))
	cfg := jetstream.StreamConfig{
		Name:        name,
		Description: streamDescription(topic),
		Subjects:    []string{topic},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew,
		Storage:     jetstream.FileStorage,
		Replicas:    s.Replicas,
		MaxAge:      *s.MaxAge,
		MaxBytes:    -1,
		MaxMsgs:     -1,
		Duplicates:  *s.Duplicates,
		// Publishes may go as atomic batches (batch.go).
		AllowAtomicPublish: b.cfg.MaxBatch > 1,
	}
	if s.Storage == topology.StorageMemory {
		cfg.Storage = jetstream.MemoryStorage
	}
	if cfg.MaxAge > 0 && cfg.Duplicates > cfg.MaxAge {
		// A topic's max_age under the default window: JetStream wants
		// the window within the age.
		cfg.Duplicates = cfg.MaxAge
	}
	if s.Retention == topology.RetentionInterest {
		cfg.Retention = jetstream.InterestPolicy
	}
	if *s.MaxBytes > 0 {
		cfg.MaxBytes = int64(*s.MaxBytes)
	}
	if *s.MaxMsgs > 0 {
		cfg.MaxMsgs = *s.MaxMsgs
	}
	return cfg
}

// describeLimits says what a stream keeps, for logs and errors:
// "retention limits, max_age 168h0m0s, max_bytes none, max_msgs none,
// discard new, replicas 1".
func describeLimits(c jetstream.StreamConfig) string {
	retention := topology.RetentionLimits
	switch c.Retention {
	case jetstream.InterestPolicy:
		retention = topology.RetentionInterest
	case jetstream.WorkQueuePolicy:
		retention = "workqueue"
	}
	age := "none"
	if c.MaxAge > 0 {
		age = c.MaxAge.String()
	}
	bytes := "none"
	if c.MaxBytes > 0 {
		bytes = topology.ByteSize(c.MaxBytes).String()
	}
	msgs := "none"
	if c.MaxMsgs > 0 {
		msgs = fmt.Sprint(c.MaxMsgs)
	}
	discard := "old"
	if c.Discard == jetstream.DiscardNew {
		discard = "new"
	}
	return fmt.Sprintf("retention %s, max_age %s, max_bytes %s, max_msgs %s, discard %s, replicas %d, storage %s, duplicates %s",
		retention, age, bytes, msgs, discard, max(c.Replicas, 1), storageName(c.Storage), c.Duplicates)
}

func storageName(s jetstream.StorageType) string {
	if s == jetstream.MemoryStorage {
		return topology.StorageMemory
	}
	return topology.StorageFile
}

// JetStream error codes the adapter reads as "no space to store".
const (
	jsErrAccountResources  jetstream.ErrorCode = 10002 // resource limits exceeded for account
	jsErrInsufficient      jetstream.ErrorCode = 10023 // insufficient resources (the server's limit)
	jsErrMemoryResources   jetstream.ErrorCode = 10028 // insufficient memory resources available
	jsErrStorageResources  jetstream.ErrorCode = 10047 // insufficient storage resources available
	jsErrStreamStoreFailed jetstream.ErrorCode = 10077 // storing failed: {err}
)

// storageFull reports whether err is JetStream refusing to store for lack
// of space: the server's or the account's storage limit, or the stream's
// own limit with discard new ("maximum bytes exceeded", "maximum messages
// exceeded"), or a full disk.
func storageFull(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case jsErrAccountResources, jsErrInsufficient, jsErrMemoryResources, jsErrStorageResources:
		return true
	case jsErrStreamStoreFailed:
		d := apiErr.Description
		return strings.HasPrefix(d, "maximum bytes exceeded") || strings.HasPrefix(d, "maximum messages") || noSpace(d)
	}
	return false
}

// streamLimitHit reports whether err is the stream's own limit (as opposed
// to the server's or the account's).
func streamLimitHit(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrStreamStoreFailed && strings.HasPrefix(apiErr.Description, "maximum ")
}

// publishError formats a failed publish of topic to ref's stream. A
// refusal for lack of space says what is full and how space comes back.
// With an embedded server, a publish that got no answer from a stream the
// store could not write to (full disk) is reported as storage full too:
// the server does not answer such a publish, and it did not store it.
// Anything else that does not prove the message was not stored
// (publishNotStored) wraps broker.ErrOutcomeUnknown.
func (b *Broker) publishError(topic string, ref *streamRef, err error) error {
	switch {
	case storageFull(err) && streamLimitHit(err):
		return fmt.Errorf("natsbroker: publish %q: %w: stream %s is at its limit (%s): nothing was stored; %s: %w",
			topic, broker.ErrStorageFull, ref.name, describeLimits(ref.cfg), spaceComesBack(ref.cfg), err)
	case storageFull(err):
		return fmt.Errorf("natsbroker: publish %q: %w: %s: nothing was stored; %s: %w",
			topic, broker.ErrStorageFull, b.serverFullReason(), spaceComesBack(ref.cfg), err)
	case b.cfg.Embedded != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)):
		w := b.cfg.Embedded.store
		w.checkNow()
		if w.streamFull(ref.name) {
			return fmt.Errorf("natsbroker: publish %q: %w: stream %s could not write to the embedded broker's store (%s), whose disk is full: nothing was stored; publishes resume once space is freed: %w",
				topic, broker.ErrStorageFull, ref.name, w.dir, err)
		}
	}
	if publishNotStored(err) {
		return b.opError("publish", topic, err)
	}
	return fmt.Errorf("natsbroker: publish %q: %w: %w", topic, broker.ErrOutcomeUnknown, err)
}

// serverFullReason says which storage limit a server-wide refusal means.
func (b *Broker) serverFullReason() string {
	if e := b.cfg.Embedded; e != nil {
		return e.store.limitReason()
	}
	return "the NATS server's JetStream storage is full (its max_file_store, or the account's storage limit)"
}

// spaceComesBack says how space comes back to a stream configured as c.
func spaceComesBack(c jetstream.StreamConfig) string {
	switch {
	case c.Retention == jetstream.InterestPolicy:
		return "space comes back as every consumer group acks its messages"
	case c.MaxAge > 0:
		return fmt.Sprintf("space comes back as messages expire (max_age %s), or when an operator purges the stream or raises its limit", c.MaxAge)
	}
	return "messages do not expire here (no max_age): an operator must purge the stream or raise its limit"
}
