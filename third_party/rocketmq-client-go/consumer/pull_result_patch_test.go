package consumer

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/apache/rocketmq-client-go/v2/internal"
	"github.com/apache/rocketmq-client-go/v2/internal/utils"
	"github.com/apache/rocketmq-client-go/v2/primitive"
)

// This test is msgmesh's, for patch 13 (PATCHES.md).

// storedMessage is a message as a broker stores it (IPv4 hosts), with
// properties props ("k\x01v" pairs joined by "\x02").
func storedMessage(b []byte, offset int64, props string) []byte {
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, 0xdaa320a7)
	b = binary.BigEndian.AppendUint32(b, 0)                // body CRC
	b = binary.BigEndian.AppendUint32(b, 1)                // queue id
	b = binary.BigEndian.AppendUint32(b, 0)                // flag
	b = binary.BigEndian.AppendUint64(b, uint64(offset))   // queue offset
	b = binary.BigEndian.AppendUint64(b, uint64(offset)*9) // commit log offset
	b = binary.BigEndian.AppendUint32(b, 0)                // sys flag
	b = binary.BigEndian.AppendUint64(b, 1765000000000)
	b = append(b, 127, 0, 0, 1)
	b = binary.BigEndian.AppendUint32(b, 5000)
	b = binary.BigEndian.AppendUint64(b, 1765000000001)
	b = append(b, 127, 0, 0, 1)
	b = binary.BigEndian.AppendUint32(b, 10911)
	b = binary.BigEndian.AppendUint32(b, 0) // reconsume times
	b = binary.BigEndian.AppendUint64(b, 0)
	b = binary.BigEndian.AppendUint32(b, 2)
	b = append(b, "hi"...)
	b = append(b, 1, 't')
	b = binary.BigEndian.AppendUint16(b, uint16(len(props)))
	return append(b, props...)
}

// TestProcessPullResultProperties: every message of a pull gets the
// pull's MIN_OFFSET and MAX_OFFSET, and a TransactionId (its UNIQ_KEY)
// exactly when TRAN_MSG parses as true with strconv.ParseBool.
func TestProcessPullResultProperties(t *testing.T) {
	tranMsg := []string{"", "true", "TRUE", "1", "t", "false", "0", "yes", "bogus"}
	var body []byte
	for i, v := range tranMsg {
		props := []string{primitive.PropertyUniqueClientMessageIdKeyIndex + "\x01ID" + v}
		if v != "" {
			props = append(props, primitive.PropertyTransactionPrepared+"\x01"+v)
		}
		body = storedMessage(body, int64(i), strings.Join(props, "\x02"))
	}
	result := &primitive.PullResult{Status: primitive.PullFound, MinOffset: 3, MaxOffset: 1234567}
	result.SetBody(body)
	mq := &primitive.MessageQueue{Topic: "t", BrokerName: "b", QueueId: 1}
	dc := &defaultConsumer{option: defaultPushConsumerOptions()}
	dc.processPullResult(mq, result, &internal.SubscriptionData{Topic: "t", Tags: utils.NewSet()})

	msgs := result.GetMessageExts()
	if len(msgs) != len(tranMsg) {
		t.Fatalf("%d messages, want %d", len(msgs), len(tranMsg))
	}
	for i, msg := range msgs {
		v := tranMsg[i]
		wantID := ""
		if v == "true" || v == "TRUE" || v == "1" || v == "t" {
			wantID = "ID" + v
		}
		if msg.TransactionId != wantID {
			t.Errorf("TRAN_MSG %q: TransactionId %q, want %q", v, msg.TransactionId, wantID)
		}
		if got := msg.GetProperty(primitive.PropertyMinOffset); got != "3" {
			t.Errorf("message %d: MIN_OFFSET %q, want 3", i, got)
		}
		if got := msg.GetProperty(primitive.PropertyMaxOffset); got != "1234567" {
			t.Errorf("message %d: MAX_OFFSET %q, want 1234567", i, got)
		}
		if msg.Queue != mq {
			t.Errorf("message %d: queue %v, want the pull's", i, msg.Queue)
		}
	}
}
