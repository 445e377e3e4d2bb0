package meshrpc

import (
	"fmt"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/rpcproxy/stream"
)

// NewRequest fills m with a REQUEST frame calling service.method, ready to
// send through a stream.Cluster of this codec (a client without a sidecar
// in front of it, as the benchmark and tests use). The frame id is set
// when the request is written.
func NewRequest(m *stream.Message, service, method string, headers []mesh.HeaderField, body []byte) error {
	req := mesh.Request{Service: service, Method: method, Headers: headers, Body: body}
	raw, err := mesh.AppendFrame(m.Raw[:0], 0, mesh.KindRequest, 0, 0, &req)
	if err != nil {
		return err
	}
	m.Raw, m.Size, m.Service, m.Path = raw, len(raw), service, method
	return nil
}

// Answer decodes an answer read by this codec: the RESPONSE (its Body
// aliases m), or the ERROR as a *mesh.Error.
func Answer(m *stream.Message) (*mesh.Response, error) {
	f, _, err := mesh.DecodeFrame(m.Raw, len(m.Raw))
	if err != nil {
		return nil, err
	}
	switch f.Kind {
	case mesh.KindResponse:
		var r mesh.Response
		if err := r.Decode(f.Payload); err != nil {
			return nil, err
		}
		return &r, nil
	case mesh.KindError:
		var e mesh.Error
		if err := e.Decode(f.Payload); err != nil {
			return nil, err
		}
		return nil, &e
	case mesh.KindHeartbeat:
		return &mesh.Response{}, nil
	}
	return nil, fmt.Errorf("meshrpc: unexpected answer kind %s", f.Kind)
}
