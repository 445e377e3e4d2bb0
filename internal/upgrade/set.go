package upgrade

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/msgmesh/msgmesh/core"
)

// Set is what moves from one incarnation of the sidecar to the next: open
// files and JSON states, each under a name. A component registers what it
// can hand over under its own names when it freezes, and takes them back
// when it adopts; names it does not know are left for the others, and
// Close closes whatever nobody took.
type Set struct {
	names  []string // files, in the order they were added
	files  map[string]*os.File
	states map[string]json.RawMessage
}

// NewSet returns an empty Set.
func NewSet() *Set {
	return &Set{files: map[string]*os.File{}, states: map[string]json.RawMessage{}}
}

// Add registers f under name; the Set owns it from now on. A name given
// twice is an error (and f is closed): two components claimed it.
func (s *Set) Add(name string, f *os.File) error {
	if _, dup := s.files[name]; dup || f == nil {
		if f != nil {
			_ = f.Close()
		}
		return fmt.Errorf("upgrade: file %q added twice or nil", name)
	}
	s.names = append(s.names, name)
	s.files[name] = f
	return nil
}

// AddListener registers a duplicate of ln's socket under name; ln stays
// open and the caller still owns it.
func (s *Set) AddListener(name string, ln net.Listener) error {
	f, err := core.FileOf(ln)
	if err != nil {
		return fmt.Errorf("upgrade: listener %q: %w", name, err)
	}
	return s.Add(name, f)
}

// SetState registers v, as JSON, under name.
func (s *Set) SetState(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("upgrade: state %q: %w", name, err)
	}
	s.states[name] = b
	return nil
}

// State decodes the state registered under name into v; false if there
// is none.
func (s *Set) State(name string, v any) (bool, error) {
	b, ok := s.states[name]
	if !ok {
		return false, nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return true, fmt.Errorf("upgrade: state %q: %w", name, err)
	}
	return true, nil
}

// Take hands the file registered under name to the caller (nil if there
// is none); the Set no longer closes it.
func (s *Set) Take(name string) *os.File {
	f := s.files[name]
	if f != nil {
		delete(s.files, name)
		s.names = slices.DeleteFunc(s.names, func(n string) bool { return n == name })
	}
	return f
}

// TakePrefix hands over every file whose name starts with prefix, by name.
func (s *Set) TakePrefix(prefix string) map[string]*os.File {
	out := map[string]*os.File{}
	for _, n := range slices.Clone(s.names) {
		if strings.HasPrefix(n, prefix) {
			out[strings.TrimPrefix(n, prefix)] = s.Take(n)
		}
	}
	return out
}

// TakeListener takes the listener registered under name: nil, nil if
// there is none.
func (s *Set) TakeListener(name string) (net.Listener, error) {
	f := s.Take(name)
	if f == nil {
		return nil, nil
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("upgrade: listener %q: %w", name, err)
	}
	return ln, nil
}

// Names lists the files not taken yet, in the order they were added.
func (s *Set) Names() []string { return slices.Clone(s.names) }

// Close closes every file nobody took. The sockets live on in whoever
// holds other copies (the successor, after a handover).
func (s *Set) Close() {
	for _, n := range s.names {
		_ = s.files[n].Close()
	}
	s.names, s.files = nil, map[string]*os.File{}
}

// legacyState is the state name under which a msgmesh from before named
// files sent the sidecar's state (Msg.State).
const legacyState = "msgmesh"

// message lays the Set out as a state message and the files to send with
// it: by name, and also as a msgmesh from before named files reads it
// (mesh, http, conn/0…, then "control" first among the extras), so that
// a successor of that version still takes over.
func (s *Set) message() (Msg, []*os.File) {
	var first, rest []string
	for _, n := range []string{"mesh", "http"} {
		if _, ok := s.files[n]; ok {
			first = append(first, n)
		}
	}
	for i := 0; ; i++ {
		n := fmt.Sprintf("conn/%d", i)
		if _, ok := s.files[n]; !ok {
			break
		}
		first = append(first, n)
	}
	if _, ok := s.files["control"]; ok {
		rest = append(rest, "control")
	}
	for _, n := range s.names {
		if !slices.Contains(first, n) && !slices.Contains(rest, n) {
			rest = append(rest, n)
		}
	}
	names := slices.Concat(first, rest)
	files := make([]*os.File, len(names))
	for i, n := range names {
		files[i] = s.files[n]
	}
	return Msg{Op: OpState, Files: len(files), Names: names, States: s.states,
		State: s.states[legacyState], Extra: rest}, files
}

// setFrom rebuilds a Set from a state message and its files. A message
// without names comes from a msgmesh from before named files: its files
// are by position.
func setFrom(m Msg, files []*os.File) (*Set, error) {
	names := m.Names
	if len(names) == 0 && len(files) > 0 {
		n := len(files) - len(m.Extra)
		if n < 2 {
			return nil, fmt.Errorf("upgrade: %d files for %d extra ones", len(files), len(m.Extra))
		}
		names = []string{"mesh", "http"}
		for i := range n - 2 {
			names = append(names, fmt.Sprintf("conn/%d", i))
		}
		names = append(names, m.Extra...)
	}
	if len(names) != len(files) {
		return nil, fmt.Errorf("upgrade: %d files for %d names", len(files), len(names))
	}
	s := NewSet()
	for k, v := range m.States {
		s.states[k] = v
	}
	if _, ok := s.states[legacyState]; !ok && len(m.State) > 0 {
		s.states[legacyState] = m.State
	}
	for i, n := range names {
		if err := s.Add(n, files[i]); err != nil {
			for _, f := range files[i+1:] {
				_ = f.Close()
			}
			s.Close()
			return nil, err
		}
	}
	return s, nil
}
