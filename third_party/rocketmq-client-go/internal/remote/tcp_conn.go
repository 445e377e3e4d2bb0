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
	"context"
	"net"
	"runtime"
	"sync"
	"time"

	"go.uber.org/atomic"
)

// TODO: Adding TCP Connections Pool, https://github.com/apache/rocketmq-client-go/v2/issues/298
type tcpConnWrapper struct {
	net.Conn
	closed atomic.Bool

	// msgmesh patch 7: the group commit of writeFrame, which replaced the
	// lock every request held across its own write.
	wmu       sync.Mutex
	pending   []byte      // frames appended and not yet written
	batch     *frameBatch // the writers of pending's frames wait on it
	spare     []byte      // the buffer the last write used, for reuse
	flushing  bool        // a writer is writing; others append and wait
	lastWrite time.Time   // when the last write syscall ended
}

// yieldWindow: writeFrame yields before its write only when the previous
// write ended less than this long ago, when more writers are likely to
// come. A connection written now and then (a consumer's pull requests,
// one per queue and batch) writes at once, since a yield on a busy
// process can delay the request by a whole round of the scheduler.
const yieldWindow = 100 * time.Microsecond

// frameBatch is the frames one write syscall carries: their writers wait
// for done, then read err.
type frameBatch struct {
	done chan struct{}
	err  error
}

// writeFrame writes one whole frame, sharing the write syscall with the
// frames other goroutines write at the same time (msgmesh patch 7): the
// first writer to find no write in progress yields once, so that writers
// already runnable append theirs, then writes everything appended, again
// until nothing is left; the others wait for the write that carries their
// frame and return its error. With no other writer runnable the yield
// returns at once, so a lone request is not delayed. Each write syscall
// gets timeout as its deadline.
func (wrapper *tcpConnWrapper) writeFrame(frame []byte, timeout time.Duration) error {
	wrapper.wmu.Lock()
	if wrapper.batch == nil {
		wrapper.batch = &frameBatch{done: make(chan struct{})}
	}
	mine := wrapper.batch
	wrapper.pending = append(wrapper.pending, frame...)
	if wrapper.flushing {
		wrapper.wmu.Unlock()
		<-mine.done
		return mine.err
	}
	wrapper.flushing = true
	busy := time.Since(wrapper.lastWrite) < yieldWindow
	wrapper.wmu.Unlock()
	if busy {
		runtime.Gosched()
	}
	wrapper.wmu.Lock()
	defer wrapper.wmu.Unlock()
	for len(wrapper.pending) > 0 {
		buf, b := wrapper.pending, wrapper.batch
		wrapper.pending, wrapper.batch = wrapper.spare[:0], nil
		wrapper.wmu.Unlock()
		err := wrapper.Conn.SetWriteDeadline(time.Now().Add(timeout))
		if err == nil {
			_, err = wrapper.Conn.Write(buf)
		}
		b.err = err
		close(b.done)
		wrapper.wmu.Lock()
		wrapper.lastWrite = time.Now()
		if cap(buf) <= 1<<20 {
			wrapper.spare = buf[:0]
		}
	}
	wrapper.flushing = false
	return mine.err
}

func initConn(ctx context.Context, addr string, config *RemotingClientConfig) (*tcpConnWrapper, error) {
	var d net.Dialer

	d.KeepAlive = config.KeepAliveDuration
	d.Deadline = time.Now().Add(config.ConnectionTimeout)

	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &tcpConnWrapper{
		Conn: conn,
	}, nil
}

func (wrapper *tcpConnWrapper) destroy() error {
	wrapper.closed.Swap(true)
	return wrapper.Conn.Close()
}

func (wrapper *tcpConnWrapper) isClosed(err error) bool {
	if !wrapper.closed.Load() {
		return false
	}

	opErr, ok := err.(*net.OpError)
	if !ok {
		return false
	}

	return opErr.Err.Error() == "use of closed network connection"
}
