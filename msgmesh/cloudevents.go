package msgmesh

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/observe/msgtrace"
	"golang.org/x/net/http/httpguts"
)

// CloudEvents 1.0 (docs/http-api.md, "CloudEvents"): POST /v1/publish
// takes an event in the HTTP binding's binary and structured content modes,
// and push subscriptions (push.go) POST deliveries as events. An event's
// attributes travel in message headers named as the Kafka protocol binding
// names them, so that an event keeps its identity from publisher to push
// receiver, and Kafka clients that speak the binding read them too:
//
//	ce_<attribute>  every attribute but datacontenttype: ce_id, ce_source,
//	                ce_specversion, ce_type, ce_subject, ce_time,
//	                ce_dataschema and extensions (ce_<name>)
//	content-type    datacontenttype
//
// The message body is the event's data. A delivered message that is not
// an event (no ce_ headers) is pushed as one with defaults (eventOf).

// CloudEvents constants.
const (
	ceSpecVersion       = "1.0"
	ceHeaderPrefix      = "ce_" // message header names of attributes
	ceHTTPPrefix        = "Ce-" // HTTP header names of attributes, binary mode (canonical form)
	ceContentTypeHeader = "content-type"
	ceStructuredType    = "application/cloudevents+json"
	ceBatchType         = "application/cloudevents-batch+json"
	// ceDefaultType is the type of a pushed message that carries none.
	ceDefaultType = "msgmesh.message"
	// ceMaxAttrName bounds an attribute name (the spec's recommendation).
	ceMaxAttrName = 20
)

// Push headers besides the event's: what the mesh protocol tells a
// consumer about a delivery that CloudEvents has no attribute for.
const (
	pushAttemptHeader    = "Msgmesh-Attempt" // redelivered + 1
	pushGroupHeader      = "Msgmesh-Group"
	pushTopicHeader      = "Msgmesh-Topic"
	pushMessageIDHeader  = "Msgmesh-Message-Id"
	pushDeliveryIDHeader = "Msgmesh-Delivery-Id"
	// pushBinaryHeaderPrefix carries, in base64, a message header whose
	// value an HTTP header cannot hold (control characters).
	pushBinaryHeaderPrefix = "Msgmesh-Binary-Header-"
	// pushOmittedHeader counts message headers whose names an HTTP
	// header cannot carry.
	pushOmittedHeader = "Msgmesh-Headers-Omitted"
)

// event is a CloudEvent on its way to a push receiver.
type event struct {
	attrs       map[string]string // every attribute but datacontenttype
	contentType string            // datacontenttype; "" for none
	data        []byte
	hasData     bool
	rest        []mesh.HeaderField // message headers that are not attributes
	key         *string            // the message key; nil for none
}

// eventOf makes the event a delivery is pushed as: the attributes its
// ce_ headers carry, and for the required ones it lacks, defaults from the
// message: id its broker id, source msgmesh://<cluster>/<topic>, type
// ceDefaultType, time its broker timestamp, subject its key.
func eventOf(cluster string, m mesh.Message) *event {
	ev := &event{attrs: map[string]string{}, data: m.Body, hasData: !m.Flags.NullBody()}
	for _, h := range m.Headers {
		name := strings.ToLower(h.Key)
		if attr, ok := strings.CutPrefix(name, ceHeaderPrefix); ok && validAttrName(attr) && attr != "datacontenttype" && attr != "data" && attr != "data_base64" {
			if _, dup := ev.attrs[attr]; !dup {
				ev.attrs[attr] = h.Value
				continue
			}
		}
		if name == ceContentTypeHeader && ev.contentType == "" {
			ev.contentType = h.Value
			continue
		}
		ev.rest = append(ev.rest, h)
	}
	if ev.contentType == "" {
		for _, h := range ev.rest {
			if strings.EqualFold(h.Key, broker.HeaderContentType) {
				ev.contentType = h.Value
			}
		}
	}
	ev.attrs["specversion"] = ceSpecVersion
	if ev.attrs["id"] == "" {
		ev.attrs["id"] = cmpOr(m.MessageID, fmt.Sprintf("%s-%d-%d", m.Topic, m.Timestamp, m.DeliveryID))
	}
	if ev.attrs["source"] == "" {
		ev.attrs["source"] = "msgmesh://" + cluster + "/" + m.Topic
	}
	if ev.attrs["type"] == "" {
		ev.attrs["type"] = ceDefaultType
	}
	if ev.attrs["time"] == "" && m.Timestamp != 0 {
		ev.attrs["time"] = time.Unix(0, m.Timestamp).UTC().Format(time.RFC3339Nano)
	}
	if m.Key != "" || m.Flags.EmptyKey() {
		k := m.Key
		ev.key = &k
		if ev.attrs["subject"] == "" && k != "" && utf8.ValidString(k) {
			ev.attrs["subject"] = k
		}
	}
	return ev
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// binaryHeaders sets the attributes as ce- headers and datacontenttype as
// Content-Type (application/octet-stream when the message has none).
func (ev *event) binaryHeaders(h http.Header) {
	for _, a := range slices.Sorted(maps.Keys(ev.attrs)) {
		h.Set(ceHTTPPrefix+a, percentEncode(ev.attrs[a]))
	}
	h.Set("Content-Type", cmpOr(ev.contentType, "application/octet-stream"))
}

// structured is the event as an application/cloudevents+json document:
// data as JSON when the content type is JSON and the body is valid JSON,
// else data_base64.
func (ev *event) structured() ([]byte, error) {
	doc := make(map[string]any, len(ev.attrs)+2)
	for a, v := range ev.attrs {
		doc[a] = v
	}
	if ev.contentType != "" {
		doc["datacontenttype"] = ev.contentType
	}
	if ev.hasData && len(ev.data) > 0 {
		if isJSONType(cmpOr(ev.contentType, "application/json")) && json.Valid(ev.data) && len(ev.data) > 0 {
			doc["data"] = json.RawMessage(ev.data)
		} else {
			doc["data_base64"] = base64.StdEncoding.EncodeToString(ev.data)
		}
	}
	return json.Marshal(doc)
}

// transportHeaders sets what the delivery carries besides the event: the
// trace context, the message's other headers, its key and tag, and the
// delivery's group, topic, ids and attempt.
func (ev *event) transportHeaders(h http.Header, d Delivery) {
	m := d.Message()
	omitted := 0
	for _, f := range ev.rest {
		switch name := strings.ToLower(f.Key); {
		case name == msgtrace.TraceParent || name == "tracestate":
			h.Set(name, f.Value)
			continue
		case strings.EqualFold(f.Key, broker.HeaderTag):
			h[httpTagHeader] = append(h[httpTagHeader], f.Value)
			continue
		}
		switch {
		case !httpguts.ValidHeaderFieldName(f.Key):
			omitted++
		case httpguts.ValidHeaderFieldValue(f.Value):
			// Set as the message spells it, case included: an HTTP/1.1
			// receiver sees that spelling (names still compare without case).
			h[httpHeaderPrefix+f.Key] = append(h[httpHeaderPrefix+f.Key], f.Value)
		default:
			h[pushBinaryHeaderPrefix+f.Key] = append(h[pushBinaryHeaderPrefix+f.Key], base64.StdEncoding.EncodeToString([]byte(f.Value)))
		}
	}
	if omitted > 0 {
		h.Set(pushOmittedHeader, strconv.Itoa(omitted))
	}
	if ev.key != nil {
		if httpguts.ValidHeaderFieldValue(*ev.key) {
			h[httpKeyHeader] = []string{*ev.key}
		} else {
			h.Set(pushBinaryHeaderPrefix+"Msgmesh-Key", base64.StdEncoding.EncodeToString([]byte(*ev.key)))
		}
	}
	if !ev.hasData {
		h.Set(httpNullBodyHeader, "true")
	}
	h.Set(pushAttemptHeader, strconv.FormatUint(uint64(m.Redelivered)+1, 10))
	h.Set(pushGroupHeader, m.Group)
	h.Set(pushTopicHeader, m.Topic)
	if m.MessageID != "" {
		h.Set(pushMessageIDHeader, m.MessageID)
	}
	h.Set(pushDeliveryIDHeader, d.ID())
}

// percentEncode encodes a ce- header value as the CloudEvents HTTP binding
// says: space, '"', '%' and everything outside printable ASCII as %XX of
// its UTF-8 bytes.
func percentEncode(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c > 0x20 && c < 0x7f && c != '"' && c != '%' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// percentDecode undoes percentEncode; a malformed escape is an error.
func percentDecode(v string) (string, error) {
	if !strings.Contains(v, "%") {
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			b.WriteByte(v[i])
			continue
		}
		if i+2 >= len(v) {
			return "", fmt.Errorf("malformed percent-encoding %q", v[i:])
		}
		n, err := strconv.ParseUint(v[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("malformed percent-encoding %q", v[i:i+3])
		}
		b.WriteByte(byte(n))
		i += 2
	}
	if !utf8.ValidString(b.String()) {
		return "", fmt.Errorf("percent-decoded value is not UTF-8")
	}
	return b.String(), nil
}

// validAttrName: 1 to ceMaxAttrName lower-case letters and digits.
func validAttrName(a string) bool {
	if a == "" || len(a) > ceMaxAttrName {
		return false
	}
	for i := 0; i < len(a); i++ {
		if c := a[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// isJSONType: application/json or any +json type.
func isJSONType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// publishedEvent is a CloudEvent taken from an HTTP publish.
type publishedEvent struct {
	attrs       map[string]string // without datacontenttype
	contentType string
	data        []byte
	hasData     bool
}

// cloudEventOf reads a CloudEvent from an HTTP publish: structured mode
// (Content-Type application/cloudevents+json, body the event), binary mode
// (a ce-specversion header; attributes in ce- headers, body the data), or
// nil when the request is not an event. Any ce- header without
// ce-specversion is refused (400): it would be published as a plain
// message by mistake. A batch is not an event: its caller (publishBatch)
// takes it apart first.
// mt is the request's media type (mediaType).
func cloudEventOf(r *http.Request, mt string, body []byte) (*publishedEvent, error) {
	if mt == ceStructuredType {
		return structuredEvent(body)
	}
	var ev *publishedEvent
	for name, vs := range r.Header {
		attr, ok := strings.CutPrefix(name, ceHTTPPrefix)
		if !ok {
			continue
		}
		attr = strings.ToLower(attr)
		if ev == nil {
			ev = &publishedEvent{attrs: map[string]string{}, data: body, hasData: true}
		}
		if !validAttrName(attr) || attr == "datacontenttype" || attr == "data" || attr == "data_base64" {
			return nil, fmt.Errorf("%w: header %s: %q is not a CloudEvents attribute name (1 to %d lower-case letters and digits; datacontenttype is Content-Type)", ErrInvalid, name, attr, ceMaxAttrName)
		}
		if len(vs) != 1 {
			return nil, fmt.Errorf("%w: header %s sent %d times", ErrInvalid, name, len(vs))
		}
		v, err := percentDecode(vs[0])
		if err != nil {
			return nil, fmt.Errorf("%w: header %s: %w", ErrInvalid, name, err)
		}
		ev.attrs[attr] = v
	}
	if ev == nil {
		return nil, nil
	}
	ev.contentType = r.Header.Get("Content-Type")
	return ev, ev.check()
}

// structuredEnvelopeSlack is the room a structured event's body may take
// beyond its base64 data (attributes, JSON punctuation).
const structuredEnvelopeSlack = 64 << 10

// structuredLimit bounds a structured event's body, given the limit on a
// message's body: room for its data in base64 and the envelope.
func structuredLimit(maxMessage int64) int64 {
	return maxMessage*4/3 + structuredEnvelopeSlack
}

// mediaType is the media type of the request's Content-Type, lower case
// and without parameters; "" when there is none or it does not parse.
// Parsed once per publish: the parse allocates unless the type is bare
// (parseMediaType).
func mediaType(r *http.Request) string {
	mt, err := parseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return ""
	}
	return mt
}

// structuredEvent parses an application/cloudevents+json body.
func structuredEvent(body []byte) (*publishedEvent, error) {
	var doc map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&doc); err != nil || doc == nil {
		return nil, fmt.Errorf("%w: %s body is not a JSON object: %v", ErrInvalid, ceStructuredType, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: %s body: data after the JSON object", ErrInvalid, ceStructuredType)
	}
	return eventOfDoc(doc)
}

// eventOfDoc reads a structured event from its JSON object's members.
func eventOfDoc(doc map[string]json.RawMessage) (*publishedEvent, error) {
	ev := &publishedEvent{attrs: make(map[string]string, len(doc))}
	var data, data64 json.RawMessage
	for k, raw := range doc {
		switch {
		case k == "data":
			data = raw
			continue
		case k == "data_base64":
			data64 = raw
			continue
		case !validAttrName(k):
			return nil, fmt.Errorf("%w: %s: %q is not a CloudEvents attribute name (1 to %d lower-case letters and digits)", ErrInvalid, ceStructuredType, k, ceMaxAttrName)
		}
		v, null, err := attrValue(raw)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%w: %s: attribute %s: %w", ErrInvalid, ceStructuredType, k, err)
		case null:
			continue // a null attribute is an absent one
		case k == "datacontenttype":
			ev.contentType = v
		default:
			ev.attrs[k] = v
		}
	}
	switch {
	case data != nil && data64 != nil:
		return nil, fmt.Errorf("%w: %s: both data and data_base64", ErrInvalid, ceStructuredType)
	case data64 != nil && string(data64) != "null":
		// Base64 needs no JSON escape: the usual value is decoded from
		// the raw bytes, without a string in between.
		s, ok := plainJSONString(data64)
		if !ok {
			var v string
			if err := json.Unmarshal(data64, &v); err != nil {
				return nil, fmt.Errorf("%w: %s: data_base64 is not a string", ErrInvalid, ceStructuredType)
			}
			s = []byte(v)
		}
		b := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
		n, err := base64.StdEncoding.Decode(b, s)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: data_base64: %w", ErrInvalid, ceStructuredType, err)
		}
		ev.data, ev.hasData = b[:n], true
	case data != nil && string(data) != "null":
		ev.hasData = true
		var s string
		if ev.contentType != "" && !isJSONType(ev.contentType) && json.Unmarshal(data, &s) == nil {
			ev.data = []byte(s) // text data of a non-JSON type is the string itself
		} else {
			ev.data = []byte(data)
			if ev.contentType == "" {
				ev.contentType = "application/json" // the format's default for data
			}
		}
	}
	return ev, ev.check()
}

// attrValue is a structured attribute's value as a string: a JSON string,
// number or boolean; null says the attribute is absent.
func attrValue(raw json.RawMessage) (string, bool, error) {
	if s, ok := plainJSONString(raw); ok {
		return string(s), false, nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", false, err
	}
	switch x := v.(type) {
	case nil:
		return "", true, nil
	case string:
		return x, false, nil
	case bool:
		return strconv.FormatBool(x), false, nil
	case float64:
		return strings.TrimSpace(string(raw)), false, nil
	}
	return "", false, fmt.Errorf("a JSON %T; attributes are strings, numbers or booleans", v)
}

// plainJSONString is the content of raw, a JSON value, when it is a
// string whose bytes are its value: printable ASCII without escapes, as
// encoding/json would decode it. Anything else (escapes, other UTF-8,
// not a string) is false, for encoding/json to decode.
func plainJSONString(raw []byte) ([]byte, bool) {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return nil, false
	}
	s := raw[1 : len(raw)-1]
	for _, c := range s {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return nil, false
		}
	}
	return s, true
}

// check applies the spec's rules on required and typed attributes.
func (ev *publishedEvent) check() error {
	if v := ev.attrs["specversion"]; v != ceSpecVersion {
		return fmt.Errorf("%w: CloudEvents specversion %q; this sidecar takes %q (binary mode: header ce-specversion)", ErrInvalid, v, ceSpecVersion)
	}
	for _, a := range []string{"id", "source", "type"} {
		if ev.attrs[a] == "" {
			return fmt.Errorf("%w: CloudEvent without its required attribute %s (binary mode: header ce-%s)", ErrInvalid, a, a)
		}
	}
	if t, ok := ev.attrs["time"]; ok {
		if _, err := time.Parse(time.RFC3339Nano, t); err != nil {
			return fmt.Errorf("%w: CloudEvents time %q is not an RFC 3339 timestamp", ErrInvalid, t)
		}
	}
	if s, ok := ev.attrs["subject"]; ok && s == "" {
		return fmt.Errorf("%w: CloudEvents subject is empty; leave it out instead", ErrInvalid)
	}
	return nil
}

// message makes m, whose request headers (requestHeaders) are set, the
// event's message: its data the body, its attributes headers before the
// request's (a Msgmesh-Header- of an attribute's name is a duplicate the
// header rule refuses), its partitionkey the key unless the request gave
// one. It returns how the body is encoded (datacontenttype).
func (ev *publishedEvent) message(m *broker.Message) string {
	m.Body = ev.data
	m.Headers = append(ev.headers(), m.Headers...)
	if pk, ok := ev.attrs["partitionkey"]; ok && m.Key == "" && !m.EmptyKey {
		m.Key = pk // the partitioning extension, as Kafka's binding maps it
	}
	return ev.contentType
}

// headers are the message headers that carry the event's attributes.
func (ev *publishedEvent) headers() []broker.Header {
	hs := make([]broker.Header, 0, len(ev.attrs)+1)
	for _, a := range slices.Sorted(maps.Keys(ev.attrs)) {
		hs = append(hs, broker.Header{Key: ceHeaderPrefix + a, Value: ev.attrs[a]})
	}
	if ev.contentType != "" {
		hs = append(hs, broker.Header{Key: ceContentTypeHeader, Value: ev.contentType})
	}
	return hs
}
