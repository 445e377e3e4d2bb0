/*
 * Licensed to the Apache Software Foundation (ASF) under one or more
 * contributor license agreements.  See the NOTICE file distributed with
 * this work for additional information regarding copyright ownership.
 * The ASF licenses this file to You under the Apache License, Version 2.0
 * (the "License"); you may not use this file except in compliance with
 * the License.  You may obtain a copy of the License at
 *
 *     http://www.apache.org/licenses/LICENSE-2.0
 *
 *  Unless required by applicable law or agreed to in writing, software
 *  distributed under the License is distributed on an "AS IS" BASIS,
 *  WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
 *  See the License for the specific language governing permissions and
 *  limitations under the License.
 */
package remote

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	jsoniter "github.com/json-iterator/go"
)

var opaque int32

const (
	// 0, REQUEST_COMMAND
	RPCType = 0
	// 1, RPC
	RPCOneWay = 1
	//ResponseType for response
	ResponseType = 1
	_Flag        = 0
	_Version     = 317
)

type LanguageCode byte

const (
	_Java    = LanguageCode(0)
	_Go      = LanguageCode(9)
	_Unknown = LanguageCode(127)
)

func (lc LanguageCode) MarshalJSON() ([]byte, error) {
	return []byte(`"GO"`), nil
}

func (lc *LanguageCode) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case "JAVA":
		*lc = _Java
	case "GO", `"GO"`:
		*lc = _Go
	default:
		*lc = _Unknown
	}
	return nil
}

func (lc LanguageCode) String() string {
	switch lc {
	case _Java:
		return "JAVA"
	case _Go:
		return "GO"
	default:
		return "unknown"
	}
}

type RemotingCommand struct {
	Code      int16             `json:"code"`
	Language  LanguageCode      `json:"language"`
	Version   int16             `json:"version"`
	Opaque    int32             `json:"opaque"`
	Flag      int32             `json:"flag"`
	Remark    string            `json:"remark"`
	ExtFields map[string]string `json:"extFields"`
	Body      []byte            `json:"-"`
}

type CustomHeader interface {
	Encode() map[string]string
}

func NewRemotingCommand(code int16, header CustomHeader, body []byte) *RemotingCommand {
	cmd := &RemotingCommand{
		Code:      code,
		Version:   _Version,
		Opaque:    atomic.AddInt32(&opaque, 1),
		Body:      body,
		Language:  _Go,
		ExtFields: make(map[string]string),
	}

	if header != nil {
		cmd.ExtFields = header.Encode()
	}

	return cmd
}

func (command *RemotingCommand) String() string {
	return fmt.Sprintf("Code: %d, opaque: %d, Remark: %s, ExtFields: %v",
		command.Code, command.Opaque, command.Remark, command.ExtFields)
}

func (command *RemotingCommand) isResponseType() bool {
	return command.Flag&(ResponseType) == ResponseType
}

func (command *RemotingCommand) markResponseType() {
	command.Flag = command.Flag | ResponseType
}

var (
	jsonSerializer     = &jsonCodec{}
	rocketMqSerializer = &rmqCodec{}
	codecType          byte
)

// encode RemotingCommand
//
// Frame format:
// +++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++
// + item | frame_size | header_length |         header_body        |     body     +
// +++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++
// + len  |   4bytes   |     4bytes    | (21 + r_len + e_len) bytes | remain bytes +
// +++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++
func (command *RemotingCommand) WriteTo(w io.Writer) error {
	// msgmesh patch: the frame is built in one buffer and written with one
	// Write (one syscall on a TCP connection), not four (PATCHES.md).
	frame, err := encode(command)
	if err != nil {
		return err
	}
	_, err = w.Write(frame)
	return err
}

// encodeInto is encode appending to dst for the JSON codec (msgmesh
// patch 16); the RocketMQ codec's frame is a new slice, as before.
func encodeInto(dst []byte, command *RemotingCommand) ([]byte, error) {
	if codecType == JsonCodecs {
		return appendJSONFrame(dst, command), nil
	}
	return encode(command)
}

func encode(command *RemotingCommand) ([]byte, error) {
	if codecType == JsonCodecs {
		// msgmesh patch 9: the JSON header is appended straight into
		// the frame, with the bytes jsoniter.Marshal writes for it
		// (appendJSONHeader), not marshalled by reflection into a
		// buffer of its own and copied.
		return encodeJSONFrame(command), nil
	}

	var (
		header []byte
		err    error
	)

	switch codecType {
	case JsonCodecs:
		header, err = jsonSerializer.encodeHeader(command)
	case RocketMQCodecs:
		header, err = rocketMqSerializer.encodeHeader(command)
	}

	if err != nil {
		return nil, err
	}

	frameSize := 4 + len(header) + len(command.Body)
	buf := make([]byte, 0, 4+frameSize)
	buf = binary.BigEndian.AppendUint32(buf, uint32(frameSize))
	buf = append(buf, markProtocolType(int32(len(header)))...)
	buf = append(buf, header...)
	buf = append(buf, command.Body...)
	return buf, nil
}

// encodeJSONFrame is encode's frame for the JSON codec (msgmesh patch 9):
// the two lengths, the header appendJSONHeader writes, the body. The
// header is written into a pooled scratch buffer first, so that the frame
// is one allocation of its exact size without a pass to measure the
// header.
func encodeJSONFrame(command *RemotingCommand) []byte {
	return appendJSONFrame(nil, command)
}

// appendJSONFrame appends command's frame to dst (msgmesh patch 16:
// doRequest encodes into a pooled buffer, since writeFrame copies the
// frame before it returns).
func appendJSONFrame(dst []byte, command *RemotingCommand) []byte {
	sp := headerScratch.Get().(*[]byte)
	header := appendJSONHeader((*sp)[:0], command)
	buf := dst
	if need := 8 + len(header) + len(command.Body); cap(buf)-len(buf) < need {
		buf = make([]byte, len(dst), len(dst)+need)
		copy(buf, dst)
	}
	start := len(buf)
	buf = buf[:start+8]
	binary.BigEndian.PutUint32(buf[start:start+4], uint32(4+len(header)+len(command.Body)))
	copy(buf[start+4:start+8], markProtocolType(int32(len(header))))
	buf = append(buf, header...)
	buf = append(buf, command.Body...)
	if cap(header) <= 64<<10 {
		*sp = header
		headerScratch.Put(sp)
	}
	return buf
}

// headerScratch holds buffers encodeJSONFrame writes headers into.
var headerScratch = sync.Pool{New: func() interface{} { b := make([]byte, 0, 1024); return &b }}

// appendJSONHeader appends command's header as JSON, byte for byte what
// jsoniter.Marshal(command) writes (jsonCodec.encodeHeader, the ext
// fields in the map's iteration order as there): the fields in
// declaration order, Language as LanguageCode.MarshalJSON writes every
// language ("GO"), a nil ExtFields as null.
func appendJSONHeader(buf []byte, command *RemotingCommand) []byte {
	buf = append(buf, `{"code":`...)
	buf = strconv.AppendInt(buf, int64(command.Code), 10)
	buf = append(buf, `,"language":"GO","version":`...)
	buf = strconv.AppendInt(buf, int64(command.Version), 10)
	buf = append(buf, `,"opaque":`...)
	buf = strconv.AppendInt(buf, int64(command.Opaque), 10)
	buf = append(buf, `,"flag":`...)
	buf = strconv.AppendInt(buf, int64(command.Flag), 10)
	buf = append(buf, `,"remark":`...)
	buf = appendJSONString(buf, command.Remark)
	buf = append(buf, `,"extFields":`...)
	if command.ExtFields == nil {
		buf = append(buf, "null"...)
	} else {
		buf = append(buf, '{')
		first := true
		for k, v := range command.ExtFields {
			if !first {
				buf = append(buf, ',')
			}
			first = false
			buf = appendJSONString(buf, k)
			buf = append(buf, ':')
			buf = appendJSONString(buf, v)
		}
		buf = append(buf, '}')
	}
	return append(buf, '}')
}

// appendJSONString appends s as a JSON string the way jsoniter's default
// configuration (HTML escaping on) writes it: ASCII as jsoniter's
// WriteStringWithHTMLEscaped escapes it ('"' and '\\' with a backslash,
// \n \r \t, other control bytes and '<', '>', '&' as \u00XX), a string
// with other bytes through jsoniter itself. The properties of a message
// (ext field "properties" of a send) hold control bytes 1 and 2 as
// separators.
func appendJSONString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	start := len(buf)
	buf = append(buf, '"')
	last := 0
	for i := 0; i < len(s); i++ {
		b := s[i]
		if jsonSafe[b] {
			continue
		}
		if b >= utf8.RuneSelf {
			q, err := jsoniter.Marshal(s)
			if err != nil { // jsoniter writes every string; kept to be safe
				q = []byte(strconv.Quote(s))
			}
			return append(buf[:start], q...)
		}
		buf = append(buf, s[last:i]...)
		switch b {
		case '\\', '"':
			buf = append(buf, '\\', b)
		case '\n':
			buf = append(buf, '\\', 'n')
		case '\r':
			buf = append(buf, '\\', 'r')
		case '\t':
			buf = append(buf, '\\', 't')
		default:
			buf = append(buf, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
		}
		last = i + 1
	}
	buf = append(buf, s[last:]...)
	return append(buf, '"')
}

// jsonSafe is the bytes appendJSONString copies as they are: jsoniter's
// htmlSafeSet (printable ASCII and DEL, but '"', '\\', '<', '>', '&').
var jsonSafe = func() (t [256]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = true
	}
	for _, b := range `"\<>&` {
		t[b] = false
	}
	return t
}()

// decode parses a frame without its length prefix.
//
// msgmesh patch 9: the header and the body are slices of data (the frame
// receiveResponse read into a buffer of its own), not copies read out of
// it through a bytes.Reader and binary.Read. The errors are those the
// reads gave: io.EOF where nothing was left to read, io.ErrUnexpectedEOF
// where only part of it was.
func decode(data []byte) (*RemotingCommand, error) {
	switch {
	case len(data) == 0:
		return nil, io.EOF
	case len(data) < 4:
		return nil, io.ErrUnexpectedEOF
	}
	oriHeaderLen := int32(binary.BigEndian.Uint32(data))

	headerLength := int(oriHeaderLen & 0xFFFFFF)
	if headerLength > len(data)-4 {
		if len(data) == 4 {
			return nil, io.EOF
		}
		return nil, io.ErrUnexpectedEOF
	}
	headerData := data[4 : 4+headerLength : 4+headerLength]

	var (
		command *RemotingCommand
		err     error
	)
	switch codeType := byte((oriHeaderLen >> 24) & 0xFF); codeType {
	case JsonCodecs:
		command, err = jsonSerializer.decodeHeader(headerData)
	case RocketMQCodecs:
		command, err = rocketMqSerializer.decodeHeader(headerData)
	default:
		err = fmt.Errorf("unknown codec type: %d", codeType)
	}
	if err != nil {
		return nil, err
	}

	if len(data) > 4+headerLength {
		command.Body = data[4+headerLength:]
	}
	return command, nil
}

func markProtocolType(source int32) []byte {
	result := make([]byte, 4)
	result[0] = codecType
	result[1] = byte((source >> 16) & 0xFF)
	result[2] = byte((source >> 8) & 0xFF)
	result[3] = byte(source & 0xFF)
	return result
}

const (
	JsonCodecs     = byte(0)
	RocketMQCodecs = byte(1)
)

type serializer interface {
	encodeHeader(command *RemotingCommand) ([]byte, error)
	decodeHeader(data []byte) (*RemotingCommand, error)
}

// jsonCodec please refer to remoting/protocol/RemotingSerializable
type jsonCodec struct{}

func (c *jsonCodec) encodeHeader(command *RemotingCommand) ([]byte, error) {
	buf, err := jsoniter.Marshal(command)
	if err != nil {
		return nil, err
	}
	return buf, nil
}

func (c *jsonCodec) decodeHeader(header []byte) (*RemotingCommand, error) {
	// msgmesh patch 9: read with jsoniter's iterator, field by field,
	// not jsoniter.Unmarshal's reflection (which built each ext field's
	// key and value through reflect.New).
	command := &RemotingCommand{}
	command.ExtFields = make(map[string]string)
	command.Body = make([]byte, 0)
	iter := jsoniter.ConfigDefault.BorrowIterator(header)
	decodeJSONHeader(iter, command)
	// The end of the input after the object (io.EOF) is the header as
	// jsoniter.Unmarshal would have read it. Anything else (an error on
	// the way, bytes left over) is decided by jsoniter.Unmarshal itself,
	// which ends at a NUL byte and reports errors in its own words.
	iter.WhatIsNext()
	ok := iter.Error == io.EOF
	jsoniter.ConfigDefault.ReturnIterator(iter)
	if ok {
		return command, nil
	}
	command = &RemotingCommand{}
	command.ExtFields = make(map[string]string)
	command.Body = make([]byte, 0)
	if err := jsoniter.Unmarshal(header, command); err != nil {
		return nil, err
	}
	return command, nil
}

// decodeJSONHeader reads a header object into command as
// jsoniter.Unmarshal does (msgmesh patch 9): field names matched without
// regard to ASCII case, unknown fields skipped, a null number left as it
// was, a null string read as "", Language given to
// LanguageCode.UnmarshalJSON as the raw value, a null extFields made nil
// and an object's pairs added to the map.
func decodeJSONHeader(iter *jsoniter.Iterator, command *RemotingCommand) {
	iter.ReadObjectCB(func(iter *jsoniter.Iterator, field string) bool {
		switch {
		case asciiFold(field, "code"):
			if !iter.ReadNil() {
				command.Code = iter.ReadInt16()
			}
		case asciiFold(field, "language"):
			if err := command.Language.UnmarshalJSON(iter.SkipAndReturnBytes()); err != nil {
				iter.ReportError("unmarshalerDecoder", err.Error())
			}
		case asciiFold(field, "version"):
			if !iter.ReadNil() {
				command.Version = iter.ReadInt16()
			}
		case asciiFold(field, "opaque"):
			if !iter.ReadNil() {
				command.Opaque = iter.ReadInt32()
			}
		case asciiFold(field, "flag"):
			if !iter.ReadNil() {
				command.Flag = iter.ReadInt32()
			}
		case asciiFold(field, "remark"):
			command.Remark = iter.ReadString()
		case asciiFold(field, "extfields"):
			if iter.ReadNil() {
				command.ExtFields = nil
				break
			}
			if command.ExtFields == nil {
				command.ExtFields = make(map[string]string)
			}
			iter.ReadMapCB(func(iter *jsoniter.Iterator, key string) bool {
				command.ExtFields[key] = iter.ReadString()
				return true
			})
		default:
			iter.Skip()
		}
		// Go on after an error, as jsoniter's struct decoder does: an
		// io.EOF met in a value is then replaced by the error of the
		// object's missing end.
		return true
	})
}

// asciiFold reports whether field is name (lower case) but for the case
// of ASCII letters, as jsoniter matches a struct's field names.
func asciiFold(field, name string) bool {
	if len(field) != len(name) {
		return false
	}
	for i := 0; i < len(field); i++ {
		c := field[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != name[i] {
			return false
		}
	}
	return true
}

// rmqCodec implementation of RocketMQCodecs private protocol, please refer to remoting/protocol/RocketMQSerializable
// RocketMQCodecs Private Protocol Header format:
//
// v_flag: version flag
// r_len: length of remark body
// r_body: data of remark body
// e_len: length of extends fields body
// e_body: data of extends fields
//
// +++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++
// + item | request_code | l_flag | v_flag | opaque | request_flag |  r_len  |   r_body    |  e_len  |    e_body   +
// +++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++
// + len  |    2bytes    |  1byte | 2bytes | 4bytes |    4 bytes   | 4 bytes | r_len bytes | 4 bytes | e_len bytes +
// +++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++
const (
	// header + body length
	headerFixedLength = 21
)

type rmqCodec struct{}

// encodeHeader
func (c *rmqCodec) encodeHeader(command *RemotingCommand) ([]byte, error) {
	extBytes, err := c.encodeMaps(command.ExtFields)
	if err != nil {
		return nil, err
	}

	buf := bytes.NewBuffer(make([]byte, headerFixedLength+len(command.Remark)+len(extBytes)))
	buf.Reset()

	// request code, length is 2 bytes
	err = binary.Write(buf, binary.BigEndian, int16(command.Code))
	if err != nil {
		return nil, err
	}

	// language flag, length is 1 byte
	err = binary.Write(buf, binary.BigEndian, _Go)
	if err != nil {
		return nil, err
	}

	// version flag, length is 2 bytes
	err = binary.Write(buf, binary.BigEndian, int16(command.Version))
	if err != nil {
		return nil, err
	}

	// opaque flag, opaque is request identifier, length is 4 bytes
	err = binary.Write(buf, binary.BigEndian, command.Opaque)
	if err != nil {
		return nil, err
	}

	// request flag, length is 4 bytes
	err = binary.Write(buf, binary.BigEndian, command.Flag)
	if err != nil {
		return nil, err
	}

	// remark length flag, length is 4 bytes
	err = binary.Write(buf, binary.BigEndian, int32(len(command.Remark)))
	if err != nil {
		return nil, err
	}

	// write remark, len(command.Remark) bytes
	if len(command.Remark) > 0 {
		err = binary.Write(buf, binary.BigEndian, []byte(command.Remark))
		if err != nil {
			return nil, err
		}
	}

	err = binary.Write(buf, binary.BigEndian, int32(len(extBytes)))
	if err != nil {
		return nil, err
	}

	if len(extBytes) > 0 {
		err = binary.Write(buf, binary.BigEndian, extBytes)
		if err != nil {
			return nil, err
		}
	}

	return buf.Bytes(), nil
}

func (c *rmqCodec) encodeMaps(maps map[string]string) ([]byte, error) {
	if maps == nil || len(maps) == 0 {
		return []byte{}, nil
	}
	extFieldsBuf := bytes.NewBuffer([]byte{})
	var err error
	for key, value := range maps {
		err = binary.Write(extFieldsBuf, binary.BigEndian, int16(len(key)))
		if err != nil {
			return nil, err
		}
		err = binary.Write(extFieldsBuf, binary.BigEndian, []byte(key))
		if err != nil {
			return nil, err
		}

		err = binary.Write(extFieldsBuf, binary.BigEndian, int32(len(value)))
		if err != nil {
			return nil, err
		}
		err = binary.Write(extFieldsBuf, binary.BigEndian, []byte(value))
		if err != nil {
			return nil, err
		}
	}
	return extFieldsBuf.Bytes(), nil
}

func (c *rmqCodec) decodeHeader(data []byte) (*RemotingCommand, error) {
	var err error
	command := &RemotingCommand{}
	buf := bytes.NewBuffer(data)
	var code int16
	err = binary.Read(buf, binary.BigEndian, &code)
	if err != nil {
		return nil, err
	}
	command.Code = code

	var (
		languageCode byte
		remarkLen    int32
		extFieldsLen int32
	)
	err = binary.Read(buf, binary.BigEndian, &languageCode)
	if err != nil {
		return nil, err
	}
	command.Language = LanguageCode(languageCode)

	var version int16
	err = binary.Read(buf, binary.BigEndian, &version)
	if err != nil {
		return nil, err
	}
	command.Version = version

	// int opaque
	err = binary.Read(buf, binary.BigEndian, &command.Opaque)
	if err != nil {
		return nil, err
	}

	// int flag
	err = binary.Read(buf, binary.BigEndian, &command.Flag)
	if err != nil {
		return nil, err
	}

	// String remark
	err = binary.Read(buf, binary.BigEndian, &remarkLen)
	if err != nil {
		return nil, err
	}

	if remarkLen > 0 {
		var remarkData = make([]byte, remarkLen)
		if _, err = io.ReadFull(buf, remarkData); err != nil {
			return nil, err
		}
		command.Remark = string(remarkData)
	}

	err = binary.Read(buf, binary.BigEndian, &extFieldsLen)
	if err != nil {
		return nil, err
	}

	if extFieldsLen > 0 {
		extFieldsData := make([]byte, extFieldsLen)
		if _, err := io.ReadFull(buf, extFieldsData); err != nil {
			return nil, err
		}

		command.ExtFields = make(map[string]string)
		buf := bytes.NewBuffer(extFieldsData)
		var (
			kLen int16
			vLen int32
		)
		for buf.Len() > 0 {
			err = binary.Read(buf, binary.BigEndian, &kLen)
			if err != nil {
				return nil, err
			}

			key, err := getExtFieldsData(buf, int32(kLen))
			if err != nil {
				return nil, err
			}

			err = binary.Read(buf, binary.BigEndian, &vLen)
			if err != nil {
				return nil, err
			}

			value, err := getExtFieldsData(buf, vLen)
			if err != nil {
				return nil, err
			}
			command.ExtFields[key] = value
		}
	}

	return command, nil
}

func getExtFieldsData(buff io.Reader, length int32) (string, error) {
	var data = make([]byte, length)
	if _, err := io.ReadFull(buff, data); err != nil {
		return "", err
	}

	return string(data), nil
}
