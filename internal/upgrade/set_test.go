package upgrade

import (
	"os"
	"slices"
	"testing"
)

// pipes returns n open files that the test closes.
func pipes(t *testing.T, n int) []*os.File {
	t.Helper()
	fs := make([]*os.File, n)
	for i := range fs {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		w.Close()
		fs[i] = r
	}
	return fs
}

// TestSetMessage: a Set crosses as a state message by name, laid out so
// that a msgmesh from before named files still reads it by position (mesh,
// http, the connections, then "control" first among the extras), and a
// message from such a msgmesh (no names) is read back under the same names.
func TestSetMessage(t *testing.T) {
	s := NewSet()
	t.Cleanup(s.Close)
	names := []string{"rpc/egress", "conn/1", "http", "grpc", "mesh", "conn/0", "control", "forward", "rpc/conn/0"}
	for i, f := range pipes(t, len(names)) {
		if err := s.Add(names[i], f); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Add("mesh", pipes(t, 1)[0]); err == nil {
		t.Error("a name added twice is not an error")
	}
	if err := s.SetState("msgmesh", map[string]int{"conns": 2}); err != nil {
		t.Fatal(err)
	}
	m, files := s.message()
	wantOrder := []string{"mesh", "http", "conn/0", "conn/1", "control", "rpc/egress", "grpc", "forward", "rpc/conn/0"}
	if !slices.Equal(m.Names, wantOrder) || len(files) != len(wantOrder) || m.Files != len(files) {
		t.Fatalf("names %q (%d files), want %q", m.Names, len(files), wantOrder)
	}
	if !slices.Equal(m.Extra, wantOrder[4:]) || string(m.State) != `{"conns":2}` {
		t.Fatalf("legacy layout: extra %q, state %s", m.Extra, m.State)
	}
	for i, n := range m.Names {
		if files[i] != s.files[n] {
			t.Fatalf("file %d is not %q's", i, n)
		}
	}

	// Read back by name, and as a message from before names.
	for _, legacy := range []bool{false, true} {
		in := m
		if legacy {
			in.Names, in.States = nil, nil
		}
		got, err := setFrom(in, pipes(t, len(files)))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.Names(), wantOrder) {
			t.Errorf("legacy %v: names %q, want %q", legacy, got.Names(), wantOrder)
		}
		var st map[string]int
		if ok, err := got.State("msgmesh", &st); !ok || err != nil || st["conns"] != 2 {
			t.Errorf("legacy %v: state %v %v %v", legacy, st, ok, err)
		}
		conns := got.TakePrefix("conn/")
		if len(conns) != 2 || conns["0"] == nil || conns["1"] == nil {
			t.Errorf("legacy %v: TakePrefix(conn/) = %v", legacy, conns)
		}
		for _, f := range conns {
			f.Close()
		}
		if f := got.Take("conn/0"); f != nil {
			t.Errorf("legacy %v: conn/0 taken twice", legacy)
		}
		got.Close()
	}
}
