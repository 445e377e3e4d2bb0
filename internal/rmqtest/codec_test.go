package rmqtest

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

func seedFrames(t testing.TB) [][]byte {
	var out [][]byte
	for _, ser := range []byte{serializeJSON, serializeRocketMQ} {
		for _, cmd := range []*command{
			{Code: CodePullMessage, Language: "GO", Version: 317, Opaque: 7, Ext: map[string]string{"topic": "t", "queueId": "1"}},
			{Code: respSuccess, Flag: flagResponse, Opaque: 9, Remark: "ok", Ext: map[string]string{}, Body: []byte("body")},
			{Code: CodeSendMessage, Flag: flagOneway, Ext: map[string]string{"properties": "A\x01b\x02"}, Body: bytes.Repeat([]byte{1}, 40)},
		} {
			cmd.serialize = ser
			f, err := encodeFrame(cmd)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, f)
		}
	}
	return out
}

func TestFrameRoundTrip(t *testing.T) {
	for _, f := range seedFrames(t) {
		cmd, err := readFrame(bytes.NewReader(f))
		if err != nil {
			t.Fatal(err)
		}
		again, err := encodeFrame(cmd)
		if err != nil {
			t.Fatal(err)
		}
		cmd2, err := readFrame(bytes.NewReader(again))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(cmd, cmd2) {
			t.Fatalf("round trip: %+v != %+v", cmd, cmd2)
		}
	}
	if _, err := readFrame(bytes.NewReader(nil)); !errors.Is(err, io.EOF) {
		t.Fatalf("empty stream: %v, want EOF", err)
	}
}

// FuzzReadFrame feeds arbitrary bytes to the frame reader: it must never
// panic, and what it accepts must survive re-encoding.
func FuzzReadFrame(f *testing.F) {
	for _, s := range seedFrames(f) {
		f.Add(s)
	}
	f.Add([]byte{0, 0, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, err := readFrame(bytes.NewReader(data))
		if err != nil {
			return
		}
		frame, err := encodeFrame(cmd)
		if err != nil {
			return // a header over 16 MiB cannot be encoded back
		}
		cmd2, err := readFrame(bytes.NewReader(frame))
		if err != nil {
			t.Fatalf("re-encoded frame does not decode: %v", err)
		}
		if cmd.Code != cmd2.Code || cmd.Opaque != cmd2.Opaque || cmd.Flag != cmd2.Flag ||
			!bytes.Equal(cmd.Body, cmd2.Body) || len(cmd.Ext) != len(cmd2.Ext) {
			t.Fatalf("round trip changed the command: %+v vs %+v", cmd, cmd2)
		}
	})
}

func sampleMessage() *message {
	return &message{
		Topic: "orders|created", QueueID: 3, Flag: 1, QueueOffset: 42, PhysOffset: 4242, SysFlag: 1,
		BornTimestamp: 1700000000000, BornHost: hostPort{[4]byte{10, 0, 0, 1}, 5555},
		StoreTimestamp: 1700000000001, StoreHost: hostPort{[4]byte{127, 0, 0, 1}, 10911},
		ReconsumeTimes: 2, Body: []byte("hello"), Properties: formatProperties(map[string]string{"UNIQ_KEY": "x", "a": ""}),
	}
}

func TestRecordRoundTrip(t *testing.T) {
	m := sampleMessage()
	rec := m.encode()
	if len(rec) != m.recordLen() {
		t.Fatalf("record is %d bytes, recordLen says %d", len(rec), m.recordLen())
	}
	got, n, err := decodeRecord(append(rec, 0xFF)) // trailing bytes belong to the next record
	if err != nil || n != len(rec) {
		t.Fatalf("decode: %v (%d of %d bytes)", err, n, len(rec))
	}
	if !reflect.DeepEqual(got, m) {
		t.Fatalf("round trip: %+v != %+v", got, m)
	}
	if p := parseProperties(got.Properties); p["UNIQ_KEY"] != "x" || p["a"] != "" || len(p) != 2 {
		t.Fatalf("properties: %v", p)
	}
	if id := offsetMsgID(m.StoreHost, m.PhysOffset); id != "7F00000100002A9F0000000000001092" {
		t.Fatalf("msg id %s", id)
	}
}

// FuzzDecodeRecord: the commit-log replay and send-back decode records; a
// corrupt record must give an error, never a panic.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(sampleMessage().encode())
	f.Add([]byte{0, 0, 0, 10})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, n, err := decodeRecord(data)
		if err != nil {
			return
		}
		if n > len(data) || m.recordLen() != n {
			t.Fatalf("decoded %d bytes of %d, record length %d", n, len(data), m.recordLen())
		}
	})
}

func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte{0, 0, 0, 22, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = decodeBatch(data)
	})
}
