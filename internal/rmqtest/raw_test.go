package rmqtest

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

// waitLong bounds every wait of a test; nothing waits this long when the
// code is right.
const waitLong = 30 * time.Second

// rawConn speaks the remoting protocol directly, for what the real client
// cannot do (malformed frames, unknown codes, precise long-poll timing).
type rawConn struct {
	t      testing.TB
	c      net.Conn
	r      *bufio.Reader
	opaque int32
}

func dial(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c, r: bufio.NewReader(c)}
}

func startBroker(t testing.TB, cfg Config) *Broker {
	t.Helper()
	b, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

func (rc *rawConn) write(cmd *command) {
	rc.t.Helper()
	frame, err := encodeFrame(cmd)
	if err != nil {
		rc.t.Fatal(err)
	}
	if _, err := rc.c.Write(frame); err != nil {
		rc.t.Fatal(err)
	}
}

// read reads the next frame within d.
func (rc *rawConn) read(d time.Duration) (*command, error) {
	if err := rc.c.SetReadDeadline(time.Now().Add(d)); err != nil {
		return nil, err
	}
	return readFrame(rc.r)
}

// send writes a request and returns its opaque.
func (rc *rawConn) send(code int16, ext map[string]string, body []byte, serialize byte) int32 {
	rc.t.Helper()
	rc.opaque++
	rc.write(&command{Code: code, Language: "GO", Version: 317, Opaque: rc.opaque, Ext: ext, Body: body, serialize: serialize})
	return rc.opaque
}

// response reads frames until the response to opaque, skipping requests
// from the broker (notifications).
func (rc *rawConn) response(opaque int32, d time.Duration) *command {
	rc.t.Helper()
	deadline := time.Now().Add(d)
	for {
		cmd, err := rc.read(time.Until(deadline))
		if err != nil {
			rc.t.Fatalf("waiting for response %d: %v", opaque, err)
		}
		if cmd.isResponse() && cmd.Opaque == opaque {
			return cmd
		}
	}
}

func (rc *rawConn) call(code int16, ext map[string]string, body []byte) *command {
	rc.t.Helper()
	return rc.response(rc.send(code, ext, body, serializeJSON), waitLong)
}

// expectClosed asserts that the broker closes the connection.
func (rc *rawConn) expectClosed() {
	rc.t.Helper()
	for {
		_, err := rc.read(waitLong)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			rc.t.Fatal("the broker did not close the connection")
		}
		if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) {
			var oe *net.OpError
			if !errors.As(err, &oe) { // connection reset
				rc.t.Fatalf("read: %v, want the connection closed", err)
			}
		}
		return
	}
}

func send(t testing.TB, rc *rawConn, topic string, queue int, body string) *command {
	t.Helper()
	resp := rc.call(CodeSendMessage, map[string]string{
		"producerGroup": "pg", "topic": topic, "queueId": strconv.Itoa(queue), "sysFlag": "0",
		"bornTimestamp": strconv.FormatInt(time.Now().UnixMilli(), 10), "flag": "0",
		"properties": "UNIQ_KEY\x01id-" + body + "\x02", "reconsumeTimes": "0",
	}, []byte(body))
	if resp.Code != respSuccess {
		t.Fatalf("send: code %d %s", resp.Code, resp.Remark)
	}
	return resp
}

func pullArgsExt(topic string, queue int, offset int64, suspend time.Duration) map[string]string {
	flag := 0
	if suspend > 0 {
		flag = pullFlagSuspend
	}
	return map[string]string{
		"consumerGroup": "g", "topic": topic, "queueId": strconv.Itoa(queue),
		"queueOffset": strconv.FormatInt(offset, 10), "maxMsgNums": "32", "sysFlag": strconv.Itoa(flag),
		"commitOffset": "0", "suspendTimeoutMillis": strconv.FormatInt(suspend.Milliseconds(), 10),
		"subscription": "*", "subVersion": "0", "expressionType": "TAG",
	}
}

func TestLongPollReturnsWhenAMessageArrives(t *testing.T) {
	b := startBroker(t, Config{})
	ns := dial(t, b.NameServer())
	if r := ns.call(CodeGetRouteInfoByTopic, map[string]string{"topic": "lp"}, nil); r.Code != respSuccess {
		t.Fatalf("route: %d %s", r.Code, r.Remark)
	}
	consumer := dial(t, b.BrokerAddr())
	producer := dial(t, b.BrokerAddr())

	// Without the suspend flag an empty queue answers at once.
	r := consumer.call(CodePullMessage, pullArgsExt("lp", 1, 0, 0), nil)
	if r.Code != respPullNotFound || r.Ext["nextBeginOffset"] != "0" || r.Ext["maxOffset"] != "0" {
		t.Fatalf("empty pull: code %d ext %v", r.Code, r.Ext)
	}

	// A suspended pull waits until a message arrives on its queue.
	opaque := consumer.send(CodePullMessage, pullArgsExt("lp", 1, 0, 20*time.Second), nil, serializeJSON)
	if !pollT(func() bool { return b.WaitingPulls() == 1 }) {
		t.Fatal("the pull is not held")
	}
	send(t, producer, "lp", 2, "other-queue") // does not wake it
	if _, err := consumer.read(200 * time.Millisecond); err == nil {
		t.Fatal("the pull was answered by a message on another queue")
	}
	sent := time.Now()
	send(t, producer, "lp", 1, "hello")
	r = consumer.response(opaque, waitLong)
	if d := time.Since(sent); d > 5*time.Second {
		t.Fatalf("answered %v after the message arrived", d)
	}
	if r.Code != respSuccess || r.Ext["nextBeginOffset"] != "1" || r.Ext["maxOffset"] != "1" {
		t.Fatalf("pull: code %d ext %v", r.Code, r.Ext)
	}
	m, n, err := decodeRecord(r.Body)
	if err != nil || n != len(r.Body) || string(m.Body) != "hello" || m.Topic != "lp" || m.QueueID != 1 || m.QueueOffset != 0 {
		t.Fatalf("record: %+v (%d of %d bytes) %v", m, n, len(r.Body), err)
	}

	// A suspended pull that finds nothing answers "not found" after its
	// suspend timeout.
	start := time.Now()
	r = consumer.response(consumer.send(CodePullMessage, pullArgsExt("lp", 1, 1, 300*time.Millisecond), nil, serializeJSON), waitLong)
	if d := time.Since(start); r.Code != respPullNotFound || d < 250*time.Millisecond {
		t.Fatalf("timed-out pull: code %d after %v", r.Code, d)
	}

	// An offset past the end is corrected to 0, as RocketMQ does.
	r = consumer.call(CodePullMessage, pullArgsExt("lp", 1, 7, 0), nil)
	if r.Code != respPullOffsetMoved || r.Ext["nextBeginOffset"] != "0" {
		t.Fatalf("pull past the end: code %d ext %v", r.Code, r.Ext)
	}
}

func TestUnknownCodeKeepsConnectionUsable(t *testing.T) {
	b := startBroker(t, Config{})
	for _, addr := range []string{b.NameServer(), b.BrokerAddr()} {
		rc := dial(t, addr)
		r := rc.call(9999, map[string]string{"x": "y"}, []byte("body"))
		if r.Code != respRequestCodeNotSupported || !r.isResponse() {
			t.Fatalf("%s: unknown code answered %d %q", addr, r.Code, r.Remark)
		}
		// The broker's requests on the name server and vice versa are
		// unknown there too.
		wrong := CodePullMessage
		if addr == b.BrokerAddr() {
			wrong = CodeGetRouteInfoByTopic
		}
		if r := rc.call(wrong, nil, nil); r.Code != respRequestCodeNotSupported {
			t.Fatalf("%s: code %d answered %d", addr, wrong, r.Code)
		}
		// One-way requests get no answer, and the connection still works.
		rc.opaque++
		rc.write(&command{Code: 9998, Opaque: rc.opaque, Flag: flagOneway})
		ok := CodeGetBrokerClusterInfo
		if addr == b.BrokerAddr() {
			ok = CodeGetMaxOffset
		}
		if r := rc.call(ok, map[string]string{"topic": "x", "queueId": "0"}, nil); r.Code != respSuccess {
			t.Fatalf("%s: after unknown codes, code %d answered %d %s", addr, ok, r.Code, r.Remark)
		}
	}
}

func TestMalformedFrameClosesOnlyItsConnection(t *testing.T) {
	b := startBroker(t, Config{})
	frame := func(total uint32, mark uint32, rest []byte) []byte {
		out := binary.BigEndian.AppendUint32(nil, total)
		out = binary.BigEndian.AppendUint32(out, mark)
		return append(out, rest...)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"length too small", []byte{0, 0, 0, 2, 0, 0}},
		{"length too large", frame(1<<30, 0, nil)},
		{"header longer than frame", frame(8, 100, []byte("abcd"))},
		{"unknown serialize type", frame(6, 7<<24|2, []byte("{}"))},
		{"bad json", frame(8, 4, []byte("{bad"))},
		{"truncated binary header", frame(7, 1<<24|3, []byte{0, 1, 2})},
		{"json code out of range", frame(4+17, 17, []byte(`{"code":99999999}`))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bystander := dial(t, b.BrokerAddr())
			bad := dial(t, b.BrokerAddr())
			if _, err := bad.c.Write(tt.data); err != nil {
				t.Fatal(err)
			}
			bad.expectClosed()
			if r := bystander.call(CodeGetMaxOffset, map[string]string{"topic": "x", "queueId": "0"}, nil); r.Code != respSuccess {
				t.Fatalf("bystander: %d %s", r.Code, r.Remark)
			}
		})
	}
	// A connection that ends in the middle of a frame just closes.
	half := dial(t, b.BrokerAddr())
	if _, err := half.c.Write(frame(100, 10, []byte("abc"))); err != nil {
		t.Fatal(err)
	}
	half.c.(*net.TCPConn).CloseWrite()
	half.expectClosed()
}

func TestBinaryHeaderAnsweredInKind(t *testing.T) {
	b := startBroker(t, Config{})
	rc := dial(t, b.NameServer())
	opaque := rc.send(CodeGetRouteInfoByTopic, map[string]string{"topic": "bin"}, nil, serializeRocketMQ)
	r := rc.response(opaque, waitLong)
	if r.serialize != serializeRocketMQ || r.Code != respSuccess {
		t.Fatalf("answer: serialize %d code %d", r.serialize, r.Code)
	}
	var route struct {
		QueueDatas []struct {
			ReadQueueNums int `json:"readQueueNums"`
		} `json:"queueDatas"`
		BrokerDatas []struct {
			BrokerAddrs map[string]string `json:"brokerAddrs"`
		} `json:"brokerDatas"`
	}
	if err := json.Unmarshal(r.Body, &route); err != nil {
		t.Fatal(err)
	}
	if len(route.QueueDatas) != 1 || route.QueueDatas[0].ReadQueueNums != DefaultQueuesPerTopic ||
		len(route.BrokerDatas) != 1 || route.BrokerDatas[0].BrokerAddrs["0"] != b.Advertise() {
		t.Fatalf("route: %s", r.Body)
	}
	if r := rc.call(CodeGetRouteInfoByTopic, map[string]string{"topic": "bad topic"}, nil); r.Code != respTopicNotExist {
		t.Fatalf("illegal topic: code %d", r.Code)
	}
}

func TestMembershipNotifiesOtherMembers(t *testing.T) {
	b := startBroker(t, Config{})
	hb := func(client string, groups ...string) []byte {
		var cds []map[string]any
		for _, g := range groups {
			cds = append(cds, map[string]any{"groupName": g, "messageModel": "CLUSTERING"})
		}
		body, _ := json.Marshal(map[string]any{"clientID": client, "consumerDataSet": cds})
		return body
	}
	a := dial(t, b.BrokerAddr())
	if r := a.call(CodeHeartbeat, nil, hb("a", "g")); r.Code != respSuccess {
		t.Fatal(r.Remark)
	}
	if b.Queues("%RETRY%g") != 1 {
		t.Fatal("the retry topic of a clustering group was not created")
	}
	expectNotify := func(rc *rawConn) {
		t.Helper()
		for {
			cmd, err := rc.read(waitLong)
			if err != nil {
				t.Fatalf("no notification: %v", err)
			}
			if !cmd.isResponse() && cmd.Code == CodeNotifyConsumerIDsChange && cmd.Ext["consumerGroup"] == "g" {
				return
			}
		}
	}
	c := dial(t, b.BrokerAddr())
	if r := c.call(CodeHeartbeat, nil, hb("c", "g")); r.Code != respSuccess {
		t.Fatal(r.Remark)
	}
	expectNotify(a)
	r := a.call(CodeGetConsumerListByGroup, map[string]string{"consumerGroup": "g"}, nil)
	var list struct {
		IDs []string `json:"consumerIdList"`
	}
	if err := json.Unmarshal(r.Body, &list); err != nil || len(list.IDs) != 2 || list.IDs[0] != "a" || list.IDs[1] != "c" {
		t.Fatalf("consumer list: %s", r.Body)
	}
	// A closed connection leaves the group at once.
	c.c.Close()
	expectNotify(a)
	if ids := b.ConsumerIDs("g"); len(ids) != 1 || ids[0] != "a" {
		t.Fatalf("members after close: %v", ids)
	}
	// A heartbeat that no longer lists the group leaves it too.
	if r := a.call(CodeHeartbeat, nil, hb("a", "other")); r.Code != respSuccess {
		t.Fatal(r.Remark)
	}
	if ids := b.ConsumerIDs("g"); len(ids) != 0 {
		t.Fatalf("members after the heartbeat without g: %v", ids)
	}
}

func TestClientTimeoutExpiresMembers(t *testing.T) {
	b := startBroker(t, Config{ClientTimeout: 200 * time.Millisecond})
	a := dial(t, b.BrokerAddr())
	body, _ := json.Marshal(map[string]any{"clientID": "a", "consumerDataSet": []map[string]any{{"groupName": "g"}}})
	if r := a.call(CodeHeartbeat, nil, body); r.Code != respSuccess {
		t.Fatal(r.Remark)
	}
	if !pollT(func() bool { return len(b.ConsumerIDs("g")) == 0 }) {
		t.Fatal("a silent member did not expire")
	}
}

func TestInterceptor(t *testing.T) {
	b := startBroker(t, Config{})
	rc := dial(t, b.BrokerAddr())
	b.Intercept(func(code int16, f map[string]string) Action {
		switch f["topic"] {
		case "fail":
			return Fail
		case "drop":
			return Drop
		case "cut":
			return Disconnect
		case "stored-cut":
			return HandleThenDisconnect
		}
		return Pass
	})
	if r := rc.call(CodeGetMaxOffset, map[string]string{"topic": "fail", "queueId": "0"}, nil); r.Code != respSystemError {
		t.Fatalf("Fail: code %d", r.Code)
	}
	rc.send(CodeGetMaxOffset, map[string]string{"topic": "drop", "queueId": "0"}, nil, serializeJSON)
	if _, err := rc.read(200 * time.Millisecond); err == nil {
		t.Fatal("Drop: answered")
	}
	rc2 := dial(t, b.BrokerAddr())
	rc2.send(CodeGetMaxOffset, map[string]string{"topic": "cut", "queueId": "0"}, nil, serializeJSON)
	rc2.expectClosed()
	rc4 := dial(t, b.BrokerAddr())
	rc4.send(CodeSendMessage, map[string]string{
		"producerGroup": "pg", "topic": "stored-cut", "queueId": "0", "sysFlag": "0",
		"bornTimestamp": "1", "flag": "0", "properties": "", "reconsumeTimes": "0",
	}, []byte("x"), serializeJSON)
	rc4.expectClosed()
	if got := b.MaxOffset("stored-cut", 0); got != 1 {
		t.Fatalf("HandleThenDisconnect: max offset %d after the send, want 1 (stored)", got)
	}
	b.Intercept(nil)
	rc3 := dial(t, b.BrokerAddr())
	if r := rc3.call(CodeGetMaxOffset, map[string]string{"topic": "fail", "queueId": "0"}, nil); r.Code != respSuccess {
		t.Fatalf("after removing the interceptor: code %d", r.Code)
	}
}

func TestSendChecks(t *testing.T) {
	b := startBroker(t, Config{MaxMessageSize: 10})
	rc := dial(t, b.BrokerAddr())
	base := func() map[string]string {
		return map[string]string{"topic": "t", "queueId": "0", "sysFlag": "0", "bornTimestamp": "1", "flag": "0"}
	}
	tests := []struct {
		name string
		ext  func(map[string]string)
		body string
		code int16
	}{
		{"too large", nil, "01234567890", respMessageIllegal},
		{"illegal topic", func(m map[string]string) { m["topic"] = "a.b" }, "x", respSystemError},
		{"schedule topic", func(m map[string]string) { m["topic"] = scheduleTopic }, "x", respSystemError},
		{"bad queue", func(m map[string]string) { m["queueId"] = "4" }, "x", respSystemError},
		{"transaction", func(m map[string]string) { m["sysFlag"] = "4" }, "x", respSystemError},
		{"bad number", func(m map[string]string) { m["bornTimestamp"] = "x" }, "x", respMessageIllegal},
	}
	for _, tt := range tests {
		ext := base()
		if tt.ext != nil {
			tt.ext(ext)
		}
		if r := rc.call(CodeSendMessage, ext, []byte(tt.body)); r.Code != tt.code {
			t.Errorf("%s: code %d (%s), want %d", tt.name, r.Code, r.Remark, tt.code)
		}
	}
	// A negative queue id picks a queue.
	ext := base()
	ext["queueId"] = "-1"
	if r := rc.call(CodeSendMessage, ext, []byte("x")); r.Code != respSuccess {
		t.Fatalf("queueId -1: %d %s", r.Code, r.Remark)
	}
}

// pollT reports whether cond held within waitLong, checking every 5 ms.
func pollT(cond func() bool) bool {
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}
