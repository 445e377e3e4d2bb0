package nats

// Tests of msgmesh's local patches (PATCHES.md).

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

// hmsg is an HMSG frame of subject, reply, the header block of hdr and
// payload data, on sid 1.
func hmsg(subject, reply string, hdr Header, data []byte) []byte {
	block := "NATS/1.0\r\n"
	for k, vs := range hdr {
		for _, v := range vs {
			block += k + ": " + v + "\r\n"
		}
	}
	block += "\r\n"
	return fmt.Appendf(nil, "HMSG %s 1 %s %d %d\r\n%s%s\r\n", subject, reply, len(block), len(block)+len(data), block, data)
}

// deliverTo is a connection with one channel subscription (sid 1), that
// parses frames as its read loop does.
func deliverTo(t *testing.T) (*Conn, chan *Msg) {
	t.Helper()
	ch := make(chan *Msg, 1)
	sub := &Subscription{Subject: ">", mch: ch, typ: ChanSubscription}
	nc := &Conn{subs: map[int64]*Subscription{1: sub}, ps: &parseState{}}
	sub.conn = nc
	return nc, ch
}

// Patch 3: processMsg copies a message's subject, reply, header block and
// payload in one allocation, and the payload ends it.
func TestPatch3MessageInOneAllocation(t *testing.T) {
	nc, ch := deliverTo(t)
	frame := hmsg("orders.eu", "$JS.ACK.S.C.1.2.3.4.0", Header{"K": {"v1", "v2"}}, []byte("hello"))
	if err := nc.parse(frame); err != nil {
		t.Fatal(err)
	}
	m := <-ch
	if m.Subject != "orders.eu" || m.Reply != "$JS.ACK.S.C.1.2.3.4.0" || string(m.Data) != "hello" ||
		strings.Join(m.Header["K"], ",") != "v1,v2" {
		t.Fatalf("got subject %q reply %q header %v data %q", m.Subject, m.Reply, m.Header, m.Data)
	}
	// One backing array, in order: subject, reply, header block, payload.
	base := unsafe.Pointer(unsafe.StringData(m.Subject))
	if unsafe.Pointer(unsafe.StringData(m.Reply)) != unsafe.Add(base, len(m.Subject)) {
		t.Error("the reply does not follow the subject in one allocation")
	}
	hdrLen := len(frame) - len(m.Data) - len("\r\n") - bytes.Index(frame, []byte("NATS/1.0"))
	if unsafe.Pointer(&m.Data[0]) != unsafe.Add(base, len(m.Subject)+len(m.Reply)+hdrLen) {
		t.Error("the payload does not follow the header block in one allocation")
	}
	if cap(m.Data) != len(m.Data) {
		t.Errorf("cap(Data) %d, len %d: an append would write past the payload", cap(m.Data), len(m.Data))
	}
	// The parser's buffer is not referenced: overwriting it changes nothing.
	for i := range frame {
		frame[i] = 'x'
	}
	_ = append(m.Data, "more"...)
	if m.Subject != "orders.eu" || m.Reply != "$JS.ACK.S.C.1.2.3.4.0" || string(m.Data) != "hello" ||
		strings.Join(m.Header["K"], ",") != "v1,v2" {
		t.Fatalf("after overwriting the read buffer: subject %q reply %q header %v data %q", m.Subject, m.Reply, m.Header, m.Data)
	}

	frame = hmsg("orders.eu", "$JS.ACK.S.C.1.2.3.4.0", Header{"K": {"v1"}}, []byte("hello"))
	allocs := testing.AllocsPerRun(100, func() {
		if err := nc.parse(frame); err != nil {
			t.Fatal(err)
		}
		<-ch
	})
	t.Logf("%v allocations per message with one header", allocs)
	// The buffer, the Msg, the header map (two) and its value slice;
	// before the patch also the subject, the reply and the header block.
	if allocs > 5 {
		t.Errorf("%v allocations per message with one header, want at most 5", allocs)
	}
}

// Patch 3: a payload the parser had to copy itself (split across reads
// and larger than its scratch buffer) is used as it is.
func TestPatch3SplitMessage(t *testing.T) {
	nc, ch := deliverTo(t)
	data := bytes.Repeat([]byte("0123456789"), 1000)
	frame := hmsg("orders.eu", "reply.1", Header{"K": {"v"}}, data)
	cut := bytes.Index(frame, []byte("NATS/1.0")) + 100
	if err := nc.parse(frame[:cut]); err != nil {
		t.Fatal(err)
	}
	if err := nc.parse(frame[cut:]); err != nil {
		t.Fatal(err)
	}
	m := <-ch
	if m.Subject != "orders.eu" || m.Reply != "reply.1" || !bytes.Equal(m.Data, data) || m.Header.Get("K") != "v" {
		t.Fatalf("got subject %q reply %q header %v and %d bytes", m.Subject, m.Reply, m.Header, len(m.Data))
	}
}

// Patch 4: AppendHeader appends the header block PublishMsg sends, after
// what dst holds, and nothing for a message without headers.
func TestPatch4AppendHeaderAsPublishMsg(t *testing.T) {
	for _, h := range []Header{
		nil,
		{},
		{"Msgmesh-Key": {"order-42"}},
		{"A": {" padded value ", "second"}, "B": {"with\r\nnewline"}, "C": {""}},
		{"Nats-Batch-Id": {"k9bGJ1MXtTgrqlDg6LtYNa"}, "Nats-Batch-Sequence": {"17"}},
	} {
		m := &Msg{Subject: "s", Header: h}
		want, werr := m.headerBytes()
		got, gerr := m.AppendHeader([]byte("prefix"))
		if (gerr == nil) != (werr == nil) || !bytes.Equal(got[:6], []byte("prefix")) {
			t.Fatalf("%v: %q, %v; headerBytes %v", h, got, gerr, werr)
		}
		// Map order differs between the two walks: compare the lines.
		lines := func(b []byte) []string {
			l := strings.Split(string(b), "\r\n")
			slices.Sort(l)
			return l
		}
		if !slices.Equal(lines(got[6:]), lines(want)) {
			t.Fatalf("%v: AppendHeader %q, PublishMsg sends %q", h, got[6:], want)
		}
	}
	if _, err := (&Msg{Header: Header{"bad key": {"v"}}}).AppendHeader(nil); err != ErrBadHeaderMsg {
		t.Fatalf("a bad key: %v", err)
	}
}
