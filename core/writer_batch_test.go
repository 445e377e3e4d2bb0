package core_test

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/core"
)

func bwPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// bwFrame is a length-prefixed frame naming its writer and sequence.
func bwFrame(g, i, size int) []byte {
	b := make([]byte, 12+size)
	binary.BigEndian.PutUint32(b, uint32(8+size))
	binary.BigEndian.PutUint32(b[4:], uint32(g))
	binary.BigEndian.PutUint32(b[8:], uint32(i))
	for j := range size {
		b[12+j] = byte(g + i + j)
	}
	return b
}

func TestWriterBatchConcurrentFramesArriveWhole(t *testing.T) {
	client, server := bwPair(t)
	w := core.NewWriterSize(client, 5*time.Second, 64<<10)
	const writers, each = 16, 500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := w.Write(bwFrame(g, i, (g*31+i*7)%3000)); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		}()
	}
	read := make(chan error, 1)
	go func() {
		br := bufio.NewReader(server)
		next := make([]int, writers)
		for n := 0; n < writers*each; n++ {
			var hdr [12]byte
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				read <- err
				return
			}
			g, i := int(binary.BigEndian.Uint32(hdr[4:])), int(binary.BigEndian.Uint32(hdr[8:]))
			body := make([]byte, binary.BigEndian.Uint32(hdr[:])-8)
			if _, err := io.ReadFull(br, body); err != nil {
				read <- err
				return
			}
			if g >= writers || i != next[g] {
				read <- fmt.Errorf("frame %d of writer %d, want %d: frames interleaved or reordered", i, g, next[g])
				return
			}
			for j, c := range body {
				if c != byte(g+i+j) {
					read <- fmt.Errorf("frame %d of writer %d corrupted at %d", i, g, j)
					return
				}
			}
			next[g]++
		}
		read <- nil
	}()
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-read:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("frames did not all arrive")
	}
	if err := w.Write([]byte("x")); !errors.Is(err, core.ErrWriterClosed) {
		t.Fatalf("write after Close: %v, want ErrWriterClosed", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// A peer that stops reading makes writes fail within the timeout instead of
// blocking, and memory stays bounded meanwhile.
func TestWriterBatchStalledPeer(t *testing.T) {
	client, _ := bwPair(t) // the server never reads
	w := core.NewWriterSize(client, 100*time.Millisecond, 1<<20)
	frame := make([]byte, 64<<10)
	done := make(chan error, 1)
	go func() {
		for {
			if err := w.Write(frame); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if !errors.Is(err, core.ErrWriterClosed) {
			t.Fatalf("error %v, want ErrWriterClosed", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("writes to a stalled peer never failed")
	}
}
