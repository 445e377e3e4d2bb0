package msgmesh

import (
	"encoding/json"
	"math"
	"mime"
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

// mediaTypeSeeds are Content-Types parseMediaType must answer as
// mime.ParseMediaType does: bare ones it answers itself, and the rest.
var mediaTypeSeeds = []string{
	"", "application/octet-stream", "application/json", "application/cloudevents+json",
	"application/vnd.x.y-z_1~!#$%&'*+.^`|", "text/plain", "multipart/form-data",
	"Application/JSON", "TEXT/PLAIN", " application/json", "application/json ", "application/json;charset=utf-8",
	"application/json; charset=utf-8", "text/plain;", "application/", "/json", "/", "application",
	"application/json/x", "appli cation/json", "application/js\"on", "application/j(son)", "a/b=c",
	"application/jsön", "application/json\x00", "application/json\t", "x/y;a=b;a=c", "a/b;c",
	"text/html; charset=\"utf-8\"", "form-data", "a/\x7f", "a@b/c", "a/b?",
}

// TestParseMediaTypeAsMime: parseMediaType's media type and error are
// mime.ParseMediaType's, for every kind of Content-Type.
func TestParseMediaTypeAsMime(t *testing.T) {
	for _, ct := range mediaTypeSeeds {
		checkMediaType(t, ct)
	}
}

// FuzzParseMediaType: parseMediaType agrees with mime.ParseMediaType on
// any input.
//
//	go test -run '^$' -fuzz FuzzParseMediaType ./msgmesh/
func FuzzParseMediaType(f *testing.F) {
	for _, ct := range mediaTypeSeeds {
		f.Add(ct)
	}
	f.Fuzz(checkMediaType)
}

func checkMediaType(t *testing.T, ct string) {
	got, gotErr := parseMediaType(ct)
	want, _, wantErr := mime.ParseMediaType(ct)
	if got != want || (gotErr == nil) != (wantErr == nil) || gotErr != nil && gotErr.Error() != wantErr.Error() {
		t.Errorf("parseMediaType(%q) = %q, %v; mime.ParseMediaType: %q, %v", ct, got, gotErr, want, wantErr)
	}
}

// TestParseMediaTypeBareNoAlloc: a bare type costs no allocation (the
// reason parseMediaType exists).
func TestParseMediaTypeBareNoAlloc(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { _, _ = parseMediaType("application/octet-stream") }); n != 0 {
		t.Errorf("parseMediaType of a bare type: %v allocations, want 0", n)
	}
}

// jsonStringSeeds are JSON values plainJSONString must read as
// encoding/json does, or leave to it.
var jsonStringSeeds = []string{
	`""`, `"a"`, `"/orders/service"`, `"aGVsbG8gd29ybGQ="`, `"a\"b"`, `"a\\b"`, `"\u0041"`, `"a\/b"`,
	`"ünï"`, "\"tab\there\"", "\"del\x7f\"", "\"bad\xff\"", `1`, `true`, `null`, `"`, `"a`, `a"`, `["a"]`,
}

// TestPlainJSONStringAsEncodingJSON: a string plainJSONString reads is the
// string encoding/json decodes, for every kind of JSON value.
func TestPlainJSONStringAsEncodingJSON(t *testing.T) {
	for _, raw := range jsonStringSeeds {
		checkPlainJSONString(t, []byte(raw))
	}
}

// FuzzPlainJSONString: plainJSONString never reads a value otherwise than
// encoding/json does.
//
//	go test -run '^$' -fuzz FuzzPlainJSONString ./msgmesh/
func FuzzPlainJSONString(f *testing.F) {
	for _, raw := range jsonStringSeeds {
		f.Add([]byte(raw))
	}
	f.Fuzz(checkPlainJSONString)
}

func checkPlainJSONString(t *testing.T, raw []byte) {
	got, ok := plainJSONString(raw)
	if !ok {
		return // left to encoding/json
	}
	var want string
	if err := json.Unmarshal(raw, &want); err != nil || string(got) != want {
		t.Errorf("plainJSONString(%q) = %q; encoding/json: %q, %v", raw, got, want, err)
	}
}
