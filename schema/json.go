package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// decodeJSON parses a JSON body into generic values (numbers kept as
// json.Number, so that longs and decimals keep every digit). Anything that
// is not exactly one JSON value is a *verr.
func decodeJSON(body []byte) (any, *verr) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		var syn *json.SyntaxError
		switch {
		case errors.As(err, &syn):
			return nil, fail("malformed JSON near byte offset %d: %s", syn.Offset, strings.TrimPrefix(err.Error(), "json: "))
		case errors.Is(err, io.EOF):
			return nil, fail("empty body; expected a JSON value")
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, fail("malformed JSON: the body ends before the value does")
		}
		return nil, fail("malformed JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fail("unexpected data after the JSON value, at byte offset %d", dec.InputOffset())
	}
	return v, nil
}

// jsonEncoder checks a generic JSON value against a compiled schema and
// appends its Avro binary encoding to buf.
//
// JSON mapping (docs/schemas.md): records are objects (a missing field
// takes its default; an unknown field is an error); maps are objects;
// arrays are arrays; enums are symbol strings; bytes and fixed are strings
// whose code points 0-255 are the bytes (Avro's JSON encoding); a union
// value is either the plain value (the first branch that accepts it wins)
// or Avro's {"<branch name>": value}. Logical types take their natural
// JSON forms too: decimal as a number or a numeric string, date as
// "2006-01-02", timestamps as RFC 3339 strings, times as "15:04:05.000",
// besides the underlying number.
//
// Union resolution may encode a value more than once (a branch that fails
// deep down is undone and the next one tried); with nested unions whose
// branches both take objects that could cost exponential time, so every
// value encoded spends a step from steps, and running out is an error.
type jsonEncoder struct {
	buf       []byte
	depth     int
	maxDepth  int
	zeroLimit int64
	zeroLeft  int64
	steps     int
}

// jsonSteps is the step budget of a body of n bytes: many times what any
// document needs (one step per JSON value, and a document of n bytes has
// fewer than n values), so that only pathological union retries run out.
func jsonSteps(n int) int { return 16*n + 1024 }

func (e *jsonEncoder) enter() *verr {
	e.depth++
	if e.depth > e.maxDepth {
		return tooDeep(e.maxDepth)
	}
	return nil
}

func (e *jsonEncoder) value(n *node, v any) *verr {
	e.steps--
	if e.steps < 0 {
		err := fail("gave up resolving unions: the document needs too many attempts (nested unions whose branches accept the same values)")
		err.limit = true
		return err
	}
	switch n.kind {
	case kNull:
		if v != nil {
			return expected("null", v)
		}
		return nil
	case kBoolean:
		b, ok := v.(bool)
		if !ok {
			return expected("a boolean", v)
		}
		if b {
			e.buf = append(e.buf, 1)
		} else {
			e.buf = append(e.buf, 0)
		}
		return nil
	case kInt, kLong:
		x, err := e.integer(n, v)
		if err != nil {
			return err
		}
		e.buf = appendLong(e.buf, x)
		return nil
	case kFloat, kDouble:
		return e.float(n, v)
	case kString:
		s, ok := v.(string)
		if !ok {
			return expected("a string", v)
		}
		if n.logical == lUUID && !isUUID(s) {
			return fail("%s is not a UUID (8-4-4-4-12 hex digits)", strconv.Quote(truncate(s, 64)))
		}
		e.buf = appendLong(e.buf, int64(len(s)))
		e.buf = append(e.buf, s...)
		return nil
	case kBytes, kFixed:
		if n.logical == lDecimal {
			return e.decimal(n, v)
		}
		s, ok := v.(string)
		if !ok {
			return expected("a string of code points 0-255 (Avro's JSON form of "+n.name+")", v)
		}
		l := utf8.RuneCountInString(s)
		if n.kind == kFixed {
			if l != n.size {
				return fail("expected %d bytes for fixed %s, got a string of %d", n.size, n.name, l)
			}
		} else {
			e.buf = appendLong(e.buf, int64(l))
		}
		for i, r := range s {
			if r > 255 {
				return fail("character %q at offset %d is not a byte: in Avro's JSON form of %s every character is one byte (U+0000 to U+00FF)", r, i, n.name)
			}
			e.buf = append(e.buf, byte(r))
		}
		return nil
	case kEnum:
		s, ok := v.(string)
		if !ok {
			return expected("a symbol of enum "+n.name+" ("+symbolList(n.symbols)+")", v)
		}
		i, ok := n.symbolIdx[s]
		if !ok {
			return fail("%s is not a symbol of enum %s; allowed: %s", strconv.Quote(truncate(s, 64)), n.name, symbolList(n.symbols))
		}
		e.buf = appendLong(e.buf, int64(i))
		return nil
	case kRecord:
		obj, ok := v.(map[string]any)
		if !ok {
			return expected("an object (record "+n.name+")", v)
		}
		if err := e.enter(); err != nil {
			return err
		}
		present := 0
		for i := range n.fields {
			f := &n.fields[i]
			fv, ok := obj[f.name]
			if !ok {
				if !f.hasDefault {
					return fail("required field missing (%s, no default)", f.node.name).field(f.name)
				}
				e.buf = append(e.buf, f.def...)
				continue
			}
			present++
			if err := e.value(f.node, fv); err != nil {
				return err.field(f.name)
			}
		}
		if present != len(obj) {
			return e.unknownFields(n, obj)
		}
		e.depth--
		return nil
	case kArray:
		arr, ok := v.([]any)
		if !ok {
			return expected("an array ("+n.name+")", v)
		}
		if err := e.enter(); err != nil {
			return err
		}
		if n.items.minSize == 0 {
			e.zeroLeft -= int64(len(arr))
			if e.zeroLeft < 0 {
				return tooManyZeroSize(fail("%d items of a type that takes no bytes; the limit is %d per message", len(arr), e.zeroLimit))
			}
		}
		if len(arr) > 0 {
			e.buf = appendLong(e.buf, int64(len(arr)))
			for i, item := range arr {
				if err := e.value(n.items, item); err != nil {
					return err.index(i)
				}
			}
		}
		e.buf = append(e.buf, 0)
		e.depth--
		return nil
	case kMap:
		obj, ok := v.(map[string]any)
		if !ok {
			return expected("an object ("+n.name+")", v)
		}
		if err := e.enter(); err != nil {
			return err
		}
		if len(obj) > 0 {
			e.buf = appendLong(e.buf, int64(len(obj)))
			// Sorted, so that one JSON value always gives the same bytes.
			for _, k := range sortedKeys(obj) {
				e.buf = appendLong(e.buf, int64(len(k)))
				e.buf = append(e.buf, k...)
				if err := e.value(n.items, obj[k]); err != nil {
					return err.key(k)
				}
			}
		}
		e.buf = append(e.buf, 0)
		e.depth--
		return nil
	case kUnion:
		if err := e.enter(); err != nil {
			return err
		}
		if err := e.union(n, v); err != nil {
			return err
		}
		e.depth--
		return nil
	}
	return fail("unsupported type %s", n.name)
}

func (e *jsonEncoder) unknownFields(n *node, obj map[string]any) *verr {
	var unknown []string
	for k := range obj {
		if _, ok := n.fieldIdx[k]; !ok {
			unknown = append(unknown, k)
		}
	}
	slices.Sort(unknown)
	names := make([]string, len(n.fields))
	for i, f := range n.fields {
		names[i] = f.name
	}
	if len(unknown) == 1 {
		return fail("unknown field; record %s has fields %s", n.name, strings.Join(names, ", ")).field(unknown[0])
	}
	for i, k := range unknown {
		unknown[i] = strconv.Quote(k)
	}
	return fail("unknown fields %s; record %s has fields %s", strings.Join(unknown, ", "), n.name, strings.Join(names, ", "))
}

// union picks a branch for v. Avro's JSON form {"<branch>": value} is
// tried first; then every branch whose type can take v's JSON kind, in
// schema order. The first that accepts v wins; if none does, the error
// lists every branch and why it refused.
func (e *jsonEncoder) union(n *node, v any) *verr {
	mark, depth := len(e.buf), e.depth
	type attempt struct {
		branch int
		err    *verr
	}
	var tried []attempt
	try := func(i int, v any) *verr {
		e.buf = appendLong(e.buf[:mark], int64(i))
		err := e.value(n.branches[i], v)
		if err != nil {
			e.buf, e.depth = e.buf[:mark], depth
		}
		return err
	}
	if obj, ok := v.(map[string]any); ok && len(obj) == 1 {
		for k, inner := range obj {
			for i, keys := range n.jsonKeys {
				if slices.Contains(keys, k) {
					err := try(i, inner)
					if err == nil || err.limit {
						return err
					}
					tried = append(tried, attempt{i, err.key(k)})
				}
			}
		}
	}
	for i, b := range n.branches {
		if !acceptsKind(b, v) {
			continue
		}
		err := try(i, v)
		if err == nil || err.limit {
			return err
		}
		tried = append(tried, attempt{i, err})
	}
	if len(tried) == 1 && len(tried[0].err.segs) > 0 {
		// The only branch that could take this kind of value refused it
		// deeper down: its path and reason say most.
		t := tried[0]
		if strings.Contains(t.err.reason, "(union ") {
			return t.err
		}
		t.err.reason += fmt.Sprintf(" (union %s: only branch %s takes %s)", n.name, n.branches[t.branch].name, jsonKind(v))
		return t.err
	}
	var why []string
	for i, b := range n.branches {
		found := false
		for _, a := range tried {
			if a.branch == i {
				why = append(why, b.name+": "+a.err.String())
				found = true
			}
		}
		if !found {
			why = append(why, b.name+": does not take "+jsonKind(v))
		}
	}
	return fail("no branch of union %s accepts %s; tried %s", n.name, jsonKind(v), strings.Join(why, "; "))
}

// acceptsKind says whether a branch could take a JSON value of v's kind at
// all, so that union resolution tries only those.
func acceptsKind(n *node, v any) bool {
	switch v := v.(type) {
	case nil:
		return n.kind == kNull
	case bool:
		return n.kind == kBoolean
	case json.Number:
		switch n.kind {
		case kInt, kLong, kFloat, kDouble:
			return true
		case kBytes, kFixed:
			return n.logical == lDecimal
		}
	case string:
		switch n.kind {
		case kString, kBytes, kFixed, kEnum:
			return true
		case kFloat, kDouble:
			return v == "NaN" || v == "Infinity" || v == "-Infinity"
		case kInt, kLong:
			return n.logical != lNone
		}
	case []any:
		return n.kind == kArray
	case map[string]any:
		return n.kind == kRecord || n.kind == kMap
	}
	return false
}

func (e *jsonEncoder) integer(n *node, v any) (int64, *verr) {
	bits := 64
	if n.kind == kInt {
		bits = 32
	}
	switch x := v.(type) {
	case json.Number:
		i, err := strconv.ParseInt(string(x), 10, bits)
		if err == nil {
			return i, checkTime(n, i)
		}
		if errors.Is(err, strconv.ErrRange) {
			return 0, fail("%s does not fit in %s (%d bits)", x, n.name, bits)
		}
		// 1e3 or 2.0: accept an exact integer written another way.
		f, ferr := strconv.ParseFloat(string(x), 64)
		if ferr == nil && f == math.Trunc(f) && math.Abs(f) <= 1<<53 {
			i := int64(f)
			if bits == 32 && (i < math.MinInt32 || i > math.MaxInt32) {
				return 0, fail("%s does not fit in %s (%d bits)", x, n.name, bits)
			}
			return i, checkTime(n, i)
		}
		return 0, fail("expected an integer (%s), got %s", n.name, x)
	case string:
		if n.logical != lNone {
			return parseTimeString(n, x)
		}
	}
	return 0, expected("an integer ("+n.name+")", v)
}

func checkTime(n *node, v int64) *verr {
	switch n.logical {
	case lTimeMillis:
		if v < 0 || v >= 86_400_000 {
			return fail("time-millis %d is not a time of day (0 to 86399999 ms)", v)
		}
	case lTimeMicros:
		if v < 0 || v >= 86_400_000_000 {
			return fail("time-micros %d is not a time of day (0 to 86399999999 µs)", v)
		}
	}
	return nil
}

// parseTimeString converts the string forms of date, time and timestamp
// logical types.
func parseTimeString(n *node, s string) (int64, *verr) {
	q := quoted(s)
	switch n.logical {
	case lDate:
		t, err := time.Parse(time.DateOnly, s)
		if err != nil {
			return 0, fail("date %s is not a date like 2006-01-02 (or a number of days since 1970-01-01)", q)
		}
		days := t.Unix() / 86400
		if days < math.MinInt32 || days > math.MaxInt32 {
			return 0, fail("date %s is out of range", q)
		}
		return days, nil
	case lTimeMillis, lTimeMicros:
		t, err := time.Parse("15:04:05.999999999", s)
		if err != nil {
			return 0, fail("%s %s is not a time of day like 15:04:05.000", n.name, q)
		}
		d := t.Sub(time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC))
		if n.logical == lTimeMillis {
			if d%time.Millisecond != 0 {
				return 0, fail("%s %s has more than millisecond precision", n.name, q)
			}
			return d.Milliseconds(), nil
		}
		if d%time.Microsecond != 0 {
			return 0, fail("%s %s has more than microsecond precision", n.name, q)
		}
		return d.Microseconds(), nil
	case lTimestampMillis, lTimestampMicros, lLocalTimestampMillis, lLocalTimestampMicros:
		local := n.logical == lLocalTimestampMillis || n.logical == lLocalTimestampMicros
		var t time.Time
		var err error
		if local {
			t, err = time.Parse("2006-01-02T15:04:05.999999999", s)
		} else {
			t, err = time.Parse(time.RFC3339Nano, s)
		}
		if err != nil {
			form := "an RFC 3339 time like 2006-01-02T15:04:05.000Z"
			if local {
				form = "a local time like 2006-01-02T15:04:05.000 (no zone)"
			}
			return 0, fail("%s %s is not %s (or a number)", n.name, q, form)
		}
		if y := t.Year(); y < 1 || y > 9999 {
			return 0, fail("%s %s is out of range", n.name, q)
		}
		millis := n.logical == lTimestampMillis || n.logical == lLocalTimestampMillis
		if millis {
			if t.Nanosecond()%int(time.Millisecond) != 0 {
				return 0, fail("%s %s has more than millisecond precision", n.name, q)
			}
			return t.UnixMilli(), nil
		}
		if t.Nanosecond()%int(time.Microsecond) != 0 {
			return 0, fail("%s %s has more than microsecond precision", n.name, q)
		}
		return t.UnixMicro(), nil
	}
	return 0, expected("an integer ("+n.name+")", s)
}

func (e *jsonEncoder) float(n *node, v any) *verr {
	bits := 64
	if n.kind == kFloat {
		bits = 32
	}
	var f float64
	switch x := v.(type) {
	case json.Number:
		var err error
		f, err = strconv.ParseFloat(string(x), bits)
		if err != nil {
			return fail("%s does not fit in a %s", x, n.name)
		}
	case string:
		switch x {
		case "NaN":
			f = math.NaN()
		case "Infinity":
			f = math.Inf(1)
		case "-Infinity":
			f = math.Inf(-1)
		default:
			return fail("expected a number (%s), got the string %s (only \"NaN\", \"Infinity\" and \"-Infinity\" are accepted as strings)", n.name, strconv.Quote(truncate(x, 64)))
		}
	default:
		return expected("a number ("+n.name+")", v)
	}
	if bits == 32 {
		e.buf = appendFloat(e.buf, float32(f))
	} else {
		e.buf = appendDouble(e.buf, f)
	}
	return nil
}

// decimal encodes a decimal given as a JSON number or a numeric string:
// its unscaled value, as big-endian two's complement (minimal for bytes,
// sign-extended to the size for fixed). More fractional digits than the
// scale, or more digits than the precision, is an error: nothing is
// rounded.
func (e *jsonEncoder) decimal(n *node, v any) *verr {
	var text string
	switch x := v.(type) {
	case json.Number:
		text = string(x)
	case string:
		text = x
	default:
		return expected("a number or a numeric string ("+n.name+")", v)
	}
	q := quoted(text)
	neg, digits, exp, ok := splitDecimal(text)
	if !ok {
		return fail("%s is not a decimal number", q)
	}
	// value = digits × 10^exp; unscaled = value × 10^scale.
	shift := exp + int64(n.scale)
	for shift < 0 && len(digits) > 0 && digits[len(digits)-1] == '0' {
		digits = digits[:len(digits)-1]
		shift++
	}
	if len(digits) == 0 {
		shift = 0
	}
	if shift < 0 {
		return fail("%s has more decimal places than %s allows (scale %d); round it first", q, n.name, n.scale)
	}
	if int64(len(digits))+shift > int64(n.precision) {
		return fail("%s has more digits than %s allows (precision %d, scale %d)", q, n.name, n.precision, n.scale)
	}
	var b []byte
	var scratch [8]byte
	negative := neg && len(digits) > 0
	if int64(len(digits))+shift <= 18 {
		// Fits in an int64: no big.Int, no allocation.
		var u int64
		for i := 0; i < len(digits); i++ {
			u = u*10 + int64(digits[i]-'0')
		}
		for range shift {
			u *= 10
		}
		if negative {
			u = -u
		}
		b = twosComplement64(scratch[:0], u)
	} else {
		unscaled := new(big.Int)
		unscaled.SetString(digits+strings.Repeat("0", int(shift)), 10)
		if negative {
			unscaled.Neg(unscaled)
		}
		b = twosComplement(unscaled)
	}
	if n.kind == kFixed {
		if len(b) > n.size {
			return fail("%s does not fit in fixed %s (%d bytes)", q, n.name, n.size)
		}
		pad := byte(0)
		if negative {
			pad = 0xff
		}
		for range n.size - len(b) {
			e.buf = append(e.buf, pad)
		}
		e.buf = append(e.buf, b...)
		return nil
	}
	e.buf = appendLong(e.buf, int64(len(b)))
	e.buf = append(e.buf, b...)
	return nil
}

// twosComplement64 appends the shortest big-endian two's complement form
// of v to b.
func twosComplement64(b []byte, v int64) []byte {
	n := 8
	for n > 1 {
		// The top byte is redundant if it is only sign extension of the
		// next byte's top bit.
		top := byte(v >> (8 * (n - 1)))
		next := byte(v >> (8 * (n - 2)))
		if (top == 0 && next&0x80 == 0) || (top == 0xff && next&0x80 != 0) {
			n--
			continue
		}
		break
	}
	for i := n - 1; i >= 0; i-- {
		b = append(b, byte(v>>(8*i)))
	}
	return b
}

// quoted formats a value from the message in an error, quoted and cut to
// 64 bytes; only when the error is made.
type quoted string

func (q quoted) String() string { return strconv.Quote(truncate(string(q), 64)) }

// splitDecimal splits "-12.340e2" into its sign, its significant digits
// without leading zeros ("12340") and the power of ten they are scaled by
// (-3+2 = -1).
func splitDecimal(s string) (neg bool, digits string, exp int64, ok bool) {
	if s != "" && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		s = s[1:]
	}
	mant, expPart, hasExp := strings.Cut(strings.ToLower(s), "e")
	intPart, frac, _ := strings.Cut(mant, ".")
	if intPart == "" && frac == "" || !allDigits(intPart) || !allDigits(frac) {
		return false, "", 0, false
	}
	if hasExp {
		x, err := strconv.ParseInt(expPart, 10, 32)
		if err != nil {
			return false, "", 0, false
		}
		exp = x
	}
	exp -= int64(len(frac))
	digits = strings.TrimLeft(intPart+frac, "0")
	return neg, digits, exp, true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// twosComplement returns the shortest big-endian two's complement form of x.
func twosComplement(x *big.Int) []byte {
	switch x.Sign() {
	case 0:
		return []byte{0}
	case 1:
		b := x.Bytes()
		if b[0]&0x80 != 0 {
			b = append([]byte{0}, b...)
		}
		return b
	}
	// x < 0: n bytes hold it when -x ≤ 2^(8n-1).
	abs := new(big.Int).Neg(x)
	m := new(big.Int).Sub(abs, big.NewInt(1))
	n := m.BitLen()/8 + 1
	v := new(big.Int).Lsh(big.NewInt(1), uint(8*n))
	v.Sub(v, abs)
	b := v.Bytes()
	for len(b) < n {
		b = append([]byte{0xff}, b...)
	}
	return b
}

func expected(what string, v any) *verr {
	return fail("expected %s, got %s", what, jsonKind(v))
}

// jsonKind describes a JSON value in messages, with the value itself when
// it is short.
func jsonKind(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "the boolean " + strconv.FormatBool(x)
	case json.Number:
		return "the number " + truncate(string(x), 32)
	case string:
		return "the string " + strconv.Quote(truncate(x, 32))
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
