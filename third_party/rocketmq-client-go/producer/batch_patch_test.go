package producer

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/apache/rocketmq-client-go/v2/primitive"
)

// These tests are msgmesh's, for patch 14 (PATCHES.md).

// upstreamMarshal is primitive.Message.Marshal before patch 14.
func upstreamMarshal(m *primitive.Message) []byte {
	v := m.MarshallProperties()
	properties := []byte(v)
	storeSize := 4 + 4 + 4 + 4 + 4 + len(m.Body) + 2 + len(properties)

	buffer := make([]byte, storeSize)
	pos := 0
	binary.BigEndian.PutUint32(buffer[pos:], uint32(storeSize)) // 1. TOTALSIZE
	pos += 4
	binary.BigEndian.PutUint32(buffer[pos:], 0) // 2. MAGICCODE
	pos += 4
	binary.BigEndian.PutUint32(buffer[pos:], 0) // 3. BODYCRC
	pos += 4
	binary.BigEndian.PutUint32(buffer[pos:], uint32(m.Flag)) // 4. FLAG
	pos += 4
	binary.BigEndian.PutUint32(buffer[pos:], uint32(len(m.Body))) // 5. BODYSIZE
	pos += 4
	copy(buffer[pos:], m.Body)
	pos += len(m.Body)

	binary.BigEndian.PutUint16(buffer[pos:], uint16(len(properties))) // 7. PROPERTYSIZE
	pos += 2
	copy(buffer[pos:], properties)

	return buffer
}

// upstreamMarshalMessageBatch is MarshalMessageBatch before patch 14.
func upstreamMarshalMessageBatch(msgs ...*primitive.Message) []byte {
	buffer := bytes.NewBufferString("")
	for _, msg := range msgs {
		data := upstreamMarshal(msg)
		buffer.Write(data)
	}
	return buffer.Bytes()
}

// TestMarshalAsUpstream: a message and batches of 1 to 70 messages
// (bodies of 0 to 5,000 bytes, no property or one, any flag) encode to
// upstream's bytes, and the batch buffer is allocated at its exact size.
// (Messages have at most one property: several are encoded in the map's
// order, which differs between calls.)
func TestMarshalAsUpstream(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 14))
	message := func() *primitive.Message {
		body := make([]byte, r.IntN(5001))
		for i := range body {
			body[i] = byte(r.IntN(256))
		}
		m := &primitive.Message{Topic: "t", Body: body, Flag: r.Int32()}
		if r.IntN(2) == 0 {
			m.WithProperty(primitive.PropertyUniqueClientMessageIdKeyIndex, primitive.CreateUniqID())
		}
		return m
	}
	if m := (&primitive.Message{Topic: "t"}); !bytes.Equal(m.Marshal(), upstreamMarshal(m)) {
		t.Fatalf("empty message: Marshal %x, upstream %x", m.Marshal(), upstreamMarshal(m))
	}
	for n := 0; n < 200; n++ {
		msgs := make([]*primitive.Message, 1+r.IntN(70))
		for i := range msgs {
			msgs[i] = message()
		}
		if got, want := msgs[0].Marshal(), upstreamMarshal(msgs[0]); !bytes.Equal(got, want) {
			t.Fatalf("Marshal: %d bytes, upstream %d, not equal", len(got), len(want))
		}
		got, want := MarshalMessageBatch(msgs...), upstreamMarshalMessageBatch(msgs...)
		if !bytes.Equal(got, want) {
			t.Fatalf("MarshalMessageBatch of %d messages: %d bytes, upstream %d, not equal", len(msgs), len(got), len(want))
		}
		if cap(got) != len(got) {
			t.Fatalf("MarshalMessageBatch: a buffer of %d bytes for %d", cap(got), len(got))
		}
	}
}

// BenchmarkMarshalMessageBatch encodes a batch of 64 messages of 1 KiB
// with two properties, as the sidecar's RocketMQ adapter sends them.
func BenchmarkMarshalMessageBatch(b *testing.B) {
	msgs := make([]*primitive.Message, 64)
	for i := range msgs {
		msgs[i] = &primitive.Message{Topic: "t", Body: make([]byte, 1024)}
		msgs[i].WithProperties(map[string]string{"KEYS": "key-1", "SHARDING_KEY": "key-1"})
		msgs[i].WithProperty(primitive.PropertyUniqueClientMessageIdKeyIndex, primitive.CreateUniqID())
	}
	b.Run("upstream", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			upstreamMarshalMessageBatch(msgs...)
		}
	})
	b.Run("patched", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			MarshalMessageBatch(msgs...)
		}
	})
}
