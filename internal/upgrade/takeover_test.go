package upgrade

import (
	"context"
	"slices"
	"strings"
	"testing"
)

func TestSameAddr(t *testing.T) {
	for _, tc := range []struct {
		flag, bound string
		want        bool
	}{
		{"127.0.0.1:7600", "127.0.0.1:7600", true},
		{"localhost:7600", "127.0.0.1:7600", true},
		{"127.0.0.1:7601", "127.0.0.1:7600", false},
		{"127.0.0.2:7600", "127.0.0.1:7600", false},
		{"0.0.0.0:7602", "0.0.0.0:7602", true},
		{":7602", "[::]:7602", true},
		{"0.0.0.0:7602", "[::]:7602", true},
		{"[::]:7602", "0.0.0.0:7602", true},
		{":7602", "127.0.0.1:7602", false},
		{"127.0.0.1:0", "127.0.0.1:43120", true}, // port 0: any port
		{"127.0.0.1:0", "10.0.0.1:43120", false},
		{"[::1]:7600", "[::1]:7600", true},
		{"[::ffff:127.0.0.1]:7600", "127.0.0.1:7600", true},
		{"no-such-host.invalid:7600", "127.0.0.1:7600", false},
		{"127.0.0.1", "127.0.0.1:7600", false}, // not host:port
	} {
		if got := SameAddr(context.Background(), tc.flag, tc.bound); got != tc.want {
			t.Errorf("SameAddr(%q, %q) = %v, want %v", tc.flag, tc.bound, got, tc.want)
		}
	}
}

// TestDiffering: only listeners that move to the successor are compared,
// each differing one is named with its flag and both addresses, in a
// fixed order.
func TestDiffering(t *testing.T) {
	running := map[string]string{"mesh": "127.0.0.1:7600", "http": "127.0.0.1:7601", "forwarding": "0.0.0.0:7602", "rpc egress": "127.0.0.1:7700"}
	for _, tc := range []struct {
		name string
		want map[string]string
		diff []string // the flags named
	}{
		{"same", map[string]string{"mesh": "127.0.0.1:7600", "http": "localhost:7601", "forwarding": ":7602"}, nil},
		{"no forwarding here", map[string]string{"mesh": "127.0.0.1:7600", "http": "127.0.0.1:7601"}, nil},
		{"forwarding here only", map[string]string{"mesh": "127.0.0.1:7600", "http": "127.0.0.1:7601", "forwarding": "0.0.0.0:9999"}, []string{"--forward-listen"}},
		{"all three", map[string]string{"mesh": "127.0.0.1:1", "http": "127.0.0.1:2", "forwarding": "127.0.0.1:3"}, []string{"--listen", "--http", "--forward-listen"}},
	} {
		got := differing(context.Background(), tc.want, running)
		var flags []string
		for _, d := range got {
			flags = append(flags, strings.Fields(d)[0])
			if !strings.Contains(d, "the running msgmesh's") {
				t.Errorf("%s: %q does not name the running address", tc.name, d)
			}
		}
		if !slices.Equal(flags, tc.diff) {
			t.Errorf("%s: differing = %q, want flags %q", tc.name, got, tc.diff)
		}
	}
	// Only a running forwarding listener is inherited: without one, this
	// process opens its own at its flag's address.
	if got := differing(context.Background(), map[string]string{"forwarding": "127.0.0.1:3"}, map[string]string{"mesh": "127.0.0.1:7600"}); len(got) != 0 {
		t.Errorf("differing with no running forwarding listener = %q", got)
	}
}
