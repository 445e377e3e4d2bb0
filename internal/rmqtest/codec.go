package rmqtest

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Frame format of the remoting protocol (RemotingCommand.encode):
//
//	int32  total length L (everything after this field: 4 + H + body)
//	int32  serialize type (high byte) | header length H (low 3 bytes)
//	[H]    header: JSON (type 0) or RocketMQ binary (type 1)
//	[...]  body: L - 4 - H bytes
//
// The broker decodes both header serializations and answers in the one the
// request used. The Go client always sends JSON.

// Serialize types of the header.
const (
	serializeJSON     byte = 0
	serializeRocketMQ byte = 1
)

// maxFrameSize bounds a frame's total length (RocketMQ's default
// com.rocketmq.remoting.frameMaxLength is 16 MiB).
const maxFrameSize = 16 << 20

// errFrame is wrapped by every decoding error: the peer sent something that
// is not a remoting frame, and the connection is closed.
var errFrame = errors.New("malformed remoting frame")

// command is one remoting request or response.
type command struct {
	Code      int16
	Language  string
	Version   int16
	Opaque    int32
	Flag      int32
	Remark    string
	Ext       map[string]string
	Body      []byte
	serialize byte // header serialization of the frame it came in
}

func (c *command) isResponse() bool { return c.Flag&flagResponse != 0 }
func (c *command) isOneway() bool   { return c.Flag&flagOneway != 0 }

// jsonHeader is the JSON header. Language is raw because Java sends a name
// ("JAVA") and others may send a number.
type jsonHeader struct {
	Code      int16             `json:"code"`
	Language  json.RawMessage   `json:"language,omitempty"`
	Version   int16             `json:"version"`
	Opaque    int32             `json:"opaque"`
	Flag      int32             `json:"flag"`
	Remark    string            `json:"remark,omitempty"`
	ExtFields map[string]string `json:"extFields,omitempty"`
}

// readFrame reads one frame from r. It returns io.EOF for a clean end of
// stream before a frame starts, and an error wrapping errFrame for bytes
// that are not a frame; other errors come from r.
func readFrame(r io.Reader) (*command, error) {
	var pre [4]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, err // io.EOF when nothing was read
	}
	total := int64(binary.BigEndian.Uint32(pre[:]))
	if total < 4 || total > maxFrameSize {
		return nil, fmt.Errorf("%w: frame length %d outside [4, %d]", errFrame, total, maxFrameSize)
	}
	buf := make([]byte, total)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return decodeFrame(buf)
}

// decodeFrame decodes the frame content after the total length.
func decodeFrame(buf []byte) (*command, error) {
	if len(buf) < 4 {
		return nil, fmt.Errorf("%w: %d bytes, no header length", errFrame, len(buf))
	}
	mark := binary.BigEndian.Uint32(buf)
	typ := byte(mark >> 24)
	hlen := int(mark & 0xFFFFFF)
	if hlen > len(buf)-4 {
		return nil, fmt.Errorf("%w: header length %d exceeds frame (%d bytes)", errFrame, hlen, len(buf)-4)
	}
	header, body := buf[4:4+hlen], buf[4+hlen:]
	var (
		cmd *command
		err error
	)
	switch typ {
	case serializeJSON:
		cmd, err = decodeJSONHeader(header)
	case serializeRocketMQ:
		cmd, err = decodeBinaryHeader(header)
	default:
		err = fmt.Errorf("%w: unknown serialize type %d", errFrame, typ)
	}
	if err != nil {
		return nil, err
	}
	cmd.serialize = typ
	if len(body) > 0 {
		cmd.Body = body
	}
	return cmd, nil
}

func decodeJSONHeader(h []byte) (*command, error) {
	var jh jsonHeader
	if err := json.Unmarshal(h, &jh); err != nil {
		return nil, fmt.Errorf("%w: JSON header: %v", errFrame, err)
	}
	cmd := &command{
		Code:    jh.Code,
		Version: jh.Version,
		Opaque:  jh.Opaque,
		Flag:    jh.Flag,
		Remark:  jh.Remark,
		Ext:     jh.ExtFields,
	}
	var lang string
	if json.Unmarshal(jh.Language, &lang) == nil {
		cmd.Language = lang
	}
	if cmd.Ext == nil {
		cmd.Ext = map[string]string{}
	}
	return cmd, nil
}

// decodeBinaryHeader decodes RocketMQSerializable: code int16, language
// byte, version int16, opaque int32, flag int32, remark (int32 length +
// bytes), ext fields (int32 length + {int16 key length, key, int32 value
// length, value}*).
func decodeBinaryHeader(h []byte) (*command, error) {
	d := binDecoder{b: h}
	cmd := &command{Ext: map[string]string{}}
	cmd.Code = int16(d.u16())
	d.u8() // language
	cmd.Version = int16(d.u16())
	cmd.Opaque = int32(d.u32())
	cmd.Flag = int32(d.u32())
	cmd.Remark = string(d.bytes(int(int32(d.u32()))))
	ext := binDecoder{b: d.bytes(int(int32(d.u32())))}
	for d.err == nil && ext.err == nil && len(ext.b) > 0 {
		k := ext.bytes(int(int16(ext.u16())))
		v := ext.bytes(int(int32(ext.u32())))
		cmd.Ext[string(k)] = string(v)
	}
	if d.err != nil || ext.err != nil {
		return nil, fmt.Errorf("%w: binary header truncated", errFrame)
	}
	return cmd, nil
}

// binDecoder reads big-endian fields and remembers the first overrun.
type binDecoder struct {
	b   []byte
	err error
}

func (d *binDecoder) bytes(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = errFrame
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *binDecoder) u8() byte {
	b := d.bytes(1)
	if b == nil {
		return 0
	}
	return b[0]
}

func (d *binDecoder) u16() uint16 {
	b := d.bytes(2)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint16(b)
}

func (d *binDecoder) u32() uint32 {
	b := d.bytes(4)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint32(b)
}

func (d *binDecoder) u64() uint64 {
	b := d.bytes(8)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// encodeFrame returns the complete frame of cmd, header serialized as
// cmd.serialize says.
func encodeFrame(cmd *command) ([]byte, error) {
	var header []byte
	switch cmd.serialize {
	case serializeRocketMQ:
		header = encodeBinaryHeader(cmd)
	default:
		lang, _ := json.Marshal(cmd.Language)
		var err error
		header, err = json.Marshal(jsonHeader{
			Code:      cmd.Code,
			Language:  lang,
			Version:   cmd.Version,
			Opaque:    cmd.Opaque,
			Flag:      cmd.Flag,
			Remark:    cmd.Remark,
			ExtFields: cmd.Ext,
		})
		if err != nil {
			return nil, err
		}
	}
	if len(header) > 0xFFFFFF {
		return nil, fmt.Errorf("header of %d bytes is too long", len(header))
	}
	total := 4 + len(header) + len(cmd.Body)
	out := make([]byte, 0, 4+total)
	out = binary.BigEndian.AppendUint32(out, uint32(total))
	out = binary.BigEndian.AppendUint32(out, uint32(cmd.serialize)<<24|uint32(len(header)))
	out = append(out, header...)
	return append(out, cmd.Body...), nil
}

func encodeBinaryHeader(cmd *command) []byte {
	var b []byte
	b = binary.BigEndian.AppendUint16(b, uint16(cmd.Code))
	b = append(b, 0) // language: JAVA
	b = binary.BigEndian.AppendUint16(b, uint16(cmd.Version))
	b = binary.BigEndian.AppendUint32(b, uint32(cmd.Opaque))
	b = binary.BigEndian.AppendUint32(b, uint32(cmd.Flag))
	b = binary.BigEndian.AppendUint32(b, uint32(len(cmd.Remark)))
	b = append(b, cmd.Remark...)
	var ext []byte
	for k, v := range cmd.Ext {
		ext = binary.BigEndian.AppendUint16(ext, uint16(len(k)))
		ext = append(ext, k...)
		ext = binary.BigEndian.AppendUint32(ext, uint32(len(v)))
		ext = append(ext, v...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(ext)))
	return append(b, ext...)
}
