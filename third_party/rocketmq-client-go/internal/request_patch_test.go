package internal

import (
	"fmt"
	"reflect"
	"strconv"
	"testing"
)

// msgmesh's test for patch 10 (PATCHES.md): Encode writes the fields as
// upstream's fmt.Sprintf did.
func TestSendMessageRequestHeaderEncode(t *testing.T) {
	for _, h := range []SendMessageRequestHeader{
		{ProducerGroup: "g", Topic: "t", QueueId: 3, SysFlag: 0, BornTimestamp: 1733500000000, Flag: 0, Properties: "KEYS\x01k\x02"},
		{QueueId: -1, SysFlag: 1 << 20, BornTimestamp: -5, Flag: -2147483648, ReconsumeTimes: 7, UnitMode: true, MaxReconsumeTimes: 16, Batch: true},
	} {
		want := map[string]string{
			"producerGroup":         h.ProducerGroup,
			"topic":                 h.Topic,
			"queueId":               strconv.Itoa(h.QueueId),
			"sysFlag":               fmt.Sprintf("%d", h.SysFlag),
			"bornTimestamp":         strconv.FormatInt(h.BornTimestamp, 10),
			"flag":                  fmt.Sprintf("%d", h.Flag),
			"reconsumeTimes":        strconv.Itoa(h.ReconsumeTimes),
			"unitMode":              strconv.FormatBool(h.UnitMode),
			"maxReconsumeTimes":     strconv.Itoa(h.MaxReconsumeTimes),
			"defaultTopic":          "TBW102",
			"defaultTopicQueueNums": "4",
			"batch":                 strconv.FormatBool(h.Batch),
			"properties":            h.Properties,
		}
		if got := h.Encode(); !reflect.DeepEqual(got, want) {
			t.Errorf("Encode() = %v, want %v", got, want)
		}
	}
}
