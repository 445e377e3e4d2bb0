package rmqtest

import (
	"bytes"
	"net"
	"strconv"
	"testing"
	"time"
)

// TestFailedWriteClosesConnection: a client that stops reading makes the
// broker's write fail after WriteTimeout; the broker then closes the
// connection, instead of going on writing answers after a frame it cut in
// two. The client reads every whole answer, then the end of the
// connection.
func TestFailedWriteClosesConnection(t *testing.T) {
	b := startBroker(t, Config{WriteTimeout: 200 * time.Millisecond})
	producer := dial(t, b.BrokerAddr())
	const size = 1 << 20
	r := producer.call(CodeSendMessage, map[string]string{
		"producerGroup": "pg", "topic": "stuck", "queueId": "0", "sysFlag": "0",
		"bornTimestamp": strconv.FormatInt(time.Now().UnixMilli(), 10), "flag": "0",
		"properties": "UNIQ_KEY\x01big\x02", "reconsumeTimes": "0",
	}, bytes.Repeat([]byte("x"), size))
	if r.Code != respSuccess {
		t.Fatalf("send: code %d %s", r.Code, r.Remark)
	}

	consumer := dial(t, b.BrokerAddr())
	if err := consumer.c.(*net.TCPConn).SetReadBuffer(4 << 10); err != nil {
		t.Fatal(err)
	}
	// Each pull is answered with the 1 MiB message: far more than the
	// socket buffers of both ends hold while the consumer reads nothing.
	const pulls = 64
	for range pulls {
		consumer.send(CodePullMessage, pullArgsExt("stuck", 0, 0, 0), nil, serializeJSON)
	}
	if !pollT(func() bool { return b.openConns() == 1 }) {
		t.Fatalf("%d connections open after the write to the consumer failed, want only the producer's", b.openConns())
	}
	consumer.expectClosed()
}

// openConns counts the client connections the broker and name server
// serve.
func (b *Broker) openConns() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.conns)
}
