package remote

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"reflect"
	"testing"

	jsoniter "github.com/json-iterator/go"
)

// These tests check msgmesh patches 8 and 9 against what upstream did:
// the header encoder and decoder against jsoniter's reflection, decode
// against upstream's reads, and InvokeSync's responses completed without
// a goroutine of their own.

// specialStrings exercise every branch of appendJSONString.
var specialStrings = []string{
	"", "plain", "TopicTest", "a b", `quo"te`, `back\slash`, "<html>&amp;", "tab\there", "nl\n",
	"\x00\x01\x02", "\x7f", "héllo", "日本", "\u2028\u2029", "\xff\xfe invalid", "emoji 😀",
	"UNIQ_KEY\x01ABC\x02KEYS\x01k\x02", allASCII(),
}

// allASCII is bytes 0 to 127 in order.
func allASCII() string {
	b := make([]byte, 128)
	for i := range b {
		b[i] = byte(i)
	}
	return string(b)
}

// A header with at most one ext field has one order of its fields, so
// appendJSONHeader must write jsoniter.Marshal's bytes exactly.
func TestAppendJSONHeaderBytes(t *testing.T) {
	cmds := []*RemotingCommand{
		{Code: 10, Version: _Version, Opaque: 7, Language: _Go},
		{Code: -1, Version: -32768, Opaque: -2147483648, Flag: 2147483647, Language: _Java, ExtFields: map[string]string{}},
	}
	for _, k := range specialStrings {
		for _, v := range specialStrings {
			cmds = append(cmds, &RemotingCommand{Code: 310, Version: _Version, Opaque: 1, Flag: 1, Remark: v, ExtFields: map[string]string{k: v}})
		}
	}
	for _, cmd := range cmds {
		want, err := jsoniter.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONHeader(nil, cmd); !bytes.Equal(got, want) {
			t.Errorf("appendJSONHeader(%v)\n got %s\nwant %s", cmd, got, want)
		}
	}
}

// With many ext fields the order is the map's: a frame must decode to
// what upstream's frame (jsoniter.Marshal's header) decoded to.
func TestEncodeJSONFrame(t *testing.T) {
	ext := map[string]string{}
	for i, s := range specialStrings {
		ext[fmt.Sprintf("k%d%s", i, s)] = s
	}
	cmd := &RemotingCommand{Code: 310, Version: _Version, Opaque: 99, Language: _Go, Remark: "r<&>", ExtFields: ext, Body: []byte("body bytes")}
	frame, err := encode(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if n := binary.BigEndian.Uint32(frame); int(n) != len(frame)-4 {
		t.Fatalf("frame length %d, frame has %d bytes after it", n, len(frame)-4)
	}
	got, err := decode(frame[4:])
	if err != nil {
		t.Fatal(err)
	}
	header, err := jsoniter.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	old := append(markProtocolType(int32(len(header))), header...)
	want, err := upstreamDecode(append(old, cmd.Body...))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %+v\nwant %+v", got, want)
	}
	if string(got.Body) != "body bytes" || got.ExtFields["k1plain"] != "plain" || got.Remark != cmd.Remark {
		t.Fatalf("decoded %+v", got)
	}
}

// A send's frame, whose properties hold control bytes, is built in one
// allocation (upstream: 7).
func TestEncodeJSONFrameAllocs(t *testing.T) {
	cmd := NewRemotingCommand(10, nil, make([]byte, 1024))
	cmd.ExtFields = map[string]string{
		"a": "MESH_PRODUCER", "b": "topic", "c": "TBW102", "d": "4", "e": "1", "f": "0", "g": "1733500000000",
		"h": "0", "i": "KEYS\x01key-1\x02SHARDING_KEY\x01key-1\x02traceparent\x0100-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\x02UNIQ_KEY\x017F000001000000000000000000000001\x02<&>\x02",
		"j": "0", "k": "false", "m": "false",
	}
	// 1, the frame; the header's scratch buffer comes from a pool, which
	// the race detector makes drop a quarter of what is put back (2 more
	// allocations each time), so 2 on average is allowed.
	if n := testing.AllocsPerRun(100, func() { _, _ = encode(cmd) }); n > 2 {
		t.Errorf("encode made %v allocations, want 1", n)
	}
}

// upstreamDecodeHeader is jsonCodec.decodeHeader before patch 9.
func upstreamDecodeHeader(header []byte) (*RemotingCommand, error) {
	command := &RemotingCommand{}
	command.ExtFields = make(map[string]string)
	command.Body = make([]byte, 0)
	err := jsoniter.Unmarshal(header, command)
	if err != nil {
		return nil, err
	}
	return command, nil
}

// headerCorpus is response headers as brokers write them and inputs at
// the edges of what jsoniter accepts.
var headerCorpus = []string{
	`{"code":0,"extFields":{"msgId":"7F00000100002A9F0000000000000000","queueId":"1","queueOffset":"42","MSG_REGION":"DefaultRegion","TRACE_ON":"true"},"flag":1,"language":"JAVA","opaque":12,"serializeTypeCurrentRPC":"JSON","version":401}`,
	`{"code":1,"flag":1,"language":"JAVA","opaque":3,"remark":"topic not exist","serializeTypeCurrentRPC":"JSON","version":401}`,
	`{"code":0,"language":"GO","version":317,"opaque":5,"flag":1,"remark":"","extFields":{}}`,
	`{"CODE":2,"Opaque":4,"FLAG":1,"ExtFields":{"a":"b"},"Remark":"x"}`,
	`{"code":null,"opaque":null,"remark":null,"extFields":null,"language":null}`,
	`{"extFields":null,"extFields":{"a":"1"},"extFields":{"b":null}}`,
	`{"unknown":{"deep":[1,2,{"x":null}],"s":"\u00e9"},"code":3}`,
	` { "code" : 3 , "extFields" : { "k" : "v\n\"" } } `,
	`{"code":70000}`, `{"code":"1"}`, `{"opaque":1.5}`, `{"code":1}x`, `{"code":1}}`, `{"code":1`, `{"code":`,
	`{"extFields":{"a":1}}`, `{"extFields":[]}`, `{"language":"JAVA"}`, `{"language":"GO"}`, `{"language":GO}`,
	`null`, ``, ` `, `[]`, `{}`, `{"code":1,}`, `{,}`, `{"a"}`, `{"code":-0}`, `{"code":1e2}`, `{"remark":"\ud83d\ude00"}`,
}

func sameDecode(t *testing.T, header []byte) {
	t.Helper()
	want, wantErr := upstreamDecodeHeader(header)
	got, gotErr := jsonSerializer.decodeHeader(header)
	if (wantErr != nil) != (gotErr != nil) {
		t.Fatalf("decodeHeader(%q): error %v, upstream %v", header, gotErr, wantErr)
	}
	if wantErr == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("decodeHeader(%q) = %+v, upstream %+v", header, got, want)
	}
}

// decodeHeader reads every header as jsoniter.Unmarshal did: the same
// command, or an error where it gave one.
func TestDecodeHeaderAsUpstream(t *testing.T) {
	for _, h := range headerCorpus {
		sameDecode(t, []byte(h))
	}
	// Headers encoded by this client, random ext fields.
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 500; i++ {
		ext := map[string]string{}
		for j := r.Intn(6); j > 0; j-- {
			ext[specialStrings[r.Intn(len(specialStrings))]+fmt.Sprint(j)] = specialStrings[r.Intn(len(specialStrings))]
		}
		cmd := &RemotingCommand{Code: int16(r.Intn(400)), Version: _Version, Opaque: r.Int31(), Flag: r.Int31n(2), Remark: specialStrings[r.Intn(len(specialStrings))], ExtFields: ext}
		sameDecode(t, appendJSONHeader(nil, cmd))
	}
}

func FuzzDecodeHeader(f *testing.F) {
	for _, h := range headerCorpus {
		f.Add([]byte(h))
	}
	f.Fuzz(func(t *testing.T, header []byte) {
		sameDecode(t, header)
	})
}

// upstreamDecode is decode before patch 9, for its errors.
func upstreamDecode(data []byte) (*RemotingCommand, error) {
	buf := bytes.NewReader(data)
	length := int32(len(data))
	var oriHeaderLen int32
	if err := binary.Read(buf, binary.BigEndian, &oriHeaderLen); err != nil {
		return nil, err
	}
	headerLength := oriHeaderLen & 0xFFFFFF
	headerData := make([]byte, headerLength)
	if _, err := io.ReadFull(buf, headerData); err != nil {
		return nil, err
	}
	command, err := upstreamDecodeHeader(headerData)
	if err != nil {
		return nil, err
	}
	if bodyLength := length - 4 - headerLength; bodyLength > 0 {
		bodyData := make([]byte, bodyLength)
		if _, err = io.ReadFull(buf, bodyData); err != nil {
			return nil, err
		}
		command.Body = bodyData
	}
	return command, nil
}

// decode gives what upstream's did, errors included, on whole and cut
// frames.
func TestDecodeAsUpstream(t *testing.T) {
	frame, err := encode(&RemotingCommand{Code: 1, Opaque: 2, ExtFields: map[string]string{"a": "b"}, Body: []byte("the body")})
	if err != nil {
		t.Fatal(err)
	}
	empty, err := encode(&RemotingCommand{Code: 1, Opaque: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range [][]byte{frame[4:], empty[4:]} {
		for n := 0; n <= len(f); n++ {
			want, wantErr := upstreamDecode(f[:n])
			got, gotErr := decode(f[:n])
			if (gotErr == nil) != (wantErr == nil) {
				t.Fatalf("decode of %d bytes: error %v, upstream %v", n, gotErr, wantErr)
			}
			// A cut frame fails as upstream's reads did; a cut header's
			// JSON fails in the decoder, whose texts may differ.
			if (errors.Is(wantErr, io.EOF) || errors.Is(wantErr, io.ErrUnexpectedEOF)) && gotErr != wantErr {
				t.Fatalf("decode of %d bytes: error %v, upstream %v", n, gotErr, wantErr)
			}
			if wantErr == nil && !reflect.DeepEqual(got, want) {
				t.Fatalf("decode of %d bytes = %+v, upstream %+v", n, got, want)
			}
		}
	}
}

// appendJSONString writes jsoniter's bytes for every string.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range specialStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := jsoniter.Marshal(s)
		if err != nil {
			t.Skip()
		}
		if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("appendJSONString(%q) = %s, jsoniter %s", s, got, want)
		}
	})
}

// sendCommand is a send request as the producer builds it (a 1 KiB body,
// a key and a header).
func sendCommand() *RemotingCommand {
	cmd := NewRemotingCommand(10, nil, make([]byte, 1024))
	cmd.ExtFields = map[string]string{
		"a": "MESH_PRODUCER", "b": "mesh.bench.publish", "c": "TBW102", "d": "4", "e": "1", "f": "0", "g": "1733500000000",
		"h": "0", "i": "KEYS\x01key-1\x02SHARDING_KEY\x01key-1\x02traceparent\x0100-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\x02UNIQ_KEY\x017F000001000000000000000000000001\x02",
		"j": "0", "k": "false", "m": "false",
	}
	return cmd
}

// sendResponseFrame is a send's response as a broker writes it.
var sendResponseFrame = func() []byte {
	h := []byte(headerCorpus[0])
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(h))), h...)
}()

// upstreamEncode is encode before patch 9 (JSON codec).
func upstreamEncode(command *RemotingCommand) ([]byte, error) {
	header, err := jsonSerializer.encodeHeader(command)
	if err != nil {
		return nil, err
	}
	frameSize := 4 + len(header) + len(command.Body)
	buf := make([]byte, 0, 4+frameSize)
	buf = binary.BigEndian.AppendUint32(buf, uint32(frameSize))
	buf = append(buf, markProtocolType(int32(len(header)))...)
	buf = append(buf, header...)
	buf = append(buf, command.Body...)
	return buf, nil
}

// Encode and decode of a send and its response, upstream's and patch 9's.
// cpu-ns/op (the process's CPU time) moves less than ns/op on a machine
// shared with other work.
func BenchmarkCodec(b *testing.B) {
	cmd := sendCommand()
	for _, c := range []struct {
		name string
		f    func()
	}{
		{"encode/upstream", func() { _, _ = upstreamEncode(cmd) }},
		{"encode/patched", func() { _, _ = encode(cmd) }},
		{"decode/upstream", func() { _, _ = upstreamDecode(append([]byte(nil), sendResponseFrame...)) }},
		{"decode/patched", func() { _, _ = decode(append([]byte(nil), sendResponseFrame...)) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				c.f()
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

// Patch 16: appendJSONFrame appends the frame encode makes after what dst
// holds, and into a buffer with room it allocates nothing (doRequest's
// pooled buffer).
func TestAppendJSONFrameIntoBuffer(t *testing.T) {
	cmd := NewRemotingCommand(320, nil, make([]byte, 4096))
	cmd.ExtFields = map[string]string{"topic": "MESH_orders"} // one field: one order
	want, err := encode(cmd)
	if err != nil {
		t.Fatal(err)
	}
	for _, dst := range [][]byte{nil, []byte("earlier frame"), make([]byte, 3, 1<<16)} {
		prefix := string(dst)
		got, err := encodeInto(dst, cmd)
		if err != nil {
			t.Fatal(err)
		}
		if string(got[:len(prefix)]) != prefix || !bytes.Equal(got[len(prefix):], want) {
			t.Fatalf("after %q: got %d bytes, want the prefix and encode's frame of %d", prefix, len(got), len(want))
		}
	}
	buf := make([]byte, 0, 1<<16)
	// The header's scratch buffer comes from a pool, which the race
	// detector makes drop a quarter of what is put back: up to 1 on
	// average is allowed.
	if n := testing.AllocsPerRun(100, func() { buf, _ = encodeInto(buf[:0], cmd) }); n > 1 {
		t.Errorf("encodeInto a buffer with room made %v allocations, want 0", n)
	}
}
