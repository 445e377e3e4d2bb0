package schema

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	"github.com/hamba/avro/v2"
)

// A node is one type of a compiled schema: what the validators walk. It is
// built once per schema id from hamba/avro's parsed schema and never
// changes afterwards, so any number of goroutines may walk it. Named types
// are compiled once per schema, so a recursive schema is a graph with
// cycles.
type node struct {
	kind    kind
	logical logical
	// precision and scale of a decimal.
	precision, scale int
	// name is the full name of a named type, else how messages call the
	// type: "string", "long(timestamp-millis)", "array<string>", "[null, string]".
	name string
	// short is the name without namespace of a named type.
	short string

	fields   []field        // record
	fieldIdx map[string]int // record: field name → index

	symbols   []string       // enum
	symbolIdx map[string]int // enum: symbol → index

	items *node // array items, map values

	branches []*node // union
	// jsonKeys holds, per branch, the names a branch may have as the single
	// key of Avro's JSON union encoding ({"string": "x"}).
	jsonKeys [][]string

	size int // fixed

	// minSize is the fewest bytes a value of this type takes in Avro
	// binary. Array and map blocks use it to refuse a count their
	// remaining bytes cannot hold.
	minSize int64
}

type field struct {
	name       string
	node       *node
	hasDefault bool
	// def is the default value's Avro binary encoding, used when JSON
	// input leaves the field out.
	def []byte
}

type kind uint8

const (
	kNull kind = iota
	kBoolean
	kInt
	kLong
	kFloat
	kDouble
	kBytes
	kString
	kRecord
	kEnum
	kArray
	kMap
	kUnion
	kFixed
)

type logical uint8

const (
	lNone logical = iota
	lDecimal
	lUUID
	lDate
	lTimeMillis
	lTimeMicros
	lTimestampMillis
	lTimestampMicros
	lLocalTimestampMillis
	lLocalTimestampMicros
	lDuration
)

var logicals = map[avro.LogicalType]logical{
	avro.Decimal:              lDecimal,
	avro.UUID:                 lUUID,
	avro.Date:                 lDate,
	avro.TimeMillis:           lTimeMillis,
	avro.TimeMicros:           lTimeMicros,
	avro.TimestampMillis:      lTimestampMillis,
	avro.TimestampMicros:      lTimestampMicros,
	avro.LocalTimestampMillis: lLocalTimestampMillis,
	avro.LocalTimestampMicros: lLocalTimestampMicros,
	avro.Duration:             lDuration,
}

var primitiveKinds = map[avro.Type]kind{
	avro.Null: kNull, avro.Boolean: kBoolean, avro.Int: kInt, avro.Long: kLong,
	avro.Float: kFloat, avro.Double: kDouble, avro.Bytes: kBytes, avro.String: kString,
}

// compile builds the node graph of a parsed schema.
func compile(s avro.Schema) (*node, error) {
	c := compiler{named: map[string]*node{}}
	root, err := c.node(s)
	if err != nil {
		return nil, err
	}
	sizes := map[*node]bool{}
	minSize(root, sizes)
	for _, n := range c.records {
		for i := range n.fields {
			f := &n.fields[i]
			if !f.hasDefault {
				continue
			}
			def, err := encodeDefault(nil, f.node, c.defaults[f])
			if err != nil {
				return nil, fmt.Errorf("%w: default of field %s.%s: %v", ErrMalformedSchema, n.name, f.name, err)
			}
			f.def = def
		}
	}
	return root, nil
}

type compiler struct {
	named    map[string]*node
	records  []*node
	defaults map[*field]any
}

func (c *compiler) node(s avro.Schema) (*node, error) {
	s = deref(s)
	if ns, ok := s.(avro.NamedSchema); ok {
		if n, ok := c.named[ns.FullName()]; ok {
			return n, nil
		}
	}
	switch t := s.(type) {
	case *avro.NullSchema:
		return &node{kind: kNull, name: "null"}, nil
	case *avro.PrimitiveSchema:
		n := &node{kind: primitiveKinds[t.Type()], name: string(t.Type())}
		if l := t.Logical(); l != nil {
			n.logical = logicals[l.Type()]
			n.name += "(" + string(l.Type()) + ")"
			if d, ok := l.(*avro.DecimalLogicalSchema); ok {
				n.precision, n.scale = d.Precision(), d.Scale()
				n.name = fmt.Sprintf("bytes(decimal(%d,%d))", n.precision, n.scale)
			}
		}
		return n, nil
	case *avro.FixedSchema:
		n := &node{kind: kFixed, name: t.FullName(), short: t.Name(), size: t.Size()}
		c.named[t.FullName()] = n
		if l := t.Logical(); l != nil {
			n.logical = logicals[l.Type()]
			if d, ok := l.(*avro.DecimalLogicalSchema); ok {
				n.precision, n.scale = d.Precision(), d.Scale()
			}
		}
		return n, nil
	case *avro.EnumSchema:
		n := &node{kind: kEnum, name: t.FullName(), short: t.Name(), symbols: t.Symbols(), symbolIdx: map[string]int{}}
		for i, sym := range t.Symbols() {
			n.symbolIdx[sym] = i
		}
		c.named[t.FullName()] = n
		return n, nil
	case *avro.RecordSchema:
		n := &node{kind: kRecord, name: t.FullName(), short: t.Name(), fieldIdx: map[string]int{}}
		c.named[t.FullName()] = n
		c.records = append(c.records, n)
		n.fields = make([]field, len(t.Fields()))
		for i, f := range t.Fields() {
			fn, err := c.node(f.Type())
			if err != nil {
				return nil, err
			}
			n.fields[i] = field{name: f.Name(), node: fn, hasDefault: f.HasDefault()}
			n.fieldIdx[f.Name()] = i
			if f.HasDefault() {
				if c.defaults == nil {
					c.defaults = map[*field]any{}
				}
				c.defaults[&n.fields[i]] = f.Default()
			}
		}
		return n, nil
	case *avro.ArraySchema:
		items, err := c.node(t.Items())
		if err != nil {
			return nil, err
		}
		return &node{kind: kArray, name: "array<" + items.name + ">", items: items}, nil
	case *avro.MapSchema:
		values, err := c.node(t.Values())
		if err != nil {
			return nil, err
		}
		return &node{kind: kMap, name: "map<" + values.name + ">", items: values}, nil
	case *avro.UnionSchema:
		n := &node{kind: kUnion}
		names := make([]string, len(t.Types()))
		for i, b := range t.Types() {
			bn, err := c.node(b)
			if err != nil {
				return nil, err
			}
			n.branches = append(n.branches, bn)
			names[i] = bn.name
			n.jsonKeys = append(n.jsonKeys, unionKeys(bn))
		}
		n.name = "[" + strings.Join(names, ", ") + "]"
		return n, nil
	}
	return nil, fmt.Errorf("%w: unsupported schema type %s", ErrMalformedSchema, s.Type())
}

// unionKeys returns the keys Avro's JSON encoding may use for a union
// branch: the full and short name of a named type, else the type name; and
// hamba/avro's "long.timestamp-millis" form for logical types, so that
// hamba's generic output is accepted as input.
func unionKeys(n *node) []string {
	switch n.kind {
	case kRecord, kEnum, kFixed:
		if n.short != n.name {
			return []string{n.name, n.short}
		}
		return []string{n.name}
	case kArray:
		return []string{"array"}
	case kMap:
		return []string{"map"}
	}
	base, lt, ok := strings.Cut(n.name, "(")
	if !ok {
		return []string{base}
	}
	lt = strings.TrimSuffix(lt, ")")
	if n.logical == lDecimal {
		lt = "decimal"
	}
	return []string{base, base + "." + lt}
}

// minSize computes n.minSize for every node reachable from n. A node still
// being computed (recursion) counts as 0: any recursion goes through a
// union, array or map, which take at least one byte themselves, so the
// result is still exact.
func minSize(n *node, done map[*node]bool) int64 {
	if done[n] {
		return n.minSize
	}
	done[n] = true
	var size int64
	switch n.kind {
	case kBoolean, kInt, kLong, kEnum:
		size = 1
	case kFloat:
		size = 4
	case kDouble:
		size = 8
	case kBytes, kString:
		size = 1
	case kFixed:
		size = int64(n.size)
	case kArray, kMap:
		minSize(n.items, done)
		size = 1
	case kRecord:
		for _, f := range n.fields {
			size += minSize(f.node, done)
		}
	case kUnion:
		least := int64(-1)
		for _, b := range n.branches {
			if s := minSize(b, done); least < 0 || s < least {
				least = s
			}
		}
		size = 1 + max(least, 0)
	}
	n.minSize = size
	return size
}

// encodeDefault appends the Avro binary encoding of a field default, as
// hamba/avro hands it over (already converted to the field's type: int,
// int64, float32, float64, string, bool, []byte, a [N]byte for fixed,
// []any, map[string]any; a union's default is for its first branch).
func encodeDefault(buf []byte, n *node, v any) ([]byte, error) {
	if m, ok := v.(json.Marshaler); ok { // hamba's null default
		if b, err := m.MarshalJSON(); err == nil && string(b) == "null" {
			v = nil
		}
	}
	switch n.kind {
	case kNull:
		if v != nil {
			return nil, fmt.Errorf("%v is not null", v)
		}
		return buf, nil
	case kUnion:
		buf = appendLong(buf, 0)
		return encodeDefault(buf, n.branches[0], v)
	case kBoolean:
		b, ok := v.(bool)
		if !ok {
			break
		}
		if b {
			return append(buf, 1), nil
		}
		return append(buf, 0), nil
	case kInt, kLong:
		switch x := v.(type) {
		case int:
			return appendLong(buf, int64(x)), nil
		case int64:
			return appendLong(buf, x), nil
		}
	case kFloat:
		if x, ok := v.(float32); ok {
			return appendFloat(buf, x), nil
		}
	case kDouble:
		if x, ok := v.(float64); ok {
			return appendDouble(buf, x), nil
		}
	case kString, kEnum:
		s, ok := v.(string)
		if !ok {
			break
		}
		if n.kind == kEnum {
			i, ok := n.symbolIdx[s]
			if !ok {
				return nil, fmt.Errorf("%q is not a symbol of %s", s, n.name)
			}
			return appendLong(buf, int64(i)), nil
		}
		buf = appendLong(buf, int64(len(s)))
		return append(buf, s...), nil
	case kBytes:
		if b, ok := v.([]byte); ok {
			buf = appendLong(buf, int64(len(b)))
			return append(buf, b...), nil
		}
	case kFixed:
		rv := reflect.ValueOf(v)
		if rv.Kind() == reflect.Array && rv.Type().Elem().Kind() == reflect.Uint8 && rv.Len() == n.size {
			for i := range rv.Len() {
				buf = append(buf, byte(rv.Index(i).Uint()))
			}
			return buf, nil
		}
	case kArray:
		items, ok := v.([]any)
		if !ok {
			break
		}
		if len(items) > 0 {
			buf = appendLong(buf, int64(len(items)))
			for _, it := range items {
				var err error
				if buf, err = encodeDefault(buf, n.items, it); err != nil {
					return nil, err
				}
			}
		}
		return append(buf, 0), nil
	case kMap:
		m, ok := v.(map[string]any)
		if !ok {
			break
		}
		if len(m) > 0 {
			buf = appendLong(buf, int64(len(m)))
			for _, k := range sortedKeys(m) {
				buf = appendLong(buf, int64(len(k)))
				buf = append(buf, k...)
				var err error
				if buf, err = encodeDefault(buf, n.items, m[k]); err != nil {
					return nil, err
				}
			}
		}
		return append(buf, 0), nil
	case kRecord:
		m, ok := v.(map[string]any)
		if !ok {
			break
		}
		for _, f := range n.fields {
			fv, ok := m[f.name]
			if !ok {
				return nil, fmt.Errorf("no value for field %s", f.name)
			}
			var err error
			if buf, err = encodeDefault(buf, f.node, fv); err != nil {
				return nil, err
			}
		}
		return buf, nil
	}
	return nil, fmt.Errorf("%v (%T) is not a %s", v, v, n.name)
}
