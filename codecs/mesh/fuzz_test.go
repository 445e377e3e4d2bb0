package mesh

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// The seed corpus of both fuzz targets is the files under testdata/fuzz,
// generated from real frames by TestFuzzSeedCorpus, which fails when they
// are missing or stale. After changing the encoding, rewrite them with
//
//	go test ./codecs/mesh -run TestFuzzSeedCorpus -update-corpus
//
// Files whose name does not start with "seed-" are crashers the fuzzer
// found; keep them as regression seeds.
var updateCorpus = flag.Bool("update-corpus", false, "rewrite the generated seed files under testdata/fuzz")

// rawPayload is an already-encoded payload.
type rawPayload []byte

func (r rawPayload) AppendTo(b []byte) []byte { return append(b, r...) }

// fuzzReaderMax is the frame limit of FuzzReader: small, so that inputs
// claiming big frames are cheap to refuse or to read.
const fuzzReaderMax = 4 << 10

// decodeFrameSeeds returns single frames (and near-frames) for
// FuzzDecodeFrame, by file name.
func decodeFrameSeeds(tb testing.TB) map[string][]byte {
	tb.Helper()
	seeds := map[string][]byte{}
	for _, s := range sampleFrames() {
		seeds["seed-"+s.name] = encodeFrame(tb, s.kind, s.flags, s.id, s.payload)
	}
	many := &PullResult{Messages: manyMessages(5)}
	seeds["seed-pull_result_5"] = encodeFrame(tb, KindPullResult, FlagResponse, 9, many)
	seeds["seed-publish_empty"] = encodeFrame(tb, KindPublish, 0, 10, &Publish{})
	seeds["seed-declare_empty"] = encodeFrame(tb, KindDeclare, 0, 11, &Declare{})
	// A HELLO whose app length is a non-minimal varint (0x81 0x00 = 1):
	// valid input that re-encodes shorter.
	seeds["seed-hello_long_varint"] = append(header(12+2+1+1+4, Version, KindHello, 0, 0, 12),
		0x81, 0x00, 'a', 0x00, 0, 0, 0, 1)
	// HELLO with its optional trailing secret, and with an explicitly
	// empty one (valid; re-encodes without the field).
	seeds["seed-hello_secret"] = encodeFrame(tb, KindHello, 0, 19, &Hello{App: "checkout", Client: "pod-1", MaxInflight: 64, Secret: "0123456789abcdef0123"})
	seeds["seed-hello_empty_secret"] = append(header(12+2+1+4+1, Version, KindHello, 0, 0, 20), 0x01, 'a', 0x00, 0, 0, 0, 1, 0x00)
	// The optional trailing fields of message flags: HELLO's features
	// after an empty secret, PUBLISH and DELIVER flags, PULL_RESULT's
	// flag bytes.
	seeds["seed-hello_features"] = encodeFrame(tb, KindHello, 0, 21, &Hello{App: "a", Features: FeatureMessageFlags})
	seeds["seed-publish_tombstone"] = encodeFrame(tb, KindPublish, 0, 22, &Publish{Topic: "t", Flags: FlagNullBody | FlagEmptyKey})
	seeds["seed-deliver_null_body"] = encodeFrame(tb, KindDeliver, 0, 23, &Message{DeliveryID: 23, Group: "g", Topic: "t", Key: "k", Flags: FlagNullBody})
	flagged := manyMessages(3)
	flagged[1].Key, flagged[1].Body, flagged[1].Flags = "", nil, FlagNullBody|FlagEmptyKey
	seeds["seed-pull_result_flags"] = encodeFrame(tb, KindPullResult, FlagResponse, 24, &PullResult{Messages: flagged})
	// Headers the codec refuses, one per check.
	seeds["seed-bad_version"] = header(12, 2, KindOK, FlagResponse, 0, 13)
	seeds["seed-bad_kind"] = header(12, Version, kindMax+1, 0, 0, 14)
	seeds["seed-bad_flags"] = header(12, Version, KindOK, 0x02, 0, 15)
	seeds["seed-bad_reserved"] = header(12, Version, KindOK, 0, 1, 16)
	seeds["seed-short_length"] = header(3, Version, KindOK, 0, 0, 17)
	seeds["seed-too_large"] = header(2<<30, Version, KindPublish, 0, 0, 18)
	// Too large and otherwise bad: refused for the bad field, not skipped.
	seeds["seed-too_large_bad_kind"] = header(2<<30, Version, 0, 0, 0, 19)
	seeds["seed-too_large_bad_version"] = header(2<<30, 3, KindPublish, 0, 0, 20)
	full := seeds["seed-deliver"]
	seeds["seed-deliver_cut"] = full[:len(full)-3]
	return seeds
}

// readerSeeds returns byte streams for FuzzReader, by file name.
func readerSeeds(tb testing.TB) map[string][]byte {
	tb.Helper()
	var all []byte
	for _, s := range sampleFrames() {
		all = append(all, encodeFrame(tb, s.kind, s.flags, s.id, s.payload)...)
	}
	hb := encodeFrame(tb, KindHeartbeat, 0, 1, nil)
	return map[string][]byte{
		"seed-empty":              {},
		"seed-all_kinds":          all,
		"seed-all_kinds_cut":      all[:len(all)-5],
		"seed-then_bad_version":   cat(hb, header(12, 7, KindOK, 0, 0, 2)),
		"seed-then_too_large":     cat(hb, header(fuzzReaderMax, Version, KindPublish, 0, 0, 3), make([]byte, 8)),
		"seed-at_limit":           encodeFrame(tb, KindPublish, 0, 4, &Publish{Topic: "t", Body: bytes.Repeat([]byte("a"), fuzzReaderMax-HeaderSize-6)}),
		"seed-header_only_cut":    hb[:HeaderSize-1],
		"seed-heartbeat_pair":     cat(hb, encodeFrame(tb, KindHeartbeat, FlagResponse, 1, nil)),
		"seed-malformed_payload":  cat(header(12+1, Version, KindNack, FlagResponse, 0, 5), []byte{0xff}, hb),
		"seed-unknown_flag_later": cat(hb, hb, header(12, Version, KindAck, 0x40, 0, 6)),
		// Oversized frames are skipped and the stream goes on.
		"seed-too_large_skipped": cat(hb, header(fuzzReaderMax+20-lengthSize, Version, KindPublish, 0, 0, 7), make([]byte, fuzzReaderMax+4), hb),
		"seed-too_large_twice":   cat(header(fuzzReaderMax, Version, KindDeliver, 0, 0, 8), make([]byte, fuzzReaderMax-12), header(3*fuzzReaderMax, Version, KindError, FlagResponse, 0, 9), make([]byte, 3*fuzzReaderMax-12), hb),
		"seed-too_large_cut":     cat(hb, header(2*fuzzReaderMax, Version, KindPublish, 0, 0, 10), make([]byte, 100)),
	}
}

func corpusFile(data []byte) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data)
}

// TestFuzzSeedCorpus keeps the committed seed files equal to what the
// encoder produces today (or rewrites them with -update-corpus).
func TestFuzzSeedCorpus(t *testing.T) {
	for target, seeds := range map[string]map[string][]byte{
		"FuzzDecodeFrame": decodeFrameSeeds(t),
		"FuzzReader":      readerSeeds(t),
	} {
		dir := filepath.Join("testdata", "fuzz", target)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, data := range seeds {
			path := filepath.Join(dir, name)
			want := corpusFile(data)
			if *updateCorpus {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("seed file missing (run with -update-corpus): %v", err)
				continue
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s is stale: run go test -run TestFuzzSeedCorpus -update-corpus", path)
			}
		}
	}
}

func FuzzDecodeFrame(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, n, err := DecodeFrame(data, 0)
		if err != nil {
			checkReadError(t, err)
			if n != 0 {
				t.Fatalf("DecodeFrame used %d bytes and failed: %v", n, err)
			}
			return
		}
		if n != HeaderSize+len(fr.Payload) || n > len(data) {
			t.Fatalf("DecodeFrame used %d bytes of %d for a payload of %d", n, len(data), len(fr.Payload))
		}
		if fr.Kind == 0 || fr.Kind > kindMax || fr.Flags&^flagsKnown != 0 {
			t.Fatalf("DecodeFrame accepted kind %d flags %#x", fr.Kind, fr.Flags)
		}
		// The header is canonical: encoding the frame again gives the bytes
		// it was decoded from.
		re, err := AppendFrame(nil, 0, fr.Kind, fr.Flags, fr.ID, rawPayload(fr.Payload))
		if err != nil || !bytes.Equal(re, data[:n]) {
			t.Fatalf("re-encoded frame %x, %v; want %x", re, err, data[:n])
		}

		p := newPayload(fr.Kind)
		if p == nil {
			return // ACK, HEARTBEAT, OK: empty payload, nothing to decode
		}
		if err := p.Decode(fr.Payload); err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) || !errors.Is(err, ErrMalformed) || pe.Kind != fr.Kind {
				t.Fatalf("%v payload: error %v (%T), want a *ProtocolError for that kind wrapping ErrMalformed", fr.Kind, err, err)
			}
			return
		}
		// Whatever decodes re-encodes to a value that decodes equal. The
		// input may use longer varints than needed, so the re-encoding may
		// be shorter, never longer, and it is a fixed point.
		enc := p.AppendTo(nil)
		if len(enc) > len(fr.Payload) {
			t.Fatalf("%v: re-encoding is %d bytes, the input %d", fr.Kind, len(enc), len(fr.Payload))
		}
		q := newPayload(fr.Kind)
		if err := q.Decode(enc); err != nil {
			t.Fatalf("%v: decoding the re-encoding %x of %x: %v", fr.Kind, enc, fr.Payload, err)
		}
		if !reflect.DeepEqual(p, q) {
			t.Fatalf("%v: round trip changed the value\nfirst:  %s\nsecond: %s", fr.Kind, short(p), short(q))
		}
		if again := q.AppendTo(nil); !bytes.Equal(again, enc) {
			t.Fatalf("%v: encoding is not a fixed point: %x then %x", fr.Kind, enc, again)
		}
	})
}

// checkReadError fails unless err is one of the errors the codec documents
// for a frame it cannot read.
func checkReadError(t *testing.T, err error) {
	t.Helper()
	var pe *ProtocolError
	var se *FrameSizeError
	switch {
	case err == io.ErrUnexpectedEOF:
	case errors.As(err, &se):
		if se.Size <= se.Max {
			t.Fatalf("FrameSizeError %+v for a frame within the limit", *se)
		}
	case errors.As(err, &pe):
		if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupportedVersion) {
			t.Fatalf("ProtocolError wraps %v", pe.Err)
		}
	default:
		t.Fatalf("undocumented error %v (%T)", err, err)
	}
}

func FuzzReader(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), fuzzReaderMax)
		rest := data // what DecodeFrame, reading the same bytes, has left
		for {
			fr, err := r.ReadFrame()
			dfr, n, derr := DecodeFrame(rest, fuzzReaderMax)
			if err != nil {
				switch {
				case err == io.EOF:
					if len(rest) != 0 {
						t.Fatalf("io.EOF with %d bytes unparsed", len(rest))
					}
				case err == io.ErrUnexpectedEOF:
					if len(rest) == 0 || derr != io.ErrUnexpectedEOF {
						t.Fatalf("ReadFrame: unexpected EOF with %d bytes left; DecodeFrame: %v", len(rest), derr)
					}
				default:
					checkReadError(t, err)
					// Both readers refuse the same header the same way.
					if derr == nil || derr.Error() != err.Error() || dfr.ID != fr.ID || dfr.Kind != fr.Kind || dfr.Flags != fr.Flags {
						t.Fatalf("ReadFrame: %+v %v; DecodeFrame: %+v %v", fr, err, dfr, derr)
					}
					var se *FrameSizeError
					if !errors.As(err, &se) {
						return // a bad header: the stream position is lost
					}
					// A frame too large is skipped; the stream goes on after it.
					if buf, skip := r.Buffered(), r.Skipping(); len(buf) > 0 && skip > 0 {
						t.Fatalf("Buffered %d bytes and Skipping %d at once", len(buf), skip)
					}
					if se.Size > len(rest) {
						if _, err := r.ReadFrame(); err != io.ErrUnexpectedEOF {
							t.Fatalf("stream ends inside a skipped frame: %v, want io.ErrUnexpectedEOF", err)
						}
						return
					}
					rest = rest[se.Size:]
					if buf := r.Buffered(); !bytes.HasPrefix(rest, buf) {
						t.Fatalf("Buffered %x after a refused frame is not the start of the bytes after it %x", buf, rest)
					}
					continue
				}
				return
			}
			if derr != nil {
				t.Fatalf("ReadFrame read %v #%d but DecodeFrame failed: %v", fr.Kind, fr.ID, derr)
			}
			if dfr.Kind != fr.Kind || dfr.Flags != fr.Flags || dfr.ID != fr.ID || !bytes.Equal(dfr.Payload, fr.Payload) {
				t.Fatalf("ReadFrame and DecodeFrame disagree: %+v vs %+v", fr, dfr)
			}
			if n != HeaderSize+len(fr.Payload) {
				t.Fatalf("DecodeFrame used %d bytes for a payload of %d", n, len(fr.Payload))
			}
			rest = rest[n:]
			if buf := r.Buffered(); !bytes.HasPrefix(rest, buf) {
				t.Fatalf("Buffered %x is not the start of the unparsed bytes %x", buf, rest)
			}
		}
	})
}
