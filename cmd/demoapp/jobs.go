package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// jobSpec is a publish job: Count messages (0: until stopped) with ids
// Prefix-000000, Prefix-000001, ... to Topic, at most Rate per second (0:
// as fast as Workers allow).
type jobSpec struct {
	Topic   string  `json:"topic"`
	Prefix  string  `json:"prefix"`
	Count   int     `json:"count"`
	Rate    float64 `json:"rate"`
	Workers int     `json:"workers"`
	Size    int     `json:"size"` // body bytes (at least the id)
	// Colour is the messages' colour (Msgmesh-Colour, docs/routing.md);
	// "" for none.
	Colour string `json:"colour,omitempty"`
}

// attemptTimeout bounds one publish attempt. A publish that fails is
// retried (same id) until the broker acknowledges it or the job stops; so
// an id may be stored twice (at least once), never reported acked without
// the broker's ack.
const attemptTimeout = 15 * time.Second

// job is one running or finished publish job.
type job struct {
	ID   int     `json:"id"`
	Spec jobSpec `json:"spec"`

	next    atomic.Int64 // next sequence number to publish
	stopped atomic.Bool
	ctx     context.Context // ends when the job is stopped; only the rate limiter waits on it
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	done    chan struct{}

	mu        sync.Mutex
	acked     []string
	attempts  int
	failures  int // failed attempts
	codes     map[string]int
	abandoned []string // ids given up (the job stopped while they were failing)
	lastErr   string
}

// jobStatus is what GET /v1/jobs/{id} answers.
type jobStatus struct {
	ID        int            `json:"id"`
	Spec      jobSpec        `json:"spec"`
	Done      bool           `json:"done"`
	Acked     int            `json:"acked"`
	AckedIDs  []string       `json:"acked_ids,omitempty"`
	Attempts  int            `json:"attempts"`
	Failures  int            `json:"failures"`
	Codes     map[string]int `json:"error_codes"`
	Abandoned []string       `json:"abandoned"`
	LastError string         `json:"last_error,omitempty"`
}

type jobs struct {
	mu   sync.Mutex
	byID map[int]*job
	seq  int
}

func (js *jobs) init() { js.byID = map[int]*job{} }

func (js *jobs) start(cl *client.Client, log *slog.Logger, spec jobSpec) *job {
	js.mu.Lock()
	js.seq++
	j := &job{ID: js.seq, Spec: spec, done: make(chan struct{}), codes: map[string]int{}}
	j.ctx, j.cancel = context.WithCancel(context.Background())
	js.byID[j.ID] = j
	js.mu.Unlock()
	var lim *rate.Limiter
	if spec.Rate > 0 {
		lim = rate.NewLimiter(rate.Limit(spec.Rate), max(1, int(spec.Rate/20)))
	}
	for range spec.Workers {
		j.wg.Add(1)
		go func() { defer j.wg.Done(); j.work(cl, lim) }()
	}
	go func() { j.wg.Wait(); j.cancel(); close(j.done) }()
	log.Info("publish job started", "job", j.ID, "topic", spec.Topic, "prefix", spec.Prefix, "count", spec.Count, "rate", spec.Rate)
	return j
}

func (js *jobs) get(id int) *job {
	js.mu.Lock()
	defer js.mu.Unlock()
	return js.byID[id]
}

func (js *jobs) stopAll() {
	js.mu.Lock()
	all := make([]*job, 0, len(js.byID))
	for _, j := range js.byID {
		all = append(all, j)
	}
	js.mu.Unlock()
	for _, j := range all {
		j.stop()
	}
}

// stop ends the job gracefully: no new id starts, a failing id is not
// retried, attempts in flight finish (each within attemptTimeout).
func (j *job) stop() {
	j.stopped.Store(true)
	j.cancel()
	<-j.done
}

func (j *job) work(cl *client.Client, lim *rate.Limiter) {
	for !j.stopped.Load() {
		seq := j.next.Add(1) - 1
		if j.Spec.Count > 0 && seq >= int64(j.Spec.Count) {
			return
		}
		if lim != nil && lim.Wait(j.ctx) != nil {
			return // stopped
		}
		id := fmt.Sprintf("%s-%06d", j.Spec.Prefix, seq)
		body := []byte(id)
		if pad := j.Spec.Size - len(body); pad > 0 {
			body = append(body, strings.Repeat(".", pad)...)
		}
		m := &client.Message{Topic: j.Spec.Topic, Key: id, Body: body, Colour: j.Spec.Colour, Headers: []mesh.HeaderField{{Key: HeaderID, Value: id}}}
		for {
			ctx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
			_, err := cl.Publish(ctx, m)
			cancel()
			j.mu.Lock()
			j.attempts++
			if err == nil {
				j.acked = append(j.acked, id)
				j.mu.Unlock()
				break
			}
			j.failures++
			j.codes[codeName(err)]++
			j.lastErr = err.Error()
			if j.stopped.Load() || errors.Is(err, client.ErrClosed) {
				j.abandoned = append(j.abandoned, id)
				j.mu.Unlock()
				return
			}
			j.mu.Unlock()
			time.Sleep(100 * time.Millisecond)
		}
	}
}

func (j *job) status(withIDs bool) jobStatus {
	j.mu.Lock()
	defer j.mu.Unlock()
	st := jobStatus{ID: j.ID, Spec: j.Spec, Acked: len(j.acked), Attempts: j.attempts, Failures: j.failures,
		Codes: map[string]int{}, Abandoned: append([]string{}, j.abandoned...), LastError: j.lastErr}
	for k, v := range j.codes {
		st.Codes[k] = v
	}
	select {
	case <-j.done:
		st.Done = true
	default:
	}
	if withIDs {
		st.AckedIDs = append([]string{}, j.acked...)
		sort.Strings(st.AckedIDs)
	}
	return st
}

// codeName names an error for counting: the wire code, or what the SDK
// said when the sidecar gave none.
func codeName(err error) string {
	if c := client.CodeOf(err); c != 0 {
		return c.String()
	}
	switch {
	case errors.Is(err, client.ErrConnectionLost):
		return "CONNECTION_LOST"
	case errors.Is(err, context.DeadlineExceeded):
		return "DEADLINE"
	case errors.Is(err, client.ErrClosed):
		return "CLOSED"
	}
	return "OTHER"
}
