/*
Licensed to the Apache Software Foundation (ASF) under one or more
contributor license agreements.  See the NOTICE file distributed with
this work for additional information regarding copyright ownership.
The ASF licenses this file to You under the Apache License, Version 2.0
(the "License"); you may not use this file except in compliance with
the License.  You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package primitive

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apache/rocketmq-client-go/v2/internal/utils"
)

const (
	PropertyKeySeparator                   = " "
	PropertyKeys                           = "KEYS"
	PropertyTags                           = "TAGS"
	PropertyWaitStoreMsgOk                 = "WAIT"
	PropertyDelayTimeLevel                 = "DELAY"
	PropertyRetryTopic                     = "RETRY_TOPIC"
	PropertyRealTopic                      = "REAL_TOPIC"
	PropertyRealQueueId                    = "REAL_QID"
	PropertyTransactionPrepared            = "TRAN_MSG"
	PropertyProducerGroup                  = "PGROUP"
	PropertyMinOffset                      = "MIN_OFFSET"
	PropertyMaxOffset                      = "MAX_OFFSET"
	PropertyBuyerId                        = "BUYER_ID"
	PropertyOriginMessageId                = "ORIGIN_MESSAGE_ID"
	PropertyTransferFlag                   = "TRANSFER_FLAG"
	PropertyCorrectionFlag                 = "CORRECTION_FLAG"
	PropertyMQ2Flag                        = "MQ2_FLAG"
	PropertyReconsumeTime                  = "RECONSUME_TIME"
	PropertyMsgRegion                      = "MSG_REGION"
	PropertyTraceSwitch                    = "TRACE_ON"
	PropertyUniqueClientMessageIdKeyIndex  = "UNIQ_KEY"
	PropertyMaxReconsumeTimes              = "MAX_RECONSUME_TIMES"
	PropertyConsumeStartTime               = "CONSUME_START_TIME"
	PropertyTranscationPreparedQueueOffset = "TRAN_PREPARED_QUEUE_OFFSET"
	PropertyTranscationCheckTimes          = "TRANSACTION_CHECK_TIMES"
	PropertyCheckImmunityTimeInSeconds     = "CHECK_IMMUNITY_TIME_IN_SECONDS"
	PropertyShardingKey                    = "SHARDING_KEY"
	PropertyTransactionID                  = "__transactionId__"
	PropertyCorrelationID                  = "CORRELATION_ID"
	PropertyMessageReplyToClient           = "REPLY_TO_CLIENT"
	PropertyMessageTTL                     = "TTL"
	PropertyReplyMessageArriveTime         = "ARRIVE_TIME"
	PropertyMsgType                        = "MSG_TYPE"
	PropertyCluster                        = "CLUSTER"
)

type Message struct {
	Topic          string
	Body           []byte
	CompressedBody []byte
	Flag           int32
	TransactionId  string
	Batch          bool
	Compress       bool
	// Queue is the queue that messages will be sent to. the value must be set if want to custom the queue of message,
	// just ignore if not.
	Queue *MessageQueue

	properties map[string]string
	mutex      sync.RWMutex
}

func (m *Message) WithProperties(p map[string]string) {
	m.mutex.Lock()
	m.properties = p
	m.mutex.Unlock()
}

func (m *Message) WithProperty(key, value string) {
	if key == "" || value == "" {
		return
	}
	m.mutex.Lock()
	if m.properties == nil {
		m.properties = make(map[string]string)
	}
	m.properties[key] = value
	m.mutex.Unlock()
}

func (m *Message) GetProperty(key string) string {
	m.mutex.RLock()
	v := m.properties[key]
	m.mutex.RUnlock()
	return v
}

func (m *Message) RemoveProperty(key string) string {
	m.mutex.Lock()
	defer m.mutex.Unlock()
	value, exist := m.properties[key]
	if !exist {
		return ""
	}
	delete(m.properties, key)
	return value
}
func (m *Message) MarshallProperties() string {
	m.mutex.RLock()
	defer m.mutex.RUnlock()
	// msgmesh patch 10: one allocation of the exact size (a
	// bytes.Buffer grew on the way and String copied it once more).
	// Both separators are one byte.
	n := 0
	for k, v := range m.properties {
		n += len(k) + len(v) + 2
	}
	var buffer strings.Builder
	buffer.Grow(n)
	for k, v := range m.properties {
		buffer.WriteString(k)
		buffer.WriteByte(nameValueSeparator)
		buffer.WriteString(v)
		buffer.WriteByte(propertySeparator)
	}
	return buffer.String()
}

// unmarshalProperties parse data into property kv pairs.
func (m *Message) UnmarshalProperties(data []byte) {
	m.mutex.Lock()
	defer m.mutex.Unlock()
	if m.properties == nil {
		m.properties = make(map[string]string)
	}
	// msgmesh patch 12: the pairs found with IndexByte, not bytes.Split
	// (a slice per pair and one for the pairs); as there, an item is a
	// pair only with exactly one name-value separator.
	for {
		item, rest, more := bytes.Cut(data, []byte{propertySeparator})
		if k, v, ok := bytes.Cut(item, []byte{nameValueSeparator}); ok && bytes.IndexByte(v, nameValueSeparator) < 0 {
			m.properties[string(k)] = string(v)
		}
		if !more {
			return
		}
		data = rest
	}
}

func (m *Message) GetProperties() map[string]string {
	m.mutex.Lock()
	defer m.mutex.Unlock()
	result := make(map[string]string, len(m.properties))
	for k, v := range m.properties {
		result[k] = v
	}
	return result
}

func NewMessage(topic string, body []byte) *Message {
	msg := &Message{
		Topic:      topic,
		Body:       body,
		properties: make(map[string]string),
	}
	//msg.properties[PropertyWaitStoreMsgOk] = strconv.FormatBool(true)
	return msg
}

// WithDelayTimeLevel set message delay time to consume.
// reference delay level definition: 1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h
// delay level starts from 1. for example, if we set param level=1, then the delay time is 1s.
func (m *Message) WithDelayTimeLevel(level int) *Message {
	m.WithProperty(PropertyDelayTimeLevel, strconv.Itoa(level))
	return m
}

func (m *Message) WithTag(tags string) *Message {
	m.WithProperty(PropertyTags, tags)
	return m
}

func (m *Message) WithKeys(keys []string) *Message {
	m.WithProperty(PropertyKeys, strings.Join(keys, PropertyKeySeparator))
	return m
}

func (m *Message) WithShardingKey(key string) *Message {
	m.WithProperty(PropertyShardingKey, key)
	return m
}

func (m *Message) GetTags() string {
	return m.GetProperty(PropertyTags)
}

func (m *Message) GetKeys() string {
	return m.GetProperty(PropertyKeys)
}

func (m *Message) GetShardingKey() string {
	return m.GetProperty(PropertyShardingKey)
}

func (m *Message) String() string {
	return fmt.Sprintf("[topic=%s, body=%s, Flag=%d, properties=%v, TransactionId=%s]",
		m.Topic, string(m.Body), m.Flag, m.properties, m.TransactionId)
}

func (m *Message) Marshal() []byte {
	properties := m.MarshallProperties()
	return m.AppendMarshal(make([]byte, 0, MarshalledSize(len(m.Body), len(properties))), properties)
}

// MarshalledSize is the length of a message's Marshal encoding with a body
// of bodyLen bytes and properties encoded in propertiesLen bytes.
// (msgmesh patch 14: with AppendMarshal, a batch is encoded into one
// buffer of its exact size.)
func MarshalledSize(bodyLen, propertiesLen int) int {
	return 4 + 4 + 4 + 4 + 4 + bodyLen + 2 + propertiesLen
}

// AppendMarshal appends what Marshal returns to dst, with properties the
// message's MarshallProperties().
func (m *Message) AppendMarshal(dst []byte, properties string) []byte {
	// storeSize all size of message info.
	// TOTALSIZE  MAGICCOD BODYCRC FLAG BODYSIZE BODY PROPERTYSIZE PROPERTY
	storeSize := MarshalledSize(len(m.Body), len(properties))
	dst = binary.BigEndian.AppendUint32(dst, uint32(storeSize))   // 1. TOTALSIZE
	dst = binary.BigEndian.AppendUint32(dst, 0)                   // 2. MAGICCODE
	dst = binary.BigEndian.AppendUint32(dst, 0)                   // 3. BODYCRC
	dst = binary.BigEndian.AppendUint32(dst, uint32(m.Flag))      // 4. FLAG
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(m.Body))) // 5. BODYSIZE
	dst = append(dst, m.Body...)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(properties))) // 7. PROPERTYSIZE
	return append(dst, properties...)
}

type MessageExt struct {
	Message
	MsgId                     string
	OffsetMsgId               string
	StoreSize                 int32
	QueueOffset               int64
	SysFlag                   int32
	BornTimestamp             int64
	BornHost                  string
	StoreTimestamp            int64
	StoreHost                 string
	CommitLogOffset           int64
	BodyCRC                   int32
	ReconsumeTimes            int32
	PreparedTransactionOffset int64
}

func (msgExt *MessageExt) GetTags() string {
	return msgExt.GetProperty(PropertyTags)
}

func (msgExt *MessageExt) GetRegionID() string {
	return msgExt.GetProperty(PropertyMsgRegion)
}

func (msgExt *MessageExt) IsTraceOn() string {
	return msgExt.GetProperty(PropertyTraceSwitch)
}

func (msgExt *MessageExt) String() string {
	return fmt.Sprintf("[Message=%s, MsgId=%s, OffsetMsgId=%s,QueueId=%d, StoreSize=%d, QueueOffset=%d, SysFlag=%d, "+
		"BornTimestamp=%d, BornHost=%s, StoreTimestamp=%d, StoreHost=%s, CommitLogOffset=%d, BodyCRC=%d, "+
		"ReconsumeTimes=%d, PreparedTransactionOffset=%d]", msgExt.Message.String(), msgExt.MsgId, msgExt.OffsetMsgId, msgExt.Queue.QueueId,
		msgExt.StoreSize, msgExt.QueueOffset, msgExt.SysFlag, msgExt.BornTimestamp, msgExt.BornHost,
		msgExt.StoreTimestamp, msgExt.StoreHost, msgExt.CommitLogOffset, msgExt.BodyCRC, msgExt.ReconsumeTimes,
		msgExt.PreparedTransactionOffset)
}

// DecodeMessage decodes the messages of a pull response's body.
//
// msgmesh patch 12 (PATCHES.md): it reads the fixed-size fields straight
// from data and formats the hosts and the offset message id into stack
// buffers, where upstream read each field with binary.Read from a
// bytes.Buffer (an allocation per field) and used fmt.Sprintf,
// binary.Write, hex.EncodeToString and strings.ToUpper; a message and its
// queue are one allocation. What it returns, and how it treats a body cut
// short (a field that is not all there reads as upstream's binary.Read
// left it, and consumes what is left), are upstream's.
func DecodeMessage(data []byte) []*MessageExt {
	msgs := make([]*MessageExt, 0)
	buf := msgReader{b: data}
	count := 0
	for count < len(data) {
		mq := &struct {
			ext MessageExt
			q   MessageQueue
		}{}
		msg := &mq.ext
		msg.Queue = &mq.q

		// 1. total size
		buf.int32(&msg.StoreSize)
		count += 4

		// 2. magic code
		buf.next(4)
		count += 4

		// 3. body CRC32
		buf.int32(&msg.BodyCRC)
		count += 4

		// 4. queueID
		var qId int32
		buf.int32(&qId)
		msg.Queue.QueueId = int(qId)
		count += 4

		// 5. Flag
		buf.int32(&msg.Flag)
		count += 4

		// 6. QueueOffset
		buf.int64(&msg.QueueOffset)
		count += 8

		// 7. physical offset
		buf.int64(&msg.CommitLogOffset)
		count += 8

		// 8. SysFlag
		buf.int32(&msg.SysFlag)
		count += 4

		// 9. BornTimestamp
		buf.int64(&msg.BornTimestamp)
		count += 8

		var (
			port      int32
			hostBytes []byte
		)
		// 10. born host
		if msg.SysFlag&FlagBornHostV6 == FlagBornHostV6 {
			hostBytes = buf.next(16)
			buf.int32(&port)
			msg.BornHost = formatHost(hostBytes, port)
			count += 20
		} else {
			hostBytes = buf.next(4)
			buf.int32(&port)
			msg.BornHost = formatHost(hostBytes, port)
			count += 8
		}

		// 11. store timestamp
		buf.int64(&msg.StoreTimestamp)
		count += 8

		// 12. store host
		if msg.SysFlag&FlagStoreHostV6 == FlagStoreHostV6 {
			hostBytes = buf.next(16)
			buf.int32(&port)
			msg.StoreHost = formatHost(hostBytes, port)
			count += 20
		} else {
			hostBytes = buf.next(4)
			buf.int32(&port)
			msg.StoreHost = formatHost(hostBytes, port)
			count += 8
		}

		// 13. reconsume times
		buf.int32(&msg.ReconsumeTimes)
		count += 4

		// 14. prepared transaction offset
		buf.int64(&msg.PreparedTransactionOffset)
		count += 8

		// 15. body
		var length int32
		buf.int32(&length)
		msg.Body = buf.next(int(length))
		if (msg.SysFlag & FlagCompressed) == FlagCompressed {
			msg.Body = utils.UnCompress(msg.Body)
		}
		count += 4 + int(length)

		// 16. topic
		_byte := buf.readByte()
		msg.Topic = string(buf.next(int(_byte)))
		count += 1 + int(_byte)

		// 17. properties
		var propertiesLength int16
		buf.int16(&propertiesLength)
		if propertiesLength > 0 {
			msg.UnmarshalProperties(buf.next(int(propertiesLength)))
		}
		count += 2 + int(propertiesLength)

		msg.OffsetMsgId = CreateMessageId(hostBytes, port, msg.CommitLogOffset)
		//count += 16
		if msg.properties == nil {
			msg.properties = make(map[string]string, 0)
		}
		msgID := msg.GetProperty(PropertyUniqueClientMessageIdKeyIndex)
		if len(msgID) == 0 {
			msg.MsgId = msg.OffsetMsgId
		} else {
			msg.MsgId = msgID
		}
		msgs = append(msgs, msg)
	}

	return msgs
}

// msgReader reads DecodeMessage's data as upstream's bytes.Buffer did:
// next is bytes.Buffer.Next (at most what is left; a negative n panics),
// and a number not all there is consumed and leaves its destination as
// it was, as binary.Read's io.ReadFull did.
type msgReader struct{ b []byte }

func (r *msgReader) next(n int) []byte {
	if n > len(r.b) {
		n = len(r.b)
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

// field returns the next n bytes, or nil (having consumed the rest) if
// fewer are left.
func (r *msgReader) field(n int) []byte {
	if len(r.b) < n {
		r.b = r.b[len(r.b):]
		return nil
	}
	return r.next(n)
}

func (r *msgReader) int16(v *int16) {
	if p := r.field(2); p != nil {
		*v = int16(binary.BigEndian.Uint16(p))
	}
}

func (r *msgReader) int32(v *int32) {
	if p := r.field(4); p != nil {
		*v = int32(binary.BigEndian.Uint32(p))
	}
}

func (r *msgReader) int64(v *int64) {
	if p := r.field(8); p != nil {
		*v = int64(binary.BigEndian.Uint64(p))
	}
}

// readByte is bytes.Buffer.ReadByte without its error: 0 when nothing is
// left.
func (r *msgReader) readByte() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

// formatHost is upstream's fmt.Sprintf("%s:%d",
// utils.GetAddressByBytes(host), port): the dotted IPv4 address of the
// first four bytes (an IPv6 host too, as upstream) and the port, in one
// allocation. Fewer than four bytes panic, as there.
func formatHost(host []byte, port int32) string {
	a, b, c, d := host[0], host[1], host[2], host[3]
	var s [32]byte
	p := strconv.AppendUint(s[:0], uint64(a), 10)
	p = append(p, '.')
	p = strconv.AppendUint(p, uint64(b), 10)
	p = append(p, '.')
	p = strconv.AppendUint(p, uint64(c), 10)
	p = append(p, '.')
	p = strconv.AppendUint(p, uint64(d), 10)
	p = append(p, ':')
	p = strconv.AppendInt(p, int64(port), 10)
	return string(p)
}

// MessageQueue message queue
type MessageQueue struct {
	Topic      string `json:"topic"`
	BrokerName string `json:"brokerName"`
	QueueId    int    `json:"queueId"`
}

func (mq *MessageQueue) String() string {
	return fmt.Sprintf("MessageQueue [topic=%s, brokerName=%s, queueId=%d]", mq.Topic, mq.BrokerName, mq.QueueId)
}

func (mq *MessageQueue) HashCode() int {
	result := 1
	result = 31*result + utils.HashString(mq.BrokerName)
	result = 31*result + mq.QueueId
	result = 31*result + utils.HashString(mq.Topic)

	return result
}

type AccessChannel int

const (
	// connect to private IDC cluster.
	Local AccessChannel = iota
	// connect to Cloud service.
	Cloud
)

type MessageType int

const (
	NormalMsg MessageType = iota
	TransMsgHalf
	TransMsgCommit
	DelayMsg
)

type LocalTransactionState int

const (
	CommitMessageState LocalTransactionState = iota + 1
	RollbackMessageState
	UnknowState
)

type TransactionListener interface {
	//  When send transactional prepare(half) message succeed, this method will be invoked to execute local transaction.
	ExecuteLocalTransaction(*Message) LocalTransactionState

	// When no response to prepare(half) message. broker will send check message to check the transaction status, and this
	// method will be invoked to get local transaction status.
	CheckLocalTransaction(*MessageExt) LocalTransactionState
}

type MessageID struct {
	Addr   string
	Port   int
	Offset int64
}

// CreateMessageId is addr, port and offset (big-endian) in upper-case
// hex. msgmesh patch 12: encoded in stack buffers, one allocation (upstream
// wrote them into a pooled buffer with binary.Write, then hex.EncodeToString
// and strings.ToUpper: four).
func CreateMessageId(addr []byte, port int32, offset int64) string {
	var raw [32]byte
	b := append(raw[:0], addr...)
	b = binary.BigEndian.AppendUint32(b, uint32(port))
	b = binary.BigEndian.AppendUint64(b, uint64(offset))
	var hexBuf [64]byte
	h := hexBuf[:0]
	for _, c := range b {
		h = append(h, upperHex[c>>4], upperHex[c&0x0f])
	}
	return string(h)
}

const upperHex = "0123456789ABCDEF"

func UnmarshalMsgID(id []byte) (*MessageID, error) {
	if len(id) < 32 {
		return nil, fmt.Errorf("%s len < 32", string(id))
	}
	var (
		ipBytes     = make([]byte, 4)
		portBytes   = make([]byte, 4)
		offsetBytes = make([]byte, 8)
	)
	hex.Decode(ipBytes, id[0:8])
	hex.Decode(portBytes, id[8:16])
	hex.Decode(offsetBytes, id[16:32])

	return &MessageID{
		Addr:   utils.GetAddressByBytes(ipBytes),
		Port:   int(binary.BigEndian.Uint32(portBytes)),
		Offset: int64(binary.BigEndian.Uint64(offsetBytes)),
	}, nil
}

var (
	CompressedFlag = 0x1

	MultiTagsFlag = 0x1 << 1

	TransactionNotType = 0

	TransactionPreparedType = 0x1 << 2

	TransactionCommitType = 0x2 << 2

	TransactionRollbackType = 0x3 << 2
)

func GetTransactionValue(flag int) int {
	return flag & TransactionRollbackType
}

func ResetTransactionValue(flag int, typeFlag int) int {
	return (flag & (^TransactionRollbackType)) | typeFlag
}

func ClearCompressedFlag(flag int) int {
	return flag & (^CompressedFlag)
}

func SetCompressedFlag(flag int) int {
	return flag | CompressedFlag
}

var (
	counter        int16 = 0
	startTimestamp int64 = 0
	nextTimestamp  int64 = 0
	prefix         string
	locker         sync.Mutex
	classLoadId    int32 = 0
)

func init() {
	buf := new(bytes.Buffer)

	ip, err := utils.ClientIP4()
	if err != nil {
		ip = utils.FakeIP()
	}
	_, _ = buf.Write(ip)
	_ = binary.Write(buf, binary.BigEndian, Pid())
	_ = binary.Write(buf, binary.BigEndian, classLoadId)
	prefix = strings.ToUpper(hex.EncodeToString(buf.Bytes()))
}

func CreateUniqID() string {
	locker.Lock()
	defer locker.Unlock()

	if time.Now().Unix() > nextTimestamp {
		updateTimestamp()
	}
	counter++
	// msgmesh patch 10: the 6 bytes (seconds since the month began,
	// times 1000, and the counter, big-endian) are hex-encoded on the
	// stack, and the id is one allocation (five before: a buffer, two
	// binary.Writes, the hex string and the concatenation).
	var raw [6]byte
	binary.BigEndian.PutUint32(raw[0:4], uint32(int32((time.Now().Unix()-startTimestamp)*1000)))
	binary.BigEndian.PutUint16(raw[4:6], uint16(counter))
	var hexed [12]byte
	hex.Encode(hexed[:], raw[:])
	return prefix + string(hexed[:])
}

func updateTimestamp() {
	year, month := time.Now().Year(), time.Now().Month()
	startTimestamp = time.Date(year, month, 1, 0, 0, 0, 0, time.Local).Unix()
	nextTimestamp = time.Date(year, month, 1, 0, 0, 0, 0, time.Local).AddDate(0, 1, 0).Unix()
}

func Pid() int16 {
	return int16(os.Getpid())
}
