package msgmesh_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"
)

// BenchmarkHTTPPublish is one HTTP publish of 1 KiB after another, each
// answered after the broker's ack (an embedded JetStream server in this
// process): allocs/op count the client, the sidecar and the server, so
// compare them before and after a change to the handler, not in absolute.
//
//	go test -run '^$' -bench HTTPPublish -benchmem ./msgmesh/
func BenchmarkHTTPPublish(b *testing.B) {
	e := newEnv(b)
	e.register("bench", []string{"p:bench.http"}, nil)
	body := bytes.Repeat([]byte("x"), 1024)
	url := "http://" + e.http + "/v1/publish/bench.http"
	hc := &http.Client{Transport: &http.Transport{}}
	b.Cleanup(hc.CloseIdleConnections)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Msgmesh-App", "bench")
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		answer, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("publish: %s %s", resp.Status, answer)
		}
	}
}
