package schema

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"
)

// binWalker checks one Avro binary datum against a compiled schema. It
// reads the bytes in place and allocates nothing unless it finds a
// problem: the path of a problem is collected as the error travels back up
// (pathSeg, in reverse), not kept while walking.
//
// Bounds, so that hostile input costs at most linear time and no memory:
// every length and block count is checked against the bytes left (a block
// of n items of a type that takes at least m bytes needs n*m bytes);
// items of a type that takes no bytes at all (null, empty records) are
// limited to zeroLimit per datum; nesting is limited to maxDepth.
type binWalker struct {
	buf       []byte
	pos       int
	depth     int
	maxDepth  int
	zeroLimit int64 // items of zero-size types allowed per datum
	zeroLeft  int64
}

func (w *binWalker) truncated(what string) *verr {
	return fail("truncated: the body ends at byte %d while reading %s", len(w.buf), what)
}

// long reads a zigzag varint of at most 10 bytes.
func (w *binWalker) long(what string) (int64, *verr) {
	var v uint64
	start := w.pos
	for i := uint(0); i < 10; i++ {
		if w.pos >= len(w.buf) {
			return 0, w.truncated(what)
		}
		b := w.buf[w.pos]
		w.pos++
		if i == 9 && b > 1 {
			return 0, fail("%s at byte %d is not a valid long: the varint overflows 64 bits", what, start)
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			return int64(v>>1) ^ -int64(v&1), nil
		}
	}
	return 0, fail("%s at byte %d is not a valid long: the varint is longer than 10 bytes", what, start)
}

// int reads a zigzag varint of at most 5 bytes that fits in 32 bits.
func (w *binWalker) int(what string) (int32, *verr) {
	var v uint64
	start := w.pos
	for i := uint(0); i < 5; i++ {
		if w.pos >= len(w.buf) {
			return 0, w.truncated(what)
		}
		b := w.buf[w.pos]
		w.pos++
		v |= uint64(b&0x7f) << (7 * i)
		if b&0x80 == 0 {
			if v > math.MaxUint32 {
				return 0, fail("%s at byte %d does not fit in an int (32 bits)", what, start)
			}
			u := uint32(v)
			return int32(u>>1) ^ -int32(u&1), nil
		}
	}
	return 0, fail("%s at byte %d is not a valid int: the varint is longer than 5 bytes", what, start)
}

// What length reads; constants, so that the happy path builds no strings.
const (
	lenBytes = iota
	lenString
	lenMapKey
)

var lengthNames = [...][2]string{
	lenBytes:  {"a bytes value", "the length of a bytes value"},
	lenString: {"a string", "the length of a string"},
	lenMapKey: {"a map key", "the length of a map key"},
}

// length reads a bytes or string length and checks the bytes are there.
func (w *binWalker) length(which int) (int, *verr) {
	what := lengthNames[which][0]
	start := w.pos
	n, e := w.long(lengthNames[which][1])
	if e != nil {
		return 0, e
	}
	if n < 0 {
		return 0, fail("%s at byte %d has a negative length %d", what, start, n)
	}
	if rest := len(w.buf) - w.pos; n > int64(rest) {
		return 0, fail("truncated: %s at byte %d says %d bytes, but only %d remain", what, start, n, rest)
	}
	return int(n), nil
}

func (w *binWalker) value(n *node) *verr {
	switch n.kind {
	case kNull:
		return nil
	case kBoolean:
		if w.pos >= len(w.buf) {
			return w.truncated("a boolean")
		}
		b := w.buf[w.pos]
		if b > 1 {
			return fail("expected a boolean, found byte 0x%02x at byte %d (a boolean is 0 or 1)", b, w.pos)
		}
		w.pos++
		return nil
	case kInt:
		start := w.pos
		v, e := w.int("an int")
		if e != nil {
			return e
		}
		if n.logical == lTimeMillis && (v < 0 || v >= 86_400_000) {
			return fail("time-millis %d at byte %d is not a time of day (0 to 86399999 ms)", v, start)
		}
		return nil
	case kLong:
		start := w.pos
		v, e := w.long("a long")
		if e != nil {
			return e
		}
		if n.logical == lTimeMicros && (v < 0 || v >= 86_400_000_000) {
			return fail("time-micros %d at byte %d is not a time of day (0 to 86399999999 µs)", v, start)
		}
		return nil
	case kFloat:
		return w.skip(4, "a float (4 bytes)")
	case kDouble:
		return w.skip(8, "a double (8 bytes)")
	case kBytes:
		start := w.pos
		l, e := w.length(lenBytes)
		if e != nil {
			return e
		}
		b := w.buf[w.pos : w.pos+l]
		w.pos += l
		if n.logical == lDecimal {
			return checkDecimal(b, n, start)
		}
		return nil
	case kString:
		start := w.pos
		l, e := w.length(lenString)
		if e != nil {
			return e
		}
		s := w.buf[w.pos : w.pos+l]
		w.pos += l
		if !utf8.Valid(s) {
			return fail("the string at byte %d is not valid UTF-8", start)
		}
		if n.logical == lUUID && !isUUID(s) {
			return fail("uuid %s at byte %d is not a UUID (8-4-4-4-12 hex digits)", strconv.Quote(truncate(string(s), 64)), start)
		}
		return nil
	case kFixed:
		start := w.pos
		if rest := len(w.buf) - w.pos; n.size > rest {
			return w.truncated("a fixed " + n.name + " (" + strconv.Itoa(n.size) + " bytes)")
		}
		w.pos += n.size
		if n.logical == lDecimal {
			return checkDecimal(w.buf[start:w.pos], n, start)
		}
		return nil
	case kEnum:
		start := w.pos
		i, e := w.int("an enum index")
		if e != nil {
			return e
		}
		if i < 0 || int(i) >= len(n.symbols) {
			return fail("enum index %d at byte %d is out of range: %s has %d symbols (%s)", i, start, n.name, len(n.symbols), symbolList(n.symbols))
		}
		return nil
	case kRecord:
		if e := w.enter(); e != nil {
			return e
		}
		for i := range n.fields {
			f := &n.fields[i]
			if e := w.value(f.node); e != nil {
				return e.field(f.name)
			}
		}
		w.depth--
		return nil
	case kUnion:
		if e := w.enter(); e != nil {
			return e
		}
		start := w.pos
		i, e := w.long("a union branch index")
		if e != nil {
			return e
		}
		if i < 0 || i >= int64(len(n.branches)) {
			return fail("union branch index %d at byte %d is out of range: the union %s has %d branches", i, start, n.name, len(n.branches))
		}
		if e := w.value(n.branches[i]); e != nil {
			if !e.limit && !strings.Contains(e.reason, "(union branch") {
				e.reason += fmt.Sprintf(" (union branch %d, %s, of %s)", i, n.branches[i].name, n.name)
			}
			return e
		}
		w.depth--
		return nil
	case kArray, kMap:
		if e := w.enter(); e != nil {
			return e
		}
		if e := w.blocks(n); e != nil {
			return e
		}
		w.depth--
		return nil
	}
	return fail("unsupported type %s", n.name)
}

func (w *binWalker) enter() *verr {
	w.depth++
	if w.depth > w.maxDepth {
		return tooDeep(w.maxDepth)
	}
	return nil
}

func tooDeep(limit int) *verr {
	e := fail("nested deeper than %d levels (records, arrays, maps and unions each count)", limit)
	e.limit = true
	return e
}

func tooManyZeroSize(e *verr) *verr {
	e.limit = true
	return e
}

func (w *binWalker) skip(n int, what string) *verr {
	if rest := len(w.buf) - w.pos; n > rest {
		return w.truncated(what)
	}
	w.pos += n
	return nil
}

// blocks walks the blocks of an array or map.
func (w *binWalker) blocks(n *node) *verr {
	what, countWhat, sizeWhat := "array", "an array block count", "an array block size"
	itemSize := n.items.minSize
	if n.kind == kMap {
		what, countWhat, sizeWhat = "map", "a map block count", "a map block size"
		itemSize++ // the key's length
	}
	index := 0
	for {
		start := w.pos
		count, e := w.long(countWhat)
		if e != nil {
			return e
		}
		if count == 0 {
			return nil
		}
		blockEnd := -1
		if count < 0 {
			if count == math.MinInt64 {
				return fail("%s block count at byte %d is out of range", what, start)
			}
			count = -count
			sizeAt := w.pos
			size, e := w.long(sizeWhat)
			if e != nil {
				return e
			}
			if rest := len(w.buf) - w.pos; size < 0 || size > int64(rest) {
				return fail("%s block size %d at byte %d does not fit the %d bytes left", what, size, sizeAt, rest)
			}
			blockEnd = w.pos + int(size)
		}
		rest := int64(len(w.buf) - w.pos)
		if itemSize > 0 {
			if count > rest/itemSize {
				return fail("truncated: the %s block at byte %d has %d items, but the %d bytes left hold at most %d", what, start, count, rest, rest/itemSize)
			}
		} else {
			w.zeroLeft -= count
			if w.zeroLeft < 0 {
				return tooManyZeroSize(fail("the %s block at byte %d has %d items of a type that takes no bytes; the limit is %d per message", what, start, count, w.zeroLimit))
			}
		}
		for range count {
			if n.kind == kMap {
				keyAt := w.pos
				l, e := w.length(lenMapKey)
				if e != nil {
					return e.index(index)
				}
				k := w.buf[w.pos : w.pos+l]
				w.pos += l
				if !utf8.Valid(k) {
					return fail("the map key at byte %d is not valid UTF-8", keyAt)
				}
				if e := w.value(n.items); e != nil {
					return e.key(string(k))
				}
			} else if e := w.value(n.items); e != nil {
				return e.index(index)
			}
			index++
		}
		if blockEnd >= 0 && w.pos != blockEnd {
			return fail("the %s block at byte %d says its items take %d bytes, but they take %d", what, start, blockEnd-start, w.pos-start)
		}
	}
}

// checkDecimal checks that a decimal's unscaled value (big-endian two's
// complement) has at most n.precision digits.
func checkDecimal(b []byte, n *node, at int) *verr {
	if len(b) == 0 {
		return fail("decimal at byte %d has no bytes; even zero takes one", at)
	}
	digits := 0
	if len(b) <= 8 {
		v := int64(int8(b[0]))
		for _, c := range b[1:] {
			v = v<<8 | int64(c)
		}
		u := uint64(v)
		if v < 0 {
			u = uint64(-v)
		}
		if n.precision < len(pow10) && u < pow10[n.precision] {
			return nil // the common case: no digit counting
		}
		for ; u > 0; u /= 10 {
			digits++
		}
	} else {
		x := new(big.Int).SetBytes(b)
		if b[0]&0x80 != 0 {
			x.Sub(x, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
		}
		if x.Sign() != 0 {
			digits = len(x.Abs(x).String())
		}
	}
	if digits > n.precision {
		return fail("decimal at byte %d has %d digits; %s allows %d (precision)", at, digits, n.name, n.precision)
	}
	return nil
}

// pow10[i] is 10^i.
var pow10 = [...]uint64{1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19}

func isUUID[T string | []byte](s T) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}

func symbolList(symbols []string) string {
	const most = 20
	if len(symbols) > most {
		return strings.Join(symbols[:most], ", ") + fmt.Sprintf(", … %d more", len(symbols)-most)
	}
	return strings.Join(symbols, ", ")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func appendLong(b []byte, v int64) []byte {
	return binary.AppendUvarint(b, uint64(v<<1)^uint64(v>>63))
}

func appendFloat(b []byte, f float32) []byte {
	return binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
}

func appendDouble(b []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
}
