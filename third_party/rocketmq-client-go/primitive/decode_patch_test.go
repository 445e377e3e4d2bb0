package primitive

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand"
	"reflect"
	"strings"
	"testing"

	"github.com/apache/rocketmq-client-go/v2/internal/utils"
)

// These tests are msgmesh's, for patch 12 (PATCHES.md): DecodeMessage,
// UnmarshalProperties and CreateMessageId against upstream's code.

// upstreamDecodeMessage is DecodeMessage before patch 12, with upstream's
// UnmarshalProperties and CreateMessageId.
func upstreamDecodeMessage(data []byte) []*MessageExt {
	msgs := make([]*MessageExt, 0)
	buf := bytes.NewBuffer(data)
	count := 0
	for count < len(data) {
		msg := &MessageExt{}
		msg.Queue = &MessageQueue{}
		binary.Read(buf, binary.BigEndian, &msg.StoreSize)
		count += 4
		buf.Next(4)
		count += 4
		binary.Read(buf, binary.BigEndian, &msg.BodyCRC)
		count += 4
		var qId int32
		binary.Read(buf, binary.BigEndian, &qId)
		msg.Queue.QueueId = int(qId)
		count += 4
		binary.Read(buf, binary.BigEndian, &msg.Flag)
		count += 4
		binary.Read(buf, binary.BigEndian, &msg.QueueOffset)
		count += 8
		binary.Read(buf, binary.BigEndian, &msg.CommitLogOffset)
		count += 8
		binary.Read(buf, binary.BigEndian, &msg.SysFlag)
		count += 4
		binary.Read(buf, binary.BigEndian, &msg.BornTimestamp)
		count += 8
		var (
			port      int32
			hostBytes []byte
		)
		if msg.SysFlag&FlagBornHostV6 == FlagBornHostV6 {
			hostBytes = buf.Next(16)
			binary.Read(buf, binary.BigEndian, &port)
			msg.BornHost = fmt.Sprintf("%s:%d", utils.GetAddressByBytes(hostBytes), port)
			count += 20
		} else {
			hostBytes = buf.Next(4)
			binary.Read(buf, binary.BigEndian, &port)
			msg.BornHost = fmt.Sprintf("%s:%d", utils.GetAddressByBytes(hostBytes), port)
			count += 8
		}
		binary.Read(buf, binary.BigEndian, &msg.StoreTimestamp)
		count += 8
		if msg.SysFlag&FlagStoreHostV6 == FlagStoreHostV6 {
			hostBytes = buf.Next(16)
			binary.Read(buf, binary.BigEndian, &port)
			msg.StoreHost = fmt.Sprintf("%s:%d", utils.GetAddressByBytes(hostBytes), port)
			count += 20
		} else {
			hostBytes = buf.Next(4)
			binary.Read(buf, binary.BigEndian, &port)
			msg.StoreHost = fmt.Sprintf("%s:%d", utils.GetAddressByBytes(hostBytes), port)
			count += 8
		}
		binary.Read(buf, binary.BigEndian, &msg.ReconsumeTimes)
		count += 4
		binary.Read(buf, binary.BigEndian, &msg.PreparedTransactionOffset)
		count += 8
		var length int32
		binary.Read(buf, binary.BigEndian, &length)
		msg.Body = buf.Next(int(length))
		if (msg.SysFlag & FlagCompressed) == FlagCompressed {
			msg.Body = utils.UnCompress(msg.Body)
		}
		count += 4 + int(length)
		_byte, _ := buf.ReadByte()
		msg.Topic = string(buf.Next(int(_byte)))
		count += 1 + int(_byte)
		var propertiesLength int16
		binary.Read(buf, binary.BigEndian, &propertiesLength)
		if propertiesLength > 0 {
			upstreamUnmarshalProperties(&msg.Message, buf.Next(int(propertiesLength)))
		}
		count += 2 + int(propertiesLength)
		msg.OffsetMsgId = upstreamCreateMessageId(hostBytes, port, msg.CommitLogOffset)
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

func upstreamUnmarshalProperties(m *Message, data []byte) {
	if m.properties == nil {
		m.properties = make(map[string]string)
	}
	items := bytes.Split(data, []byte{propertySeparator})
	for _, item := range items {
		kv := bytes.Split(item, []byte{nameValueSeparator})
		if len(kv) == 2 {
			m.properties[string(kv[0])] = string(kv[1])
		}
	}
}

func upstreamCreateMessageId(addr []byte, port int32, offset int64) string {
	buffer := new(bytes.Buffer)
	buffer.Write(addr)
	_ = binary.Write(buffer, binary.BigEndian, port)
	_ = binary.Write(buffer, binary.BigEndian, offset)
	return strings.ToUpper(hex.EncodeToString(buffer.Bytes()))
}

// testStoredMessage is one message as a broker stores it.
type testStoredMessage struct {
	sysFlag          int32
	queueID, port    int32
	queueOffset, crc int64
	host             []byte // 4 or 16 bytes, as sysFlag says
	body             []byte
	topic            string
	props            string
}

func (m testStoredMessage) encode(b []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(200+len(m.body)))
	b = binary.BigEndian.AppendUint32(b, 0xdaa320a7)
	b = binary.BigEndian.AppendUint32(b, uint32(m.crc))
	b = binary.BigEndian.AppendUint32(b, uint32(m.queueID))
	b = binary.BigEndian.AppendUint32(b, 7)
	b = binary.BigEndian.AppendUint64(b, uint64(m.queueOffset))
	b = binary.BigEndian.AppendUint64(b, uint64(m.queueOffset*1234))
	b = binary.BigEndian.AppendUint32(b, uint32(m.sysFlag))
	b = binary.BigEndian.AppendUint64(b, 1765000000000)
	b = append(b, m.host...)
	b = binary.BigEndian.AppendUint32(b, uint32(m.port))
	b = binary.BigEndian.AppendUint64(b, 1765000000123)
	b = append(b, m.host...)
	b = binary.BigEndian.AppendUint32(b, uint32(m.port+1))
	b = binary.BigEndian.AppendUint32(b, 3)
	b = binary.BigEndian.AppendUint64(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.body)))
	b = append(b, m.body...)
	b = append(b, byte(len(m.topic)))
	b = append(b, m.topic...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.props)))
	return append(b, m.props...)
}

func randomStoredMessage(r *rand.Rand) testStoredMessage {
	m := testStoredMessage{
		sysFlag:     int32(r.Intn(4)) << 4,
		queueID:     int32(r.Intn(8)),
		port:        int32(r.Intn(70000)) - 100,
		queueOffset: r.Int63n(1 << 40),
		crc:         r.Int63n(1 << 31),
		body:        make([]byte, r.Intn(40)),
		topic:       strings.Repeat("t", r.Intn(20)),
	}
	r.Read(m.body)
	m.host = make([]byte, 4)
	if m.sysFlag&FlagBornHostV6 != 0 {
		m.host = make([]byte, 16)
	}
	r.Read(m.host)
	var props []string
	for n := r.Intn(5); n > 0; n-- {
		switch r.Intn(4) {
		case 0:
			props = append(props, PropertyUniqueClientMessageIdKeyIndex+"\x01"+fmt.Sprintf("%X", r.Int63()))
		case 1:
			props = append(props, "k\x01v\x01w") // two separators: not a pair
		case 2:
			props = append(props, "") // empty item
		default:
			props = append(props, fmt.Sprintf("key%d\x01value%d", r.Intn(3), r.Intn(100)))
		}
	}
	m.props = strings.Join(props, "\x02")
	if r.Intn(2) == 0 {
		m.props += "\x02"
	}
	return m
}

// decodeOutcome runs decode and reports its messages or its panic.
func decodeOutcome(decode func([]byte) []*MessageExt, data []byte) (msgs []*MessageExt, panicked bool) {
	defer func() {
		if recover() != nil {
			panicked = true
		}
	}()
	return decode(data), false
}

func checkDecodeAsUpstream(t *testing.T, data []byte) {
	t.Helper()
	got, gotPanic := decodeOutcome(DecodeMessage, data)
	want, wantPanic := decodeOutcome(upstreamDecodeMessage, data)
	if gotPanic != wantPanic {
		t.Fatalf("DecodeMessage(%x): panicked %v, upstream %v", data, gotPanic, wantPanic)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodeMessage(%x) =\n%v\nupstream\n%v", data, got, want)
	}
}

func TestDecodeMessageAsUpstream(t *testing.T) {
	compressed, err := utils.Compress([]byte("compressed body"), 5)
	if err != nil {
		t.Fatal(err)
	}
	fixed := []testStoredMessage{
		{host: []byte{127, 0, 0, 1}, port: 10911, body: []byte("hello"), topic: "TopicTest", props: "UNIQ_KEY\x01AC110001000018B4AAC2001\x02KEYS\x01k\x02"},
		{host: []byte{10, 1, 2, 255}, port: -1, topic: "t"},
		{host: bytes.Repeat([]byte{0xfe}, 16), sysFlag: FlagBornHostV6 | FlagStoreHostV6, port: 65535, body: []byte{}, topic: "v6"},
		{host: []byte{1, 2, 3, 4}, sysFlag: FlagCompressed, port: 80, body: compressed, topic: "z", props: "a\x01b"},
	}
	var all []byte
	for _, m := range fixed {
		checkDecodeAsUpstream(t, m.encode(nil))
		all = m.encode(all)
	}
	checkDecodeAsUpstream(t, nil)
	checkDecodeAsUpstream(t, []byte{})
	// Every cut of a body of several messages.
	for i := range all {
		checkDecodeAsUpstream(t, all[:i])
	}
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 300; i++ {
		var data []byte
		for n := 1 + r.Intn(4); n > 0; n-- {
			data = randomStoredMessage(r).encode(data)
		}
		checkDecodeAsUpstream(t, data)
		checkDecodeAsUpstream(t, data[:r.Intn(len(data))])
	}
}

func TestUnmarshalPropertiesAsUpstream(t *testing.T) {
	for _, in := range []string{
		"", "\x02", "\x01", "a", "a\x01", "\x01b", "a\x01b", "a\x01b\x02", "a\x01b\x01c\x02d\x01e",
		"\x02\x02a\x01b\x02\x02", "a\x01b\x02a\x01c", "ü\x01日本\x02x\x01\x02\x01\x01",
	} {
		var got, want Message
		got.UnmarshalProperties([]byte(in))
		upstreamUnmarshalProperties(&want, []byte(in))
		if !reflect.DeepEqual(got.properties, want.properties) {
			t.Errorf("UnmarshalProperties(%q) = %v, upstream %v", in, got.properties, want.properties)
		}
	}
}

func TestCreateMessageIdAsUpstream(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	for _, n := range []int{0, 3, 4, 16, 40} {
		addr := make([]byte, n)
		r.Read(addr)
		port, offset := int32(r.Uint32()), int64(r.Uint64())
		if got, want := CreateMessageId(addr, port, offset), upstreamCreateMessageId(addr, port, offset); got != want {
			t.Errorf("CreateMessageId(%x, %d, %d) = %q, upstream %q", addr, port, offset, got, want)
		}
	}
}

// BenchmarkDecodeMessage decodes a pull response body of 32 messages of
// 1 KiB with two properties, as msgmesh's consume benchmark pulls them.
func BenchmarkDecodeMessage(b *testing.B) {
	var data []byte
	for i := 0; i < 32; i++ {
		m := testStoredMessage{host: []byte{127, 0, 0, 1}, port: 10911, queueOffset: int64(i), body: make([]byte, 1024), topic: "bench.consume",
			props: "UNIQ_KEY\x017F0000010001000018B4AAC2001\x02WAIT\x01true"}
		data = m.encode(data)
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if msgs := DecodeMessage(data); len(msgs) != 32 {
			b.Fatal(len(msgs))
		}
	}
}
