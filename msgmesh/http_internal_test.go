package msgmesh

import (
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestWritePublishedAsWriteJSON: the hand-written publish answer is the
// bytes and headers writeJSON writes, for every kind of stream and message
// id (those it cannot write plainly go through writeJSON).
func TestWritePublishedAsWriteJSON(t *testing.T) {
	for _, res := range []publishResponse{
		{Stream: "orders", Partition: -1, Offset: 42},
		{Stream: "KV_orders-1.x", Partition: 3, Offset: math.MaxInt64, MessageID: "7F0000010001B4AA0000000000000001"},
		{Stream: "", Partition: math.MinInt32, Offset: math.MinInt64, MessageID: "m"},
		{Stream: `quo"te`, MessageID: `back\slash`},
		{Stream: "<html>&", MessageID: "tab\there"},
		{Stream: "ünïcode", MessageID: "\u2028"},
		{Stream: "bad\xffutf8", MessageID: "del\x7f"},
	} {
		want, got := httptest.NewRecorder(), httptest.NewRecorder()
		writeJSON(want, http.StatusOK, res)
		writePublished(got, res)
		if got.Code != want.Code || got.Body.String() != want.Body.String() || got.Header().Get("Content-Type") != want.Header().Get("Content-Type") {
			t.Errorf("%+v: got %d %q %q, want %d %q %q", res, got.Code, got.Header().Get("Content-Type"), got.Body, want.Code, want.Header().Get("Content-Type"), want.Body)
		}
	}
}
