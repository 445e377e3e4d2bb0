package kafkabroker

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// kafka-go's Reader hands out a null key and an empty key alike (nil), and
// a null value (a tombstone) and an empty value alike: its record decoder
// reads both as no bytes. The protocol-level Fetch of kafka.Client keeps
// the difference (a nil Key or Value is null). So a delivery whose key or
// value came out empty is looked up again with one Fetch from its offset;
// every record that Fetch returns is remembered, so the messages after it
// (the rest of its batch) cost nothing more. Messages with a key and a
// value are never looked up: for topics whose messages all have both, this
// costs nothing; for keyless topics about one extra fetch per batch.

// nullness says which of a record's key and value are null.
type nullness struct{ keyNull, valueNull bool }

// nullProbe tells null from empty for one consumer's deliveries. Its lock
// is a leaf, held only around its map, never across the Fetch.
type nullProbe struct {
	client *kafka.Client
	topic  string

	mu    sync.Mutex
	known map[int]map[int64]nullness // partition → offset → nullness
}

// probeTimeout bounds one Fetch of the probe.
const probeTimeout = 5 * time.Second

// probeMaxBytes bounds what one Fetch of the probe reads.
const probeMaxBytes = 1 << 20

// resolve sets d's EmptyKey and NullBody from the record at its offset,
// when its key or value came out empty. A lookup that fails leaves them
// false (no key, an empty value: what the Reader says) and returns the
// error, for the caller to log.
func (p *nullProbe) resolve(ctx context.Context, d *delivery) error {
	if d.msg.Key != "" && len(d.msg.Body) > 0 {
		return nil
	}
	n, err := p.lookup(ctx, d.partition, d.offset)
	if err != nil {
		return err
	}
	d.msg.EmptyKey = d.msg.Key == "" && !n.keyNull
	d.msg.NullBody = len(d.msg.Body) == 0 && n.valueNull
	if d.msg.NullBody {
		d.msg.Body = nil
	}
	return nil
}

func (p *nullProbe) lookup(ctx context.Context, partition int, offset int64) (nullness, error) {
	p.mu.Lock()
	if n, ok := p.known[partition][offset]; ok {
		delete(p.known[partition], offset)
		p.mu.Unlock()
		return n, nil
	}
	p.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	res, err := p.client.Fetch(ctx, &kafka.FetchRequest{Topic: p.topic, Partition: partition, Offset: offset,
		MinBytes: 1, MaxBytes: probeMaxBytes, MaxWait: 100 * time.Millisecond})
	if err == nil && res.Error != nil {
		err = res.Error
	}
	if err != nil {
		return nullness{}, err
	}
	found := map[int64]nullness{}
	for res.Records != nil {
		rec, err := res.Records.ReadRecord()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nullness{}, err
		}
		if rec.Offset >= offset {
			found[rec.Offset] = nullness{keyNull: rec.Key == nil, valueNull: rec.Value == nil}
		}
		if rec.Key != nil {
			_ = rec.Key.Close()
		}
		if rec.Value != nil {
			_ = rec.Value.Close()
		}
	}
	n, ok := found[offset]
	if !ok {
		return nullness{}, errors.New("the fetch did not return the record")
	}
	delete(found, offset)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.known == nil {
		p.known = map[int]map[int64]nullness{}
	}
	// Keep only what lies ahead of this offset: anything older was
	// consumed already (or the partition moved elsewhere).
	m := map[int64]nullness{}
	for o, v := range p.known[partition] {
		if o > offset {
			m[o] = v
		}
	}
	for o, v := range found {
		if o > offset && len(m) < maxKnownNulls {
			m[o] = v
		}
	}
	p.known[partition] = m
	return n, nil
}

// maxKnownNulls bounds what the probe remembers per partition.
const maxKnownNulls = 4096
