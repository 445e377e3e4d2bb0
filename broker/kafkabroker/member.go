package kafkabroker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/apiversions"
	"github.com/segmentio/kafka-go/protocol/heartbeat"
	"github.com/segmentio/kafka-go/protocol/joingroup"
	"github.com/segmentio/kafka-go/protocol/leavegroup"
	"github.com/segmentio/kafka-go/protocol/syncgroup"
)

// Versions of the group requests this member sends: the newest of these
// ranges that the coordinator supports. All are non-flexible versions that
// Kafka 2.3 to 4.x accept; JoinGroup v4+ makes a new member ask for its id
// first (MEMBER_ID_REQUIRED), which join handles. Heartbeat and LeaveGroup
// stay at v0: kafka-go v0.4.51 declares their responses' ErrorCode before
// ThrottleTimeMs, while from v1 on Kafka sends the throttle time first, so
// it would read every v1+ error code as 0 (and miss every rebalance).
var groupAPIVersions = map[protocol.ApiKey][2]int16{
	protocol.JoinGroup:  {2, 5},
	protocol.SyncGroup:  {1, 3},
	protocol.Heartbeat:  {0, 0},
	protocol.LeaveGroup: {0, 0},
}

// joinTimeout bounds JoinGroup and SyncGroup. The coordinator holds a join
// until every member rejoined or its rebalance timeout passed, and the
// rebalance timeout of Java and librdkafka consumers is their
// max.poll.interval.ms (5 min by default).
const joinTimeout = 5*time.Minute + 30*time.Second

// errRejoin: the group is rebalancing (or forgot this member); the member
// must join again.
var errRejoin = errors.New("group rebalancing: rejoin")

// member is one consumer's membership in its Kafka consumer group (protocol
// type "consumer", eager assignors range and roundrobin), spoken over a
// connection of its own to the group coordinator, so that a JoinGroup held
// by the coordinator for the length of a rebalance blocks nobody else.
// Offsets are committed and fetched through the consumer's kafka.Client.
//
// Not safe for concurrent use: the consumer's group goroutine owns it.
type member struct {
	b     *Broker
	group string
	topic string
	log   *slog.Logger

	conn     net.Conn
	rw       io.ReadWriter
	corr     int32
	versions map[protocol.ApiKey]int16

	id         string // member id the coordinator gave; "" before the first join
	generation int32
	// leader is whether this member assigned the current generation;
	// then watched holds the partitions of every topic the group
	// subscribes to, as assigned, so that a change triggers a rebalance.
	leader  bool
	watched map[string][]int32
}

func newMember(b *Broker, group, topic string, log *slog.Logger) *member {
	return &member{b: b, group: group, topic: topic, log: log, generation: -1}
}

// connect finds the group's coordinator and opens a connection to it.
func (m *member) connect(ctx context.Context) error {
	if m.conn != nil {
		return nil
	}
	fc, err := m.b.client.FindCoordinator(ctx, &kafka.FindCoordinatorRequest{Key: m.group, KeyType: kafka.CoordinatorKeyTypeConsumer})
	if err != nil {
		return fmt.Errorf("find coordinator: %w", err)
	}
	if fc.Error != nil {
		return fmt.Errorf("find coordinator: %w", fc.Error)
	}
	if fc.Coordinator == nil {
		return fmt.Errorf("find coordinator: %w", kafka.GroupCoordinatorNotAvailable)
	}
	addr := net.JoinHostPort(fc.Coordinator.Host, strconv.Itoa(fc.Coordinator.Port))
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("connect to coordinator %s: %w", addr, err)
	}
	m.conn = conn
	m.rw = struct {
		io.Reader
		io.Writer
	}{bufio.NewReader(conn), conn}
	m.versions = nil
	res, err := m.roundTrip(ctx, 0, &apiversions.Request{}, requestTimeout)
	if err != nil {
		return fmt.Errorf("coordinator %s: api versions: %w", addr, err)
	}
	av := res.(*apiversions.Response)
	if av.ErrorCode != 0 {
		m.disconnect()
		return fmt.Errorf("coordinator %s: api versions: %w", addr, kafka.Error(av.ErrorCode))
	}
	versions := make(map[protocol.ApiKey]int16, len(groupAPIVersions))
	for key, want := range groupAPIVersions {
		i := slices.IndexFunc(av.ApiKeys, func(k apiversions.ApiKeyResponse) bool { return k.ApiKey == int16(key) })
		if i < 0 || av.ApiKeys[i].MaxVersion < want[0] || av.ApiKeys[i].MinVersion > want[1] {
			m.disconnect()
			return fmt.Errorf("coordinator %s does not support %s v%d to v%d", addr, key, want[0], want[1])
		}
		versions[key] = min(want[1], av.ApiKeys[i].MaxVersion)
	}
	m.versions = versions
	return nil
}

// disconnect closes the coordinator connection; the next call connects
// again (to the coordinator of that time).
func (m *member) disconnect() {
	if m.conn != nil {
		m.conn.Close()
		m.conn, m.rw = nil, nil
	}
}

// roundTrip sends req at version v and reads its response, within timeout
// and until ctx ends. A network error closes the connection.
func (m *member) roundTrip(ctx context.Context, v int16, req protocol.Message, timeout time.Duration) (protocol.Message, error) {
	if m.conn == nil {
		return nil, errors.New("not connected")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	conn := m.conn
	conn.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	m.corr++
	res, err := protocol.RoundTrip(m.rw, v, m.corr, m.b.cfg.ClientID, req)
	stop()
	if err != nil {
		m.disconnect()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	return res, nil
}

// call sends req at the negotiated version of its API.
func (m *member) call(ctx context.Context, req protocol.Message, timeout time.Duration) (protocol.Message, error) {
	if err := m.connect(ctx); err != nil {
		return nil, err
	}
	return m.roundTrip(ctx, m.versions[req.ApiKey()], req, timeout)
}

// codeError turns a response error code into an error: nil for 0, and for
// the codes that mean "rebalance" or "forgotten" an error wrapping
// errRejoin; it also resets what those codes invalidate.
func (m *member) codeError(code int16) error {
	if code == 0 {
		return nil
	}
	err := kafka.Error(code)
	switch err {
	case kafka.UnknownMemberId:
		m.id, m.generation = "", -1
		return fmt.Errorf("%w: %w", errRejoin, err)
	case kafka.RebalanceInProgress, kafka.IllegalGeneration, kafka.FencedInstanceID:
		return fmt.Errorf("%w: %w", errRejoin, err)
	case kafka.NotCoordinatorForGroup, kafka.GroupCoordinatorNotAvailable, kafka.GroupLoadInProgress:
		m.disconnect()
	}
	return err
}

// join joins the group (again), subscribed to m.topic, and returns the
// partitions of m.topic assigned to this member in the new generation.
// owned are the partitions it held before (sent as OwnedPartitions). If
// this member is elected leader, it assigns the partitions of every
// member's subscribed topics with the assignor the coordinator chose.
// Errors wrapping errRejoin ask for another join at once.
func (m *member) join(ctx context.Context, owned []int32) ([]int32, error) {
	sub := subscription{Topics: []string{m.topic}}
	if len(owned) > 0 {
		sub.OwnedPartitions = []topicPartitions{{Topic: m.topic, Partitions: owned}}
	}
	meta := appendSubscription(nil, &sub)
	protos := make([]joingroup.RequestProtocol, len(assignors))
	for i, name := range assignors {
		protos[i] = joingroup.RequestProtocol{Name: name, Metadata: meta}
	}
	res, err := m.call(ctx, &joingroup.Request{
		GroupID:            m.group,
		SessionTimeoutMS:   int32(sessionTimeout / time.Millisecond),
		RebalanceTimeoutMS: int32(rebalanceTimeout / time.Millisecond),
		MemberID:           m.id,
		ProtocolType:       consumerProtocolType,
		Protocols:          protos,
	}, joinTimeout)
	if err != nil {
		return nil, fmt.Errorf("join group: %w", err)
	}
	jr := res.(*joingroup.Response)
	if jr.ErrorCode == int16(kafka.MemberIDRequired) {
		// KIP-394: join again at once with the id the coordinator chose.
		m.id = jr.MemberID
		return nil, fmt.Errorf("join group: %w: %w", errRejoin, kafka.MemberIDRequired)
	}
	if err := m.codeError(jr.ErrorCode); err != nil {
		if errors.Is(err, kafka.InconsistentGroupProtocol) {
			err = fmt.Errorf("%w (the group's members use a protocol type or assignors this member does not offer: it offers %q range and roundrobin)", err, consumerProtocolType)
		}
		return nil, fmt.Errorf("join group: %w", err)
	}
	m.id, m.generation = jr.MemberID, jr.GenerationID
	m.leader = jr.LeaderID == jr.MemberID
	m.watched = nil

	var assignments []syncgroup.RequestAssignment
	if m.leader {
		assignments, err = m.assignAll(ctx, jr.ProtocolName, jr.Members)
		if err != nil {
			return nil, fmt.Errorf("assign partitions as group leader: %w", err)
		}
	}
	res, err = m.call(ctx, &syncgroup.Request{
		GroupID:      m.group,
		GenerationID: m.generation,
		MemberID:     m.id,
		ProtocolType: consumerProtocolType,
		ProtocolName: jr.ProtocolName,
		Assignments:  assignments,
	}, joinTimeout)
	if err != nil {
		return nil, fmt.Errorf("sync group: %w", err)
	}
	sr := res.(*syncgroup.Response)
	if err := m.codeError(sr.ErrorCode); err != nil {
		return nil, fmt.Errorf("sync group: %w", err)
	}
	a, err := parseAssignment(sr.Assignments)
	if err != nil {
		// A leader whose assignment cannot be read: take nothing in
		// this generation rather than guess.
		m.log.Warn("cannot read the assignment the group leader sent; consuming nothing until the next rebalance",
			"leader", jr.LeaderID, "error", err)
		return nil, nil
	}
	return partitionsOf(a.Partitions, m.topic), nil
}

// assignAll computes every member's assignment with the named assignor.
// A member whose subscription cannot be read gets nothing (and is
// logged); the others are assigned as if it were absent.
func (m *member) assignAll(ctx context.Context, protocolName string, members []joingroup.ResponseMember) ([]syncgroup.RequestAssignment, error) {
	subs := make([]groupMemberSub, 0, len(members))
	var topics []string
	for _, jm := range members {
		s, err := parseSubscription(jm.Metadata)
		if err != nil {
			m.log.Warn("cannot read a group member's subscription; assigning it nothing", "member", jm.MemberID, "error", err)
			subs = append(subs, groupMemberSub{id: jm.MemberID, instanceID: jm.GroupInstanceID})
			continue
		}
		subs = append(subs, groupMemberSub{id: jm.MemberID, instanceID: jm.GroupInstanceID, topics: s.Topics})
		topics = append(topics, s.Topics...)
	}
	slices.Sort(topics)
	topics = slices.Compact(topics)
	parts, err := m.b.partitions(ctx, topics)
	if err != nil {
		return nil, err
	}
	byMember := assign(protocolName, subs, parts)
	out := make([]syncgroup.RequestAssignment, 0, len(subs))
	for _, s := range subs {
		out = append(out, syncgroup.RequestAssignment{
			MemberID:   s.id,
			Assignment: appendAssignment(nil, &assignment{Partitions: byMember[s.id]}),
		})
	}
	m.watched = parts
	return out, nil
}

// heartbeat tells the coordinator this member is alive. An error wrapping
// errRejoin means the group rebalances.
func (m *member) heartbeat(ctx context.Context) error {
	res, err := m.call(ctx, &heartbeat.Request{GroupID: m.group, GenerationID: m.generation, MemberID: m.id}, requestTimeout)
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	if err := m.codeError(res.(*heartbeat.Response).ErrorCode); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}

// metadataChanged reports, for a leader, whether the partitions of a topic
// the group subscribes to changed since it assigned them (a topic created
// or grown): then the group must rebalance, as Kafka's clients do.
func (m *member) metadataChanged(ctx context.Context) bool {
	if !m.leader || m.watched == nil {
		return false
	}
	topics := make([]string, 0, len(m.watched))
	for t := range m.watched {
		topics = append(topics, t)
	}
	now, err := m.b.partitions(ctx, topics)
	if err != nil {
		return false
	}
	for _, t := range topics {
		if !slices.Equal(now[t], m.watched[t]) {
			m.log.Info("partitions of a subscribed topic changed; rebalancing the group", "changed", t,
				"before", len(m.watched[t]), "now", len(now[t]))
			return true
		}
	}
	return false
}

// leave leaves the group (so that it rebalances at once, not after the
// session timeout) and closes the connection.
func (m *member) leave(ctx context.Context) error {
	defer m.disconnect()
	if m.id == "" {
		return nil
	}
	id := m.id
	m.id, m.generation = "", -1
	res, err := m.call(ctx, &leavegroup.Request{
		GroupID:  m.group,
		MemberID: id,
		Members:  []leavegroup.RequestMember{{MemberID: id}},
	}, requestTimeout)
	if err != nil {
		return fmt.Errorf("leave group: %w", err)
	}
	if code := res.(*leavegroup.Response).ErrorCode; code != 0 && kafka.Error(code) != kafka.UnknownMemberId {
		return fmt.Errorf("leave group: %w", kafka.Error(code))
	}
	return nil
}

// partitions returns the sorted partition ids of each topic that exists
// (a topic that does not is left out). Served from the transport's
// metadata cache, refreshed every few seconds.
func (b *Broker) partitions(ctx context.Context, topics []string) (map[string][]int32, error) {
	out := make(map[string][]int32, len(topics))
	if len(topics) == 0 {
		return out, nil
	}
	md, err := b.client.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	for _, t := range md.Topics {
		if t.Error != nil || len(t.Partitions) == 0 {
			continue
		}
		ps := make([]int32, len(t.Partitions))
		for i, p := range t.Partitions {
			ps[i] = int32(p.ID)
		}
		slices.Sort(ps)
		out[t.Name] = ps
	}
	return out, nil
}
