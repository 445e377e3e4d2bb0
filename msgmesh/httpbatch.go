package msgmesh

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"

	"github.com/msgmesh/msgmesh/broker"
)

// A CloudEvents batch (docs/http-api.md, "Batches"): POST /v1/publish/{topic}
// with Content-Type application/cloudevents-batch+json and a JSON array of
// structured events publishes each event as one message, as a structured
// publish of it alone would, and answers once the broker answered every
// one. A request answered one message at a time costs the sidecar one
// request parse and one response write per message; a batch shares both
// among its events, and its events are in flight to the broker together.
//
// A batch is checked whole before anything is sent: an event that does not
// parse, or that its publish would refuse before the broker (registration,
// size limits, the header rule), refuses the batch and nothing is
// published. What the broker (or the schema stage, a rate limit, the
// publish deadline) refuses fails that event alone; the answer has one result per event, in order. Events
// with the same partitionkey reach the broker in the batch's order, as a
// mesh connection's publishes with the same key do (lanePicker).

const (
	// maxBatchEvents bounds the events of one batch.
	maxBatchEvents = 1000
	// minBatchBody is the least a batch's body may take, whatever the
	// message size limit.
	minBatchBody = 16 << 20
)

// batchLimit bounds a batch's body, given the limit on a message's body:
// 16 MiB, or one structured event's limit if that is more.
func batchLimit(maxMessage int64) int64 {
	return max(minBatchBody, structuredLimit(maxMessage))
}

// batchAnswer answers a batch: one result per event, in the batch's order.
// When some event was not published it also has the errorBody fields of
// the first such event's error, under that error's status.
type batchAnswer struct {
	Error   string `json:"error,omitempty"`
	Message string `json:"message,omitempty"`
	Results []any  `json:"results"` // publishResponse or errorBody
}

// publishBatch publishes the events of a batch request, whose body was
// read within batchLimit, as app id (nil: none named).
func (sc *Sidecar) publishBatch(w http.ResponseWriter, r *http.Request, id *identity, body []byte) {
	msgs, types, err := batchMessages(r, body)
	if err != nil {
		writeError(w, err)
		return
	}
	brokers := make([]broker.Broker, len(msgs))
	for i := range msgs {
		if brokers[i], err = sc.checkPublish(id, &msgs[i]); err != nil {
			writeError(w, fmt.Errorf("event %d of the batch (nothing published): %w", i, err))
			return
		}
	}
	// The events go out on lanes as a mesh connection's publishes do
	// (lanePicker): those with the same key one after the other in the
	// batch's order, the rest side by side.
	lanes := make([][]int, min(sc.cfg.PublishLanes, len(msgs)))
	pick := newLanePicker()
	for i := range msgs {
		l := pick.pick(msgs[i].Key, len(lanes))
		lanes[l] = append(lanes[l], i)
	}
	results := make([]any, len(msgs))
	errs := make([]error, len(msgs))
	var wg sync.WaitGroup
	for _, lane := range lanes {
		wg.Go(func() {
			for _, i := range lane {
				// Each event has its own publish deadline, from the
				// shared ones a mesh connection's publishes take; an
				// event not yet sent when the client went away is not
				// sent (the client cannot learn the outcome, and would
				// send it again).
				err := r.Context().Err()
				var res broker.PublishResult
				if err == nil {
					res, err = sc.publishWithin(sc.deadlines.get(), brokers[i], &msgs[i], types[i])
				}
				if err != nil {
					errs[i] = err
					_, results[i] = httpError(err)
					continue
				}
				results[i] = publishResponse{Stream: res.Stream, Partition: res.Partition, Offset: res.Offset, MessageID: res.MessageID}
			}
		})
	}
	wg.Wait()
	answer := batchAnswer{Results: results}
	status := http.StatusOK
	failed := 0
	for i, err := range errs {
		if err == nil {
			continue
		}
		if failed == 0 {
			var first errorBody
			status, first = httpError(err)
			answer.Error = first.Error
			answer.Message = fmt.Sprintf("event %d of the batch: %s", i, first.Message)
		}
		failed++
	}
	if failed > 0 {
		answer.Message = fmt.Sprintf("%d of %d events not published (results say which); first: %s", failed, len(msgs), answer.Message)
	}
	writeJSON(w, status, answer)
}

// batchMessages takes a batch request apart: the message of each event
// and how its body is encoded. The request's message headers, tag and
// colour go to every event; a key or null body for the whole request is
// refused (an event's key is its partitionkey).
func batchMessages(r *http.Request, body []byte) ([]broker.Message, []string, error) {
	if _, ok := r.Header[httpKeyHeader]; ok || r.URL.Query().Has("key") {
		return nil, nil, fmt.Errorf("%w: a %s request has no key of its own; give each event its partitionkey", ErrInvalid, ceBatchType)
	}
	if _, ok := r.Header[httpNullBodyHeader]; ok {
		return nil, nil, fmt.Errorf("%w: %s: a batch's events carry their data; send an event without data instead", ErrInvalid, httpNullBodyHeader)
	}
	// Each event's members stay raw until eventOfDoc reads them. The
	// usual batch is read by scanBatch; anything else by encoding/json.
	docs, ok := scanBatch(body)
	if !ok {
		if err := json.Unmarshal(body, &docs); err != nil || docs == nil {
			return nil, nil, fmt.Errorf("%w: %s body is not a JSON array of event objects: %v", ErrInvalid, ceBatchType, err)
		}
	}
	if len(docs) > maxBatchEvents {
		return nil, nil, fmt.Errorf("%w: %d events in one %s body; at most %d", ErrInvalid, len(docs), ceBatchType, maxBatchEvents)
	}
	common, err := requestHeaders(r.Header)
	if err != nil {
		return nil, nil, err
	}
	topic := r.PathValue("topic")
	msgs := make([]broker.Message, len(docs))
	types := make([]string, len(docs))
	for i, doc := range docs {
		if doc == nil {
			return nil, nil, fmt.Errorf("%w: event %d of the batch is null (nothing published)", ErrInvalid, i)
		}
		ev, err := eventOfDoc(doc)
		if err != nil {
			return nil, nil, fmt.Errorf("event %d of the batch (nothing published): %w", i, err)
		}
		msgs[i] = broker.Message{Topic: topic, Headers: common}
		types[i] = ev.message(&msgs[i])
	}
	return msgs, types, nil
}
