package mesh

// Headers the sidecar adds to a message it moves to a dead-letter topic
// (docs/protocol.md §5.7, "Poison messages"). The dead-lettered message
// keeps the original's key, headers and body; these come after the
// original headers, and replace any of the same name the original carried
// (a message dead-lettered twice shows its latest move). Names under the
// "Msgmesh-" prefix are the sidecar's own.
const (
	// HeaderDeadLetterTopic names the topic the message was consumed from.
	HeaderDeadLetterTopic = "Msgmesh-Original-Topic"
	// HeaderDeadLetterGroup names the consumer group that gave up on it.
	HeaderDeadLetterGroup = "Msgmesh-Original-Group"
	// HeaderDeadLetterMessageID is the broker's message id on the original
	// topic (the message_id its deliveries carried).
	HeaderDeadLetterMessageID = "Msgmesh-Original-Message-Id"
	// HeaderDeadLetterAttempts is how many times it was delivered to the
	// group, in decimal.
	HeaderDeadLetterAttempts = "Msgmesh-Attempts"
	// HeaderDeadLetterReason is how its last attempt ended: one of the
	// DeadLetterReason values.
	HeaderDeadLetterReason = "Msgmesh-Dead-Letter-Reason"
	// HeaderDeadLetterTime is when the sidecar moved it, RFC 3339 in UTC
	// with nanoseconds.
	HeaderDeadLetterTime = "Msgmesh-Dead-Lettered-At"
)

// Values of HeaderDeadLetterReason.
const (
	// DeadLetterNack: the app answered the last allowed attempt with NACK
	// (or ERROR).
	DeadLetterNack = "nack"
	// DeadLetterTimeout: the app did not answer the last allowed attempt
	// within the delivery timeout.
	DeadLetterTimeout = "timeout"
	// DeadLetterRedelivered: the broker offered the message again after
	// its last allowed attempt, which ended without an answer the sidecar
	// could act on (the app's connection or the sidecar went away, or an
	// earlier dead-letter publish failed); the sidecar moved it without
	// delivering it again.
	DeadLetterRedelivered = "redelivered"
)
