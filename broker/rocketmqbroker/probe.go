package rocketmqbroker

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// defaultProbeTimeout bounds New's check of the name servers when ctx has
// no earlier deadline.
const defaultProbeTimeout = 5 * time.Second

// codeGetBrokerClusterInfo is the name server request New sends to check
// that a name server answers (RequestCode.GET_BROKER_CLUSTER_INFO).
const codeGetBrokerClusterInfo = 106

// maxProbeFrame bounds the answer New reads (cluster info is small).
const maxProbeFrame = 4 << 20

// resolveNameServers turns "host:port" entries into "ip:port": the client
// accepts only IP literals in its name server list. The first IPv4
// address of a host wins, else its first address.
func resolveNameServers(ctx context.Context, addrs []string) ([]string, error) {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return nil, fmt.Errorf("name server %q: %w", a, err)
		}
		if ip := net.ParseIP(host); ip != nil {
			out = append(out, net.JoinHostPort(ip.String(), port))
			continue
		}
		ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
		if err != nil {
			return nil, fmt.Errorf("name server %q: %w", a, err)
		}
		if len(ips) == 0 {
			return nil, fmt.Errorf("name server %q: host has no address", a)
		}
		pick := ips[0].IP
		for _, ip := range ips {
			if ip.IP.To4() != nil {
				pick = ip.IP
				break
			}
		}
		out = append(out, net.JoinHostPort(pick.String(), port))
	}
	return out, nil
}

// probe sends GET_BROKER_CLUSTER_INFO to addr and waits for any
// well-formed remoting answer: it proves that a RocketMQ name server (not
// just some listener) is there. A broker answers it too (with "request
// code not supported"), so it also proves a broker is there. ctx bounds
// the whole exchange.
func probe(ctx context.Context, addr string) error {
	_, err := request(ctx, addr, codeGetBrokerClusterInfo)
	return err
}

// remotingAnswer is the part of a remoting response header request reads.
type remotingAnswer struct {
	Code   int    // 0: success
	Remark string // why not, when Code is not 0
	Body   []byte
}

// request sends one remoting request with a JSON header and no body to
// addr and reads its answer. ctx bounds the whole exchange.
func request(ctx context.Context, addr string, code int) (remotingAnswer, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return remotingAnswer{}, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		if err := conn.SetDeadline(dl); err != nil {
			return remotingAnswer{}, err
		}
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()

	header, err := json.Marshal(map[string]any{
		"code": code, "language": "GO", "version": 317,
		"opaque": 1, "flag": 0, "extFields": map[string]string{},
	})
	if err != nil {
		return remotingAnswer{}, err
	}
	frame := binary.BigEndian.AppendUint32(nil, uint32(4+len(header)))
	frame = binary.BigEndian.AppendUint32(frame, uint32(len(header))) // JSON header
	frame = append(frame, header...)
	if _, err := conn.Write(frame); err != nil {
		return remotingAnswer{}, ctxErr(ctx, err)
	}
	var pre [8]byte
	if _, err := io.ReadFull(conn, pre[:]); err != nil {
		return remotingAnswer{}, ctxErr(ctx, err)
	}
	total := binary.BigEndian.Uint32(pre[:4])
	hlen := binary.BigEndian.Uint32(pre[4:]) & 0xFFFFFF
	if total < 4 || total > maxProbeFrame || hlen > total-4 {
		return remotingAnswer{}, errors.New("the answer is not a RocketMQ remoting frame")
	}
	rest := make([]byte, total-4)
	if _, err := io.ReadFull(conn, rest); err != nil {
		return remotingAnswer{}, ctxErr(ctx, err)
	}
	ans := remotingAnswer{Code: -1, Body: rest[hlen:]}
	if pre[4] == 0 { // JSON header: check it is a response to our request
		var h struct {
			Code   int    `json:"code"`
			Flag   int32  `json:"flag"`
			Opaque int32  `json:"opaque"`
			Remark string `json:"remark"`
		}
		if err := json.Unmarshal(rest[:hlen], &h); err != nil || h.Flag&1 == 0 || h.Opaque != 1 {
			return remotingAnswer{}, errors.New("the answer is not a RocketMQ remoting response")
		}
		ans.Code, ans.Remark = h.Code, h.Remark
	}
	return ans, nil
}

// ctxErr prefers ctx's error to the I/O error it caused.
func ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return err
}

// probeAll probes every name server and succeeds if one answers. The
// error of a failure lists each server's problem.
func probeAll(ctx context.Context, addrs []string) (answered []string, err error) {
	var errs []error
	for _, a := range addrs {
		if perr := probe(ctx, a); perr != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a, perr))
			continue
		}
		answered = append(answered, a)
	}
	if len(answered) == 0 {
		return nil, errors.Join(errs...)
	}
	return answered, nil
}
