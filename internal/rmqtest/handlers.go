package rmqtest

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"
)

// permReadWrite is the permission of every queue (PermName: read 4 |
// write 2).
const permReadWrite = 6

// brokerData is a BrokerData of a route or the cluster info.
type brokerData struct {
	Cluster     string            `json:"cluster"`
	BrokerName  string            `json:"brokerName"`
	BrokerAddrs map[string]string `json:"brokerAddrs"`
}

func (b *Broker) brokerData() brokerData {
	return brokerData{Cluster: ClusterName, BrokerName: BrokerName, BrokerAddrs: map[string]string{"0": b.advertise}}
}

// handleRoute answers GET_ROUTEINFO_BY_TOPIC with the one broker and the
// topic's queues, creating the topic if it is new and its name is legal.
func (b *Broker) handleRoute(req *command) *command {
	name := req.Ext["topic"]
	if !validTopic(name) || name == scheduleTopic {
		return errorResponse(respTopicNotExist, "No topic route info in name server for the topic: "+name)
	}
	n := b.st.ensureTopic(name)
	type queueData struct {
		BrokerName     string `json:"brokerName"`
		ReadQueueNums  int    `json:"readQueueNums"`
		WriteQueueNums int    `json:"writeQueueNums"`
		Perm           int    `json:"perm"`
		TopicSysFlag   int    `json:"topicSysFlag"`
	}
	body, err := json.Marshal(struct {
		OrderTopicConf    string              `json:"orderTopicConf,omitempty"`
		QueueDatas        []queueData         `json:"queueDatas"`
		BrokerDatas       []brokerData        `json:"brokerDatas"`
		FilterServerTable map[string][]string `json:"filterServerTable"`
	}{
		QueueDatas:        []queueData{{BrokerName: BrokerName, ReadQueueNums: n, WriteQueueNums: n, Perm: permReadWrite}},
		BrokerDatas:       []brokerData{b.brokerData()},
		FilterServerTable: map[string][]string{},
	})
	if err != nil {
		return errorResponse(respSystemError, err.Error())
	}
	return okResponse(nil, body)
}

func (b *Broker) handleClusterInfo() *command {
	body, err := json.Marshal(map[string]any{
		"brokerAddrTable":  map[string]brokerData{BrokerName: b.brokerData()},
		"clusterAddrTable": map[string][]string{ClusterName: {BrokerName}},
	})
	if err != nil {
		return errorResponse(respSystemError, err.Error())
	}
	return okResponse(nil, body)
}

func (b *Broker) handleAllTopics() *command {
	names := b.st.topicNames()
	sort.Strings(names)
	body, err := json.Marshal(map[string][]string{"topicList": names})
	if err != nil {
		return errorResponse(respSystemError, err.Error())
	}
	return okResponse(nil, body)
}

// sendHeader is SendMessageRequestHeader; code SEND_MESSAGE_V2 and
// SEND_BATCH_MESSAGE use the short field names of
// SendMessageRequestHeaderV2.
type sendHeader struct {
	topic     string
	queueID   int32
	sysFlag   int32
	bornTS    int64
	flag      int32
	props     string
	reconsume int32
}

func parseSendHeader(req *command) (sendHeader, error) {
	f := req.Ext
	name := func(long, short string) string {
		if req.Code == CodeSendMessage {
			return f[long]
		}
		return f[short]
	}
	var (
		h    sendHeader
		errs []error
	)
	num := func(long, short string, bits int) int64 {
		s := name(long, short)
		if s == "" {
			return 0
		}
		v, err := strconv.ParseInt(s, 10, bits)
		if err != nil {
			errs = append(errs, fmt.Errorf("header %s: %w", long, err))
		}
		return v
	}
	h.topic = name("topic", "b")
	h.queueID = int32(num("queueId", "e", 32))
	h.sysFlag = int32(num("sysFlag", "f", 32))
	h.bornTS = num("bornTimestamp", "g", 64)
	h.flag = int32(num("flag", "h", 32))
	h.props = name("properties", "i")
	h.reconsume = int32(num("reconsumeTimes", "j", 32))
	return h, errors.Join(errs...)
}

// handleSend stores a message (SEND_MESSAGE, SEND_MESSAGE_V2) or a batch
// (SEND_BATCH_MESSAGE, all in one queue with consecutive offsets) and
// answers with the broker-side msgId, queueId and queueOffset of the
// (first) message.
func (b *Broker) handleSend(c *conn, req *command) *command {
	h, err := parseSendHeader(req)
	if err != nil {
		return errorResponse(respMessageIllegal, err.Error())
	}
	switch {
	case !validTopic(h.topic):
		return errorResponse(respSystemError, fmt.Sprintf("the specified topic [%s] contains illegal characters or is too long", h.topic))
	case h.topic == scheduleTopic:
		return errorResponse(respSystemError, "the topic "+scheduleTopic+" is a system topic")
	case h.sysFlag&msgFlagTransactionMask != 0:
		return errorResponse(respSystemError, "transaction messages are not supported by this test broker")
	}
	n := b.st.ensureTopic(h.topic)
	if h.queueID < 0 {
		h.queueID = int32(rand.IntN(n))
	}
	if int(h.queueID) >= n {
		return errorResponse(respSystemError, fmt.Sprintf("request queueId[%d] is illegal, topic %s has %d queues", h.queueID, h.topic, n))
	}
	var entries []batchEntry
	if req.Code == CodeSendBatchMessage {
		if entries, err = decodeBatch(req.Body); err != nil {
			return errorResponse(respMessageIllegal, err.Error())
		}
		if len(entries) == 0 {
			return errorResponse(respMessageIllegal, "empty batch")
		}
	} else {
		entries = []batchEntry{{Flag: h.flag, Body: req.Body, Properties: h.props}}
	}
	puts := make([]*putRequest, 0, len(entries))
	for _, e := range entries {
		if len(e.Body) > b.cfg.MaxMessageSize {
			return errorResponse(respMessageIllegal, fmt.Sprintf("the message body size over max value, MAX: %d", b.cfg.MaxMessageSize))
		}
		if len(e.Properties) > maxPropertiesLen {
			return errorResponse(respMessageIllegal, fmt.Sprintf("the message properties length %d exceeds %d", len(e.Properties), maxPropertiesLen))
		}
		props := parseProperties(e.Properties)
		if len(entries) > 1 && props[propDelayLevel] != "" && props[propDelayLevel] != "0" {
			return errorResponse(respMessageIllegal, "a batch may not contain delayed messages")
		}
		puts = append(puts, &putRequest{
			topic:     h.topic,
			queueID:   h.queueID,
			flag:      e.Flag,
			sysFlag:   h.sysFlag,
			bornTS:    h.bornTS,
			bornHost:  c.remote,
			reconsume: h.reconsume,
			body:      e.Body,
			props:     props,
		})
	}
	stored, err := b.st.putAll(puts)
	if err != nil {
		c.log.Warn("store failed", "topic", h.topic, "error", err)
		return errorResponse(respSystemError, err.Error())
	}
	ids := make([]string, len(stored))
	for i, m := range stored {
		ids[i] = offsetMsgID(m.StoreHost, m.PhysOffset)
	}
	return okResponse(map[string]string{
		"msgId":       strings.Join(ids, ","),
		"queueId":     strconv.Itoa(int(h.queueID)),
		"queueOffset": strconv.FormatInt(stored[0].QueueOffset, 10),
		"MSG_REGION":  "DefaultRegion",
		"TRACE_ON":    "false",
	}, nil)
}

// pullArgs is PullMessageRequestHeader.
type pullArgs struct {
	group        string
	topic        string
	queueID      int32
	offset       int64
	maxMsgs      int
	sysFlag      int32
	commitOffset int64
	suspend      time.Duration
	filter       tagFilter // the subscription the pull carries; nil: every message
}

func parsePullArgs(f map[string]string) (pullArgs, error) {
	var errs []error
	num := func(k string, bits int) int64 {
		v, err := strconv.ParseInt(f[k], 10, bits)
		if err != nil {
			errs = append(errs, fmt.Errorf("header %s: %w", k, err))
		}
		return v
	}
	p := pullArgs{
		group:   f["consumerGroup"],
		topic:   f["topic"],
		queueID: int32(num("queueId", 32)),
		offset:  num("queueOffset", 64),
		maxMsgs: int(num("maxMsgNums", 32)),
		sysFlag: int32(num("sysFlag", 32)),
	}
	if f["commitOffset"] != "" {
		p.commitOffset = num("commitOffset", 64)
	}
	if f["suspendTimeoutMillis"] != "" {
		p.suspend = time.Duration(num("suspendTimeoutMillis", 64)) * time.Millisecond
	}
	// A pull with the subscription flag carries its expression; TAG
	// expressions are filtered here, by tag hash code, as RocketMQ's
	// broker does (the client checks the tags themselves again). SQL92 is
	// not evaluated.
	if p.sysFlag&pullFlagSubscription != 0 && (f["expressionType"] == "" || f["expressionType"] == "TAG") {
		p.filter = parseTagFilter(f["subscription"])
	}
	return p, errors.Join(errs...)
}

// handlePull answers PULL_MESSAGE. With the suspend flag, a pull that finds
// nothing waits (long polling) until a message arrives in the queue, its
// suspend timeout (capped by Config.MaxPollWait) passes, or the connection
// or broker closes; the commit offset a pull may carry is committed first.
func (b *Broker) handlePull(c *conn, req *command) *command {
	p, err := parsePullArgs(req.Ext)
	if err != nil {
		return errorResponse(respSystemError, err.Error())
	}
	if b.st.queueCountOf(p.topic) == 0 {
		return errorResponse(respTopicNotExist, fmt.Sprintf("topic[%s] not exist, apply first please!", p.topic))
	}
	if p.sysFlag&pullFlagCommitOffset != 0 && p.commitOffset >= 0 && p.group != "" {
		b.offsets.set(offsetKey{p.group, p.topic, p.queueID}, p.commitOffset)
	}
	res := b.st.get(p.topic, p.queueID, p.offset, p.maxMsgs, p.filter)
	if res.status == pullNotFound && p.sysFlag&pullFlagSuspend != 0 && p.suspend > 0 {
		wait := min(p.suspend, b.cfg.MaxPollWait)
		if b.goSafe(func() { b.longPoll(c, req, p, res.signal, wait) }) {
			return nil
		}
	}
	return pullResponse(p.queueID, res)
}

func (b *Broker) longPoll(c *conn, req *command, p pullArgs, signal <-chan struct{}, wait time.Duration) {
	b.waiting.Add(1)
	defer b.waiting.Add(-1)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-signal:
			res := b.st.get(p.topic, p.queueID, p.offset, p.maxMsgs, p.filter)
			if res.status == pullNotFound {
				signal = res.signal
				continue
			}
			c.respond(req, pullResponse(p.queueID, res))
			return
		case <-timer.C:
			c.respond(req, pullResponse(p.queueID, b.st.get(p.topic, p.queueID, p.offset, p.maxMsgs, p.filter)))
			return
		case <-c.done:
			return
		case <-b.done:
			return
		}
	}
}

func pullResponse(queueID int32, res pullResult) *command {
	var code int16
	switch res.status {
	case pullFound:
		code = respSuccess
	case pullNotFound:
		code = respPullNotFound
	case pullOffsetMoved:
		code = respPullOffsetMoved
	case pullNoMatch:
		code = respPullRetryImmediately
	default:
		return errorResponse(respSystemError, fmt.Sprintf("queueId[%d] is illegal", queueID))
	}
	return &command{
		Code: code,
		Ext: map[string]string{
			"nextBeginOffset":      strconv.FormatInt(res.next, 10),
			"minOffset":            strconv.FormatInt(res.minOff, 10),
			"maxOffset":            strconv.FormatInt(res.maxOff, 10),
			"suggestWhichBrokerId": "0",
		},
		Body: res.body,
	}
}

func queueArgs(f map[string]string) (topic string, queueID int32, err error) {
	q, err := strconv.ParseInt(f["queueId"], 10, 32)
	if err != nil {
		return "", 0, fmt.Errorf("header queueId: %w", err)
	}
	return f["topic"], int32(q), nil
}

// handleQueryOffset answers QUERY_CONSUMER_OFFSET. Without a committed
// offset it answers 0 for an existing queue, as RocketMQ does while a
// queue's first message is still in memory (always, here): a new group
// starts at the beginning whatever its ConsumeFromWhere.
func (b *Broker) handleQueryOffset(req *command) *command {
	topic, qid, err := queueArgs(req.Ext)
	if err != nil {
		return errorResponse(respSystemError, err.Error())
	}
	off, ok := b.offsets.get(offsetKey{req.Ext["consumerGroup"], topic, qid})
	if !ok {
		if n := b.st.queueCountOf(topic); qid < 0 || int(qid) >= n {
			return errorResponse(respQueryNotFound, "Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first")
		}
		off = 0
	}
	return okResponse(map[string]string{"offset": strconv.FormatInt(off, 10)}, nil)
}

func (b *Broker) handleUpdateOffset(req *command) *command {
	topic, qid, err := queueArgs(req.Ext)
	if err != nil {
		return errorResponse(respSystemError, err.Error())
	}
	off, err := strconv.ParseInt(req.Ext["commitOffset"], 10, 64)
	if err != nil {
		return errorResponse(respSystemError, "header commitOffset: "+err.Error())
	}
	b.offsets.set(offsetKey{req.Ext["consumerGroup"], topic, qid}, off)
	return okResponse(nil, nil)
}

func (b *Broker) handleMaxOffset(req *command) *command {
	topic, qid, err := queueArgs(req.Ext)
	if err != nil {
		return errorResponse(respSystemError, err.Error())
	}
	return okResponse(map[string]string{"offset": strconv.FormatInt(b.st.maxOffset(topic, qid), 10)}, nil)
}

func (b *Broker) handleSearchOffset(req *command) *command {
	topic, qid, err := queueArgs(req.Ext)
	if err != nil {
		return errorResponse(respSystemError, err.Error())
	}
	ts, err := strconv.ParseInt(req.Ext["timestamp"], 10, 64)
	if err != nil {
		return errorResponse(respSystemError, "header timestamp: "+err.Error())
	}
	return okResponse(map[string]string{"offset": strconv.FormatInt(b.st.searchOffset(topic, qid, ts), 10)}, nil)
}

// heartbeatData is the HEART_BEAT body (only what the broker uses).
type heartbeatData struct {
	ClientID        string `json:"clientID"`
	ConsumerDataSet []struct {
		GroupName    string `json:"groupName"`
		MessageModel string `json:"messageModel"`
	} `json:"consumerDataSet"`
}

// handleHeartbeat records the client's consumer groups (creating their
// retry topics, for clustering groups) and notifies groups whose members
// changed.
func (b *Broker) handleHeartbeat(c *conn, req *command) *command {
	var hb heartbeatData
	if err := json.Unmarshal(req.Body, &hb); err != nil {
		return errorResponse(respSystemError, "heartbeat body: "+err.Error())
	}
	if hb.ClientID == "" {
		return errorResponse(respSystemError, "heartbeat without clientID")
	}
	names := make([]string, 0, len(hb.ConsumerDataSet))
	for _, cd := range hb.ConsumerDataSet {
		if cd.GroupName == "" {
			continue
		}
		names = append(names, cd.GroupName)
		if !strings.EqualFold(cd.MessageModel, "BROADCASTING") && validTopic(retryTopicPrefix+cd.GroupName) {
			b.st.ensureTopic(retryTopicPrefix + cd.GroupName)
		}
	}
	if changed := b.groups.heartbeat(c, hb.ClientID, names, time.Now()); len(changed) > 0 {
		c.log.Debug("consumer groups changed", "client", hb.ClientID, "groups", changed)
		b.notifyGroups(changed, c)
	}
	return okResponse(nil, nil)
}

func (b *Broker) handleUnregister(req *command) *command {
	group, id := req.Ext["consumerGroup"], req.Ext["clientID"]
	if group != "" && b.groups.remove(group, id) {
		b.notifyGroups([]string{group}, nil)
	}
	return okResponse(nil, nil)
}

func (b *Broker) handleConsumerList(req *command) *command {
	body, err := json.Marshal(map[string][]string{"consumerIdList": b.groups.clientIDs(req.Ext["consumerGroup"])})
	if err != nil {
		return errorResponse(respSystemError, err.Error())
	}
	return okResponse(nil, body)
}

// defaultMaxReconsumeTimes applies when a send-back does not say.
const defaultMaxReconsumeTimes = 16

// handleSendBack answers CONSUMER_SEND_MSG_BACK like RocketMQ's
// SendMessageProcessor: the message at the given commit-log offset is
// stored again in %RETRY%<group> with reconsume times + 1, properties
// RETRY_TOPIC (the original topic) and ORIGIN_MESSAGE_ID, and the delay of
// the requested level (0: level 3 + reconsume times), or in %DLQ%<group>
// once the reconsume times reach the maximum or the level is negative.
func (b *Broker) handleSendBack(req *command) *command {
	f := req.Ext
	group := f["group"]
	phys, err := strconv.ParseInt(f["offset"], 10, 64)
	if err != nil || group == "" {
		return errorResponse(respSystemError, "send back: bad offset or group")
	}
	delay, _ := strconv.Atoi(f["delayLevel"])
	maxRe := defaultMaxReconsumeTimes
	if v, err := strconv.Atoi(f["maxReconsumeTimes"]); err == nil {
		maxRe = v
	}
	m, ok := b.st.lookup(phys)
	if !ok {
		return errorResponse(respSystemError, fmt.Sprintf("look message by offset failed, %d", phys))
	}
	props := parseProperties(m.Properties)
	if props[propRetryTopic] == "" {
		props[propRetryTopic] = m.Topic
	}
	props[propWaitStoreMsgOK] = "false"
	origin := f["originMsgId"]
	if origin == "" {
		origin = offsetMsgID(m.StoreHost, m.PhysOffset)
	}
	props[propOriginMessageID] = origin
	target := retryTopicPrefix + group
	if int(m.ReconsumeTimes) >= maxRe || delay < 0 {
		target = dlqTopicPrefix + group
		delete(props, propDelayLevel)
	} else {
		if delay == 0 {
			delay = 3 + int(m.ReconsumeTimes)
		}
		props[propDelayLevel] = strconv.Itoa(delay)
	}
	if !validTopic(target) {
		return errorResponse(respSystemError, "send back: illegal group "+group)
	}
	_, err = b.st.putAll([]*putRequest{{
		topic:     target,
		queueID:   0,
		flag:      m.Flag,
		sysFlag:   m.SysFlag,
		bornTS:    m.BornTimestamp,
		bornHost:  m.BornHost,
		reconsume: m.ReconsumeTimes + 1,
		body:      m.Body,
		props:     props,
	}})
	if err != nil {
		return errorResponse(respSystemError, err.Error())
	}
	return okResponse(nil, nil)
}
