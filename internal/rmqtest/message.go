package rmqtest

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"
	"strings"
)

// Message property names the broker reads or writes (MessageConst).
const (
	propDelayLevel      = "DELAY"
	propTags            = "TAGS"
	propRetryTopic      = "RETRY_TOPIC"
	propRealTopic       = "REAL_TOPIC"
	propRealQueueID     = "REAL_QID"
	propOriginMessageID = "ORIGIN_MESSAGE_ID"
	propWaitStoreMsgOK  = "WAIT"
)

// Property separators: name \x01 value \x02 (MessageDecoder).
const (
	nameValueSep = '\x01'
	propertySep  = '\x02'
)

// messageMagic is the MAGICCODE of a stored message (MessageDecoder,
// message format v1). The Go client skips it; the replay of the commit log
// checks it.
const messageMagic = 0xdaa320a7

// maxPropertiesLen is the limit of the properties string (an int16 length
// in the store format).
const maxPropertiesLen = 1<<15 - 1

// maxTopicLen is RocketMQ's topic name limit (the store format keeps the
// length in one signed byte).
const maxTopicLen = 127

// hostPort is an IPv4 socket address as the store format keeps it.
type hostPort struct {
	ip   [4]byte
	port int32
}

// message is one message in the store format (the layout of CommitLog
// records, which is what PULL_MESSAGE bodies carry and what
// primitive.DecodeMessage parses):
//
//	int32 TOTALSIZE, int32 MAGICCODE, int32 BODYCRC, int32 QUEUEID,
//	int32 FLAG, int64 QUEUEOFFSET, int64 PHYSICALOFFSET, int32 SYSFLAG,
//	int64 BORNTIMESTAMP, BORNHOST (4-byte IPv4 + int32 port),
//	int64 STORETIMESTAMP, STOREHOST (4 + 4), int32 RECONSUMETIMES,
//	int64 PREPAREDTRANSACTIONOFFSET, int32 BODYLENGTH + BODY,
//	int8 TOPICLENGTH + TOPIC, int16 PROPERTIESLENGTH + PROPERTIES
//
// The broker never sets the IPv6 host flags.
type message struct {
	Topic          string
	QueueID        int32
	Flag           int32
	QueueOffset    int64
	PhysOffset     int64
	SysFlag        int32
	BornTimestamp  int64 // ms
	BornHost       hostPort
	StoreTimestamp int64 // ms
	StoreHost      hostPort
	ReconsumeTimes int32
	PreparedTxOff  int64
	Body           []byte
	Properties     string
}

// recordFixedLen is the size of a record without body, topic and
// properties.
const recordFixedLen = 4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + 8 + 8 + 8 + 4 + 8 + 4 + 1 + 2

func (m *message) recordLen() int {
	return recordFixedLen + len(m.Body) + len(m.Topic) + len(m.Properties)
}

// encode returns the record of m.
func (m *message) encode() []byte {
	n := m.recordLen()
	b := make([]byte, 0, n)
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	b = binary.BigEndian.AppendUint32(b, messageMagic)
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(m.Body)&0x7FFFFFFF)
	b = binary.BigEndian.AppendUint32(b, uint32(m.QueueID))
	b = binary.BigEndian.AppendUint32(b, uint32(m.Flag))
	b = binary.BigEndian.AppendUint64(b, uint64(m.QueueOffset))
	b = binary.BigEndian.AppendUint64(b, uint64(m.PhysOffset))
	b = binary.BigEndian.AppendUint32(b, uint32(m.SysFlag&^(msgFlagBornHostV6|msgFlagStoreHostV6)))
	b = binary.BigEndian.AppendUint64(b, uint64(m.BornTimestamp))
	b = append(b, m.BornHost.ip[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(m.BornHost.port))
	b = binary.BigEndian.AppendUint64(b, uint64(m.StoreTimestamp))
	b = append(b, m.StoreHost.ip[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(m.StoreHost.port))
	b = binary.BigEndian.AppendUint32(b, uint32(m.ReconsumeTimes))
	b = binary.BigEndian.AppendUint64(b, uint64(m.PreparedTxOff))
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Body)))
	b = append(b, m.Body...)
	b = append(b, byte(len(m.Topic)))
	b = append(b, m.Topic...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Properties)))
	return append(b, m.Properties...)
}

var errRecord = errors.New("malformed message record")

// decodeRecord decodes the record at the start of b and returns it with its
// length. The message's byte fields alias b.
func decodeRecord(b []byte) (*message, int, error) {
	if len(b) < 4 {
		return nil, 0, fmt.Errorf("%w: %d bytes", errRecord, len(b))
	}
	n := int(binary.BigEndian.Uint32(b))
	if n < recordFixedLen || n > len(b) {
		return nil, 0, fmt.Errorf("%w: size %d with %d bytes left", errRecord, n, len(b))
	}
	d := binDecoder{b: b[4:n]}
	if d.u32() != messageMagic {
		return nil, 0, fmt.Errorf("%w: bad magic code", errRecord)
	}
	m := &message{}
	d.u32() // body CRC
	m.QueueID = int32(d.u32())
	m.Flag = int32(d.u32())
	m.QueueOffset = int64(d.u64())
	m.PhysOffset = int64(d.u64())
	m.SysFlag = int32(d.u32())
	m.BornTimestamp = int64(d.u64())
	copy(m.BornHost.ip[:], d.bytes(4))
	m.BornHost.port = int32(d.u32())
	m.StoreTimestamp = int64(d.u64())
	copy(m.StoreHost.ip[:], d.bytes(4))
	m.StoreHost.port = int32(d.u32())
	m.ReconsumeTimes = int32(d.u32())
	m.PreparedTxOff = int64(d.u64())
	m.Body = d.bytes(int(int32(d.u32())))
	m.Topic = string(d.bytes(int(d.u8())))
	m.Properties = string(d.bytes(int(d.u16())))
	if d.err != nil || len(d.b) != 0 {
		return nil, 0, fmt.Errorf("%w: fields do not add up to the record size %d", errRecord, n)
	}
	return m, n, nil
}

// batchEntry is one message of a SEND_BATCH_MESSAGE body (the client's
// Message.Marshal): int32 TOTALSIZE, int32 MAGICCODE, int32 BODYCRC,
// int32 FLAG, int32 BODYSIZE + BODY, int16 PROPERTYSIZE + PROPERTIES.
type batchEntry struct {
	Flag       int32
	Body       []byte
	Properties string
}

func decodeBatch(b []byte) ([]batchEntry, error) {
	var out []batchEntry
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("%w: batch: %d trailing bytes", errRecord, len(b))
		}
		n := int(binary.BigEndian.Uint32(b))
		if n < 4*5+2 || n > len(b) {
			return nil, fmt.Errorf("%w: batch entry size %d with %d bytes left", errRecord, n, len(b))
		}
		d := binDecoder{b: b[4:n]}
		d.u32() // magic
		d.u32() // CRC
		e := batchEntry{Flag: int32(d.u32())}
		e.Body = d.bytes(int(int32(d.u32())))
		e.Properties = string(d.bytes(int(d.u16())))
		if d.err != nil || len(d.b) != 0 {
			return nil, fmt.Errorf("%w: batch entry fields do not add up to its size %d", errRecord, n)
		}
		out = append(out, e)
		b = b[n:]
	}
	return out, nil
}

// parseProperties splits a properties string into a map.
func parseProperties(s string) map[string]string {
	props := make(map[string]string)
	for _, item := range strings.Split(s, string(propertySep)) {
		k, v, ok := strings.Cut(item, string(nameValueSep))
		if ok && k != "" {
			props[k] = v
		}
	}
	return props
}

// formatProperties joins props (sorted by name, for stable records).
func formatProperties(props map[string]string) string {
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	for _, k := range keys {
		sb.WriteString(k)
		sb.WriteByte(nameValueSep)
		sb.WriteString(props[k])
		sb.WriteByte(propertySep)
	}
	return sb.String()
}

// offsetMsgID is the broker-side message id: hex of store host IPv4, port
// and commit-log offset (MessageDecoder.createMessageId).
func offsetMsgID(store hostPort, phys int64) string {
	var b [16]byte
	copy(b[:4], store.ip[:])
	binary.BigEndian.PutUint32(b[4:], uint32(store.port))
	binary.BigEndian.PutUint64(b[8:], uint64(phys))
	return strings.ToUpper(hex.EncodeToString(b[:]))
}

// validTopic reports whether name is a legal topic (TopicValidator:
// ^[%|a-zA-Z0-9_-]+$, at most 127 bytes).
func validTopic(name string) bool {
	if name == "" || len(name) > maxTopicLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '%' || c == '|' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
