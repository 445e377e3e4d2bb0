package primitive

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"sort"
	"strings"
	"testing"
	"time"
)

// These tests are msgmesh's, for patch 10 (PATCHES.md).

// upstreamMarshallProperties is MarshallProperties before patch 10.
func upstreamMarshallProperties(m *Message) string {
	buffer := bytes.NewBufferString("")
	for k, v := range m.properties {
		buffer.WriteString(k)
		buffer.WriteRune(nameValueSeparator)
		buffer.WriteString(v)
		buffer.WriteRune(propertySeparator)
	}
	return buffer.String()
}

// sortedPairs splits marshalled properties into their pairs, sorted (the
// map's order is random).
func sortedPairs(s string) []string {
	p := strings.Split(s, string(rune(propertySeparator)))
	sort.Strings(p)
	return p
}

func TestMarshallPropertiesAsUpstream(t *testing.T) {
	for _, props := range []map[string]string{
		nil,
		{"KEYS": "k"},
		{"KEYS": "key-1", "SHARDING_KEY": "key-1", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "empty": "", "ü": "日本"},
	} {
		m := NewMessage("t", nil)
		m.WithProperties(props)
		got, want := m.MarshallProperties(), upstreamMarshallProperties(m)
		if len(props) <= 1 && got != want {
			t.Errorf("MarshallProperties() = %q, upstream %q", got, want)
		}
		if len(got) != len(want) || strings.Join(sortedPairs(got), "|") != strings.Join(sortedPairs(want), "|") {
			t.Errorf("MarshallProperties() = %q, upstream %q", got, want)
		}
	}
}

// upstreamUniqSuffix is what upstream's CreateUniqID appended to the
// prefix for a time and counter.
func upstreamUniqSuffix(now time.Time, c int16) string {
	buf := new(bytes.Buffer)
	_ = binary.Write(buf, binary.BigEndian, int32((now.Unix()-startTimestamp)*1000))
	_ = binary.Write(buf, binary.BigEndian, c)
	return hex.EncodeToString(buf.Bytes())
}

func TestCreateUniqIDAsUpstream(t *testing.T) {
	locker.Lock()
	counter = 32760 // wraps to negative within the loop
	locker.Unlock()
	for i := 0; i < 20; i++ {
		before := time.Now()
		id := CreateUniqID()
		after := time.Now()
		locker.Lock()
		c := counter
		locker.Unlock()
		if !strings.HasPrefix(id, prefix) {
			t.Fatalf("id %q lacks the prefix %q", id, prefix)
		}
		suffix := id[len(prefix):]
		if suffix != upstreamUniqSuffix(before, c) && suffix != upstreamUniqSuffix(after, c) {
			t.Fatalf("id %q, upstream's would end %q (counter %d)", id, upstreamUniqSuffix(before, c), c)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = CreateUniqID() }); n != 1 {
		t.Errorf("CreateUniqID made %v allocations, want 1", n)
	}
}
