package msgmesh

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
)

// batchSeeds are batch bodies scanBatch must read as encoding/json does,
// or leave to it: the usual shapes, and near misses of each.
var batchSeeds = []string{
	`[]`, ` [ ] `, `[{}]`, "[\n {\"id\":\"1\"} ,\t{\"id\":\"2\"}\r\n]\n",
	`[{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"aGVsbG8="}]`,
	`[{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"a":[1,2,{"b":"}]\""}],"c":null}}]`,
	`[{"data":"text with \"quotes\" and \\ escapes"},{"data":123},{"data":-1.5e3},{"data":true},{"data":null},{"data":[]}]`,
	`[{"id":"1","id":"2"}]`, `[{"data":1,"data":2}]`, `[{"data":{"a":1}}, {"data":[1,]}]`,
	`[{"id":1}]`, `[{"id":"é"}]`, `[{"id":"a\nb"}]`, `[{"i\u0064":"1"}]`, `[{"id":"1"}`, `[{"id":"1"},]`,
	`[{"id":"1"}] x`, `[null]`, `[1]`, `{}`, `[{"data":}]`, `[{"data":1 2}]`, `[{"data":{"a":1}]`,
	`[{"data":"unterminated}]`, `[{"data":{"a":"\"}"}}]`, `["a"]`, `[{"a":"b"}][]`, "\ufeff[]", `[{"data":nul}]`,
}

// TestScanBatchAsEncodingJSON: what scanBatch reads, encoding/json reads
// the same, and it reads the usual shapes itself.
func TestScanBatchAsEncodingJSON(t *testing.T) {
	for _, body := range batchSeeds {
		checkScanBatch(t, []byte(body))
	}
	for _, usual := range batchSeeds[:7] {
		if _, ok := scanBatch([]byte(usual)); !ok {
			t.Errorf("scanBatch left the usual %s to encoding/json", usual)
		}
	}
	event := strings.Trim(batchSeeds[5], "[]")
	big := "[" + strings.Repeat(event+",", 99) + event + "]"
	if docs, ok := scanBatch([]byte(big)); !ok || len(docs) != 100 {
		t.Errorf("a batch of 100: %d events, %v", len(docs), ok)
	}
}

// FuzzScanBatch: scanBatch never reads a body otherwise than
// encoding/json does.
//
//	go test -run '^$' -fuzz FuzzScanBatch ./msgmesh/
func FuzzScanBatch(f *testing.F) {
	for _, body := range batchSeeds {
		f.Add([]byte(body))
	}
	f.Fuzz(checkScanBatch)
}

func checkScanBatch(t *testing.T, body []byte) {
	got, ok := scanBatch(body)
	if !ok {
		return // left to encoding/json
	}
	var want []map[string]json.RawMessage
	if err := json.Unmarshal(body, &want); err != nil {
		t.Fatalf("scanBatch read %q, which encoding/json refuses: %v", body, err)
	}
	eq := func(a, b map[string]json.RawMessage) bool {
		return maps.EqualFunc(a, b, func(x, y json.RawMessage) bool { return string(x) == string(y) })
	}
	if !slices.EqualFunc(got, want, eq) {
		t.Fatalf("scanBatch(%q) = %q; encoding/json: %q", body, got, want)
	}
}
