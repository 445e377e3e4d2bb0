package msgmesh

import "encoding/json"

// scanBatch reads a CloudEvents batch of the usual shape without
// encoding/json, which validates the whole body and then decodes it in a
// second pass, copying every member's value: about a third of the
// sidecar's CPU per event of a batch of 1 KiB events. The usual shape is
// a JSON array of objects whose member names and values are strings of
// printable ASCII without escapes, but for "data", which may be any JSON
// value (json.Valid checks it). The members' values alias body.
//
// It answers false for anything else, valid or not, and the caller leaves
// the body to encoding/json; what it answers true for, encoding/json
// decodes into the same []map[string]json.RawMessage (a fuzz test holds
// it to that).
func scanBatch(body []byte) ([]map[string]json.RawMessage, bool) {
	s := batchScanner{b: body}
	s.space()
	if !s.eat('[') {
		return nil, false
	}
	docs := []map[string]json.RawMessage{}
	s.space()
	if !s.eat(']') {
		for {
			s.space()
			doc, ok := s.object()
			if !ok {
				return nil, false
			}
			docs = append(docs, doc)
			s.space()
			if s.eat(']') {
				break
			}
			if !s.eat(',') {
				return nil, false
			}
		}
	}
	s.space()
	return docs, s.i == len(s.b)
}

// batchScanner is scanBatch's position in the body.
type batchScanner struct {
	b []byte
	i int
}

func (s *batchScanner) space() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\n' || s.b[s.i] == '\r') {
		s.i++
	}
}

func (s *batchScanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// object reads one event's members.
func (s *batchScanner) object() (map[string]json.RawMessage, bool) {
	if !s.eat('{') {
		return nil, false
	}
	doc := make(map[string]json.RawMessage, 8)
	s.space()
	if s.eat('}') {
		return doc, true
	}
	for {
		s.space()
		name, ok := s.plainString()
		if !ok {
			return nil, false
		}
		s.space()
		if !s.eat(':') {
			return nil, false
		}
		s.space()
		var v []byte
		if name = name[1 : len(name)-1]; string(name) == "data" {
			v, ok = s.anyValue()
		} else {
			v, ok = s.plainString()
		}
		if !ok {
			return nil, false
		}
		doc[string(name)] = v
		s.space()
		if s.eat('}') {
			return doc, true
		}
		if !s.eat(',') {
			return nil, false
		}
	}
}

// plainString reads a string of printable ASCII without escapes, its
// quotes included.
func (s *batchScanner) plainString() ([]byte, bool) {
	start := s.i
	if !s.eat('"') {
		return nil, false
	}
	for s.i < len(s.b) {
		switch c := s.b[s.i]; {
		case c == '"':
			s.i++
			return s.b[start:s.i], true
		case c < 0x20 || c >= 0x7f || c == '\\':
			return nil, false
		}
		s.i++
	}
	return nil, false
}

// anyValue reads a JSON value: its extent is found here (strings skipped,
// brackets counted), and json.Valid decides whether it is one.
func (s *batchScanner) anyValue() ([]byte, bool) {
	start, depth := s.i, 0
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case '"':
			if !s.skipString() {
				return nil, false
			}
			if depth == 0 {
				return s.valid(start)
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 { // the end of the event: a scalar ends here
				return s.valid(start)
			}
			depth--
			if depth == 0 {
				s.i++
				return s.valid(start)
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return s.valid(start)
			}
		}
		s.i++
	}
	return nil, false
}

// skipString moves past a string at s.i, escapes and all.
func (s *batchScanner) skipString() bool {
	for s.i++; s.i < len(s.b); s.i++ {
		switch s.b[s.i] {
		case '\\':
			s.i++
		case '"':
			s.i++
			return true
		}
	}
	return false
}

func (s *batchScanner) valid(start int) ([]byte, bool) {
	v := s.b[start:s.i]
	return v, len(v) > 0 && json.Valid(v)
}
