package remote

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingConn counts Write calls on a real connection.
type countingConn struct {
	net.Conn
	writes atomic.Int64
	fail   error
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.writes.Add(1)
	if c.fail != nil {
		return 0, c.fail
	}
	return c.Conn.Write(b)
}

// Frames written by many goroutines at once all arrive whole, in fewer
// writes than frames (msgmesh patch 7).
func TestWriteFrameGroupCommit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan [][]byte, 1)
	const writers, each = 32, 50
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		var frames [][]byte
		for len(frames) < writers*each {
			var n uint32
			if err := binary.Read(c, binary.BigEndian, &n); err != nil {
				break
			}
			f := make([]byte, n)
			if _, err := io.ReadFull(c, f); err != nil {
				break
			}
			frames = append(frames, f)
		}
		got <- frames
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	cc := &countingConn{Conn: raw}
	w := &tcpConnWrapper{Conn: cc}
	var wg sync.WaitGroup
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < each; j++ {
				body := []byte(fmt.Sprintf("frame %d/%d %s", i, j, bytes.Repeat([]byte{'x'}, 100+i)))
				frame := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
				if err := w.writeFrame(append(frame, body...), 5*time.Second); err != nil {
					t.Error(err)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	frames := <-got
	if len(frames) != writers*each {
		t.Fatalf("%d frames arrived, want %d", len(frames), writers*each)
	}
	seen := map[string]bool{}
	for _, f := range frames {
		var i, j int
		if _, err := fmt.Sscanf(string(f), "frame %d/%d", &i, &j); err != nil || len(f) != len(fmt.Sprintf("frame %d/%d ", i, j))+100+i {
			t.Fatalf("torn frame %q", f)
		}
		seen[string(f)] = true
	}
	if len(seen) != writers*each {
		t.Fatalf("%d distinct frames, want %d", len(seen), writers*each)
	}
	t.Logf("%d frames in %d writes", writers*each, cc.writes.Load())
	if cc.writes.Load() >= writers*each {
		t.Errorf("%d writes for %d frames: none shared a write", cc.writes.Load(), writers*each)
	}
}

// Every writer whose frame a failed write carried gets its error.
func TestWriteFrameError(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	boom := errors.New("boom")
	w := &tcpConnWrapper{Conn: &countingConn{Conn: a, fail: boom}}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.writeFrame([]byte("frame"), time.Second); !errors.Is(err, boom) {
				t.Errorf("writeFrame = %v, want the write's error", err)
			}
		}()
	}
	wg.Wait()
}
