// Package slowclient is the abusive HTTP client the limits tests use
// against real servers: it trickles a request's headers or body one byte
// at a time (slowloris) or holds a keep-alive connection idle, and reports
// how long the server took to close the connection. It exists so the
// sidecar's and the control plane's tests probe their servers the same
// way.
package slowclient

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// ErrStillOpen: the server kept the connection open past the test's bound.
var ErrStillOpen = errors.New("slowclient: the server kept the connection open")

// SlowHeaders connects to addr and sends a request's headers one byte
// every interval, without ever finishing them. It returns how long the
// server took to close the connection, or ErrStillOpen after bound.
func SlowHeaders(addr string, every, bound time.Duration) (time.Duration, error) {
	head := "GET /healthz HTTP/1.1\r\nHost: " + addr + "\r\nX-Slow: " + strings.Repeat("a", 1<<16)
	return trickle(addr, "", head, every, bound)
}

// SlowBody connects to addr and POSTs to path with complete headers that
// announce a 1 MiB body, then sends the body one byte every interval. It
// returns how long (from the first body byte) the server took to close
// the connection, or ErrStillOpen after bound.
func SlowBody(addr, path string, every, bound time.Duration) (time.Duration, error) {
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", path, addr, 1<<20)
	return trickle(addr, head, strings.Repeat("1", 1<<20), every, bound)
}

// IdleKeepAlive connects to addr, makes one complete GET of path, reads
// the answer and then holds the keep-alive connection idle. It returns how
// long after the answer the server closed the connection, or ErrStillOpen
// after bound.
func IdleKeepAlive(addr, path string, bound time.Duration) (time.Duration, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, addr); err != nil {
		return 0, err
	}
	_ = c.SetReadDeadline(time.Now().Add(bound))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, fmt.Errorf("slowclient: reading the answer: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.Close {
		return 0, fmt.Errorf("slowclient: the server did not keep the connection alive (HTTP %d)", resp.StatusCode)
	}
	start := time.Now()
	return waitClosed(br, start, bound)
}

// trickle sends head at once, then slow one byte every interval, and waits
// for the server to close the connection.
func trickle(addr, head, slow string, every, bound time.Duration) (time.Duration, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if head != "" {
		if _, err := io.WriteString(c, head); err != nil {
			return 0, err
		}
	}
	start := time.Now()
	stop := make(chan struct{})
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		t := time.NewTicker(every)
		defer t.Stop()
		for i := 0; i < len(slow); i++ {
			if _, err := c.Write([]byte{slow[i]}); err != nil {
				return // closed by the server
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	_ = c.SetReadDeadline(start.Add(bound))
	d, err := waitClosed(bufio.NewReader(c), start, bound)
	close(stop)
	_ = c.Close()
	<-wrote
	return d, err
}

// waitClosed reads (and drops) whatever the server sends, an error answer
// say, until the connection ends; the read deadline must be set.
func waitClosed(r io.Reader, start time.Time, bound time.Duration) (time.Duration, error) {
	_, err := io.Copy(io.Discard, r)
	d := time.Since(start)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return d, fmt.Errorf("%w after %s", ErrStillOpen, bound)
	}
	return d, nil // EOF or a reset: closed
}

// Probe is one abuse of a server, for a table of subtests.
type Probe struct {
	Name string
	// Run abuses the server and returns how long it took to close the
	// connection, or an error wrapping ErrStillOpen.
	Run func() (time.Duration, error)
}

// Probes returns the three abuses of the server at addr: headers and a
// body to postPath trickled one byte every interval, and an idle
// keep-alive connection after a GET of getPath; each gives up after bound.
func Probes(addr, postPath, getPath string, every, bound time.Duration) []Probe {
	return []Probe{
		{"slow headers", func() (time.Duration, error) { return SlowHeaders(addr, every, bound) }},
		{"slow body", func() (time.Duration, error) { return SlowBody(addr, postPath, every, bound) }},
		{"idle keep-alive", func() (time.Duration, error) { return IdleKeepAlive(addr, getPath, bound) }},
	}
}

// Check runs probes as parallel subtests of t; each fails if the server
// kept its connection open, and logs how long the server took otherwise.
func Check(t *testing.T, probes []Probe) {
	t.Helper()
	for _, p := range probes {
		t.Run(p.Name, func(t *testing.T) {
			t.Parallel()
			d, err := p.Run()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("closed by the server after %s", d.Round(time.Millisecond))
		})
	}
}
