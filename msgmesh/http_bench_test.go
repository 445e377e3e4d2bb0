package msgmesh_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/msgmesh/msgmesh/broker/brokertest"
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

// BenchmarkHTTPPublish32 is BenchmarkHTTPPublish from 32 goroutines over
// 32 keep-alive connections at once, as meshctl bench's HTTP publish row
// sends them: the sidecar then serves requests from many connections
// together, as in production. Everything (clients, sidecar, JetStream)
// shares this process, so allocs/op and cpu-ns/op (the process's user
// and system CPU time per publish, which unlike ns/op does not count the
// waits for the JetStream server's fsync) are the sum of all three:
// compare a change to the HTTP path before and after, alternating runs.
//
//	go test -run '^$' -bench 'HTTPPublish32' -benchmem -count 3 ./msgmesh/
func BenchmarkHTTPPublish32(b *testing.B) {
	benchHTTPPublish32(b, "application/octet-stream", bytes.Repeat([]byte("x"), 1024), 1)
}

// BenchmarkHTTPBatchPublish32 is BenchmarkHTTPPublish32 with each request
// a CloudEvents batch of 64 events of 1 KiB data (in data_base64, as a
// structured event carries bytes); an op is one event, so its figures
// compare with BenchmarkHTTPPublish32's per message.
//
//	go test -run '^$' -bench 'HTTP(Batch)?Publish32' -benchmem -count 3 ./msgmesh/
func BenchmarkHTTPBatchPublish32(b *testing.B) {
	const events = 64
	batch := make([]cloudevents.Event, events)
	for i := range batch {
		batch[i] = cloudevents.NewEvent()
		batch[i].SetID(fmt.Sprint(i))
		batch[i].SetSource("/bench")
		batch[i].SetType("bench")
		if err := batch[i].SetData("application/octet-stream", bytes.Repeat([]byte("x"), 1024)); err != nil {
			b.Fatal(err)
		}
	}
	body, err := json.Marshal(batch)
	if err != nil {
		b.Fatal(err)
	}
	benchHTTPPublish32(b, "application/cloudevents-batch+json", body, events)
}

// benchHTTPPublish32 POSTs body as contentType over 32 connections at
// once, perRequest messages a request; b.N counts messages.
func benchHTTPPublish32(b *testing.B, contentType string, body []byte, perRequest int) {
	const conns = 32
	e := newEnv(b)
	e.register("bench", []string{"p:bench.http32"}, nil)
	url := "http://" + e.http + "/v1/publish/bench.http32"
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}
	b.Cleanup(hc.CloseIdleConnections)
	b.SetParallelism((conns + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.ReportAllocs()
	var requests atomic.Int64
	requests.Store(int64((b.N + perRequest - 1) / perRequest))
	b.ResetTimer()
	report := brokertest.ReportCPU(b)
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			for requests.Add(-1) >= 0 {
				req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
				if err != nil {
					b.Error(err)
					return
				}
				req.Header.Set("Content-Type", contentType)
				req.Header.Set("Msgmesh-App", "bench")
				resp, err := hc.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				answer, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Errorf("publish: %s %s", resp.Status, answer)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	report()
}
