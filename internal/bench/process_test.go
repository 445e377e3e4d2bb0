package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"testing"

	"github.com/msgmesh/msgmesh/internal/freeport"
)

// TestMain lets the test binary stand in for a broker or sidecar child:
// with BENCH_TEST_LISTEN set it binds that address as they do, printing
// the bind error to stderr and exiting 1 when the port is taken.
func TestMain(m *testing.M) {
	if addr := os.Getenv("BENCH_TEST_LISTEN"); addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		<-sig // serves until the bench's close signals it
		ln.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestWithFreshPortsRetriesATakenPort starts a real child on a port a
// listener already holds (what happens when another socket takes a port
// between freeport's pick and the child's bind): the start is tried
// again on a fresh port, and gives up after four tries.
func TestWithFreshPortsRetriesATakenPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { taken.Close() })

	for _, tc := range []struct {
		name         string
		takenTries   int // how many first tries get the taken port
		wantTries    int
		wantInUseErr bool
	}{
		{name: "second try binds", takenTries: 1, wantTries: 2},
		{name: "gives up", takenTries: 10, wantTries: 4, wantInUseErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tries := 0
			c, err := withFreshPorts(func() (*child, error) {
				tries++
				// On the taken port the holder would answer a dial, so
				// the child is never ready there: only its exit ends
				// the try.
				addr := taken.Addr().String()
				ready := func(context.Context) error { return errors.New("not the child's port") }
				if tries > tc.takenTries {
					if addr, err = freeport.Addr(); err != nil {
						return nil, err
					}
					ready = listening(addr)
				}
				t.Setenv("BENCH_TEST_LISTEN", addr)
				return startChild(context.Background(), os.Args[0], nil, ready)
			})
			if tries != tc.wantTries {
				t.Errorf("tried %d times, want %d", tries, tc.wantTries)
			}
			if tc.wantInUseErr {
				if !errors.Is(err, errAddrInUse) {
					t.Fatalf("err = %v, want errAddrInUse", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c.close()
		})
	}
}
