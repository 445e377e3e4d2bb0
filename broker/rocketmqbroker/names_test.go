package rocketmqbroker_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	rmqerrors "github.com/apache/rocketmq-client-go/v2/errors"
	"github.com/apache/rocketmq-client-go/v2/primitive"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/broker/rocketmqbroker"
)

func TestConsumerGroupNames(t *testing.T) {
	tests := []struct {
		group, topic, want string
	}{
		{"billing", "orders.created", "MESH_billing__orders|created"},
		{"a.b", "c", "MESH_a|b__c"},
		{"a-b", "c", "MESH_a-b__c"},
	}
	for _, tt := range tests {
		if got := rocketmqbroker.ConsumerGroup("MESH_", tt.group, tt.topic); got != tt.want {
			t.Errorf("ConsumerGroup(%q, %q) = %q, want %q", tt.group, tt.topic, got, tt.want)
		}
	}
	// Ambiguous splits get distinct hashed names.
	a := rocketmqbroker.ConsumerGroup("MESH_", "a_", "b")
	b := rocketmqbroker.ConsumerGroup("MESH_", "a", "_b")
	c := rocketmqbroker.ConsumerGroup("MESH_", "a__x", "b")
	d := rocketmqbroker.ConsumerGroup("MESH_", "a", "x__b")
	if a == b || c == d || !strings.HasPrefix(a, "MESH_a___b_") || !strings.HasPrefix(c, "MESH_a__x__b_") {
		t.Fatalf("ambiguous names: %q %q %q %q", a, b, c, d)
	}
	// Long names are cut to fit "%RETRY%" + group in a topic name, and
	// stay distinct.
	long1 := rocketmqbroker.ConsumerGroup("MESH_", strings.Repeat("g", 128), strings.Repeat("t", 200)+"1")
	long2 := rocketmqbroker.ConsumerGroup("MESH_", strings.Repeat("g", 128), strings.Repeat("t", 200)+"2")
	if len("%RETRY%"+long1) > 127 || long1 == long2 {
		t.Fatalf("long names: %q (%d) %q", long1, len(long1), long2)
	}
	if got := rocketmqbroker.RocketTopic("a.b.c"); got != "a|b|c" {
		t.Fatalf("RocketTopic = %q", got)
	}
}

func TestDelayLevel(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want int
	}{
		{-time.Second, 1}, {0, 1}, {time.Second, 1}, {1001 * time.Millisecond, 2}, {5 * time.Second, 2},
		{time.Minute, 5}, {90 * time.Second, 6}, {time.Hour, 17}, {3 * time.Hour, 18},
	}
	for _, tt := range tests {
		if got := rocketmqbroker.DelayLevel(tt.d); got != tt.want {
			t.Errorf("DelayLevel(%v) = %d, want %d", tt.d, got, tt.want)
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want error
	}{
		{context.Canceled, nil},
		{context.DeadlineExceeded, broker.ErrUnavailable},
		{rmqerrors.ErrRequestTimeout, broker.ErrUnavailable},
		{&net.OpError{Op: "dial", Err: errors.New("refused")}, broker.ErrUnavailable},
		{fmt.Errorf("CODE: 13, DESC: the message body size over max value"), broker.ErrTooLarge},
		{fmt.Errorf("CODE: 13, DESC: the message properties length 40000 exceeds 32767"), broker.ErrTooLarge},
		{fmt.Errorf("CODE: 13  DESC: the message is illegal, maybe msg body or properties length not matched. msg body length limit 128k, msg properties length limit 32k."), broker.ErrTooLarge},
		{fmt.Errorf("CODE: 13, DESC: the message topic length too long"), broker.ErrRejected},
		{fmt.Errorf("CODE: 13, DESC: a batch may not contain delayed messages"), broker.ErrRejected},
		{fmt.Errorf("CODE: 16, DESC: no permission"), broker.ErrRejected},
		{fmt.Errorf("CODE: 17, DESC: topic not exist"), broker.ErrRejected},
		{fmt.Errorf("CODE: 2, DESC: busy"), broker.ErrUnavailable},
		{primitive.NewMQClientErr(14, "service not available"), broker.ErrUnavailable},
		{errors.New("the topic=x route info not found"), broker.ErrUnavailable},
	}
	for _, tt := range tests {
		if got := rocketmqbroker.Classify(tt.err); got != tt.want {
			t.Errorf("classify(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestMessageMapping(t *testing.T) {
	in := &broker.Message{Topic: "t.x", Key: "k", Headers: []broker.Header{{Key: "b", Value: ""}, {Key: "a", Value: "1"}}, Body: []byte("body")}
	rm, propsLen, err := rocketmqbroker.ToRocket(in, "t|x")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(rm.MarshallProperties()); propsLen != n {
		t.Errorf("toRocket counted %d bytes of properties; the client encodes %d", propsLen, n)
	}
	tagged := &broker.Message{Topic: "t.x", Headers: []broker.Header{{Key: broker.HeaderTag, Value: "T1"}, {Key: "a", Value: "1"}}, Body: []byte("body")}
	if trm, n, err := rocketmqbroker.ToRocket(tagged, "t|x"); err != nil || n != len(trm.MarshallProperties()) {
		t.Errorf("tagged message: toRocket counted %d bytes of properties, the client encodes %d (error %v)", n, len(trm.MarshallProperties()), err)
	}
	if rm.Topic != "t|x" || rm.GetKeys() != "k" || rm.GetShardingKey() != "k" {
		t.Fatalf("RocketMQ message: %v", rm)
	}
	ext := &primitive.MessageExt{Message: *primitive.NewMessage("t|x", rm.Body)}
	ext.WithProperties(rm.GetProperties())
	ext.WithProperty(primitive.PropertyUniqueClientMessageIdKeyIndex, "id")
	ext.WithProperty(primitive.PropertyMinOffset, "0")
	out := rocketmqbroker.FromRocket(ext, "t.x")
	want := "{t.x k [{a 1} {b }] [98 111 100 121] false false}"
	if got := fmt.Sprint(out); got != want {
		t.Fatalf("round trip: %s, want %s", got, want)
	}
}

// TestSystemPropertiesReserved: the header namespace (package broker),
// which the sidecar's header rule and this adapter share, knows every
// property name the RocketMQ client defines, so none can be set as a
// header.
func TestSystemPropertiesReserved(t *testing.T) {
	for _, p := range []string{
		primitive.PropertyKeys, primitive.PropertyTags, primitive.PropertyWaitStoreMsgOk,
		primitive.PropertyDelayTimeLevel, primitive.PropertyRetryTopic, primitive.PropertyRealTopic,
		primitive.PropertyRealQueueId, primitive.PropertyTransactionPrepared, primitive.PropertyProducerGroup,
		primitive.PropertyMinOffset, primitive.PropertyMaxOffset, primitive.PropertyBuyerId,
		primitive.PropertyOriginMessageId, primitive.PropertyTransferFlag, primitive.PropertyCorrectionFlag,
		primitive.PropertyMQ2Flag, primitive.PropertyReconsumeTime, primitive.PropertyMsgRegion,
		primitive.PropertyTraceSwitch, primitive.PropertyUniqueClientMessageIdKeyIndex,
		primitive.PropertyMaxReconsumeTimes, primitive.PropertyConsumeStartTime,
		primitive.PropertyTranscationPreparedQueueOffset, primitive.PropertyTranscationCheckTimes,
		primitive.PropertyCheckImmunityTimeInSeconds, primitive.PropertyShardingKey,
		primitive.PropertyTransactionID, primitive.PropertyCorrelationID,
		primitive.PropertyMessageReplyToClient, primitive.PropertyMessageTTL,
		primitive.PropertyReplyMessageArriveTime, primitive.PropertyMsgType, primitive.PropertyCluster,
	} {
		if !broker.RocketMQReserved(p) {
			t.Errorf("RocketMQ property %q is not reserved", p)
		}
		if err := broker.CheckHeaders([]broker.Header{{Key: p, Value: "x"}}); !errors.Is(err, broker.ErrInvalidHeader) {
			t.Errorf("the header rule lets apps set RocketMQ property %q: %v", p, err)
		}
	}
	// Exact as RocketMQ compares on consumption: a Java producer's user
	// property "keys" is a header.
	if broker.RocketMQReserved("keys") {
		t.Error(`"keys" is taken for RocketMQ's KEYS on consumption`)
	}
}
