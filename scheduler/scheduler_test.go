package scheduler

import (
	"fmt"
	"math"
	"sync"
	"testing"
)

// counts runs n broker decisions and tallies them by outcome ("local" or a
// sibling id); a decision with not exactly one field set counts as "bad",
// which no test expects.
func counts(s *Scheduler, n int) map[string]int {
	c := make(map[string]int)
	for range n {
		d := s.Decide(false)
		switch {
		case d.Local == (d.Sibling != ""):
			c["bad"]++
		case d.Local:
			c["local"]++
		default:
			c[d.Sibling]++
		}
	}
	return c
}

// checkOne fails if d does not have exactly one of its fields set.
func checkOne(t testing.TB, d Decision) {
	t.Helper()
	if d.Local == (d.Sibling != "") {
		t.Fatalf("decision %+v: want exactly one of Local and Sibling", d)
	}
}

func TestRules(t *testing.T) {
	const n = 10_000
	tests := []struct {
		name      string
		self      string
		update    bool // false: no Update at all
		instances []Instance
		// want maps an outcome to its expected share in percent; outcomes
		// not listed must not occur.
		want map[string]float64
	}{
		{
			name: "no table yet: local",
			self: "a:7602",
			want: map[string]float64{"local": 100},
		},
		{
			name:      "self weight 100: local",
			self:      "a:7602",
			update:    true,
			instances: []Instance{{ID: "a:7602", Weight: 100}, {ID: "b:7602", Weight: 100}},
			want:      map[string]float64{"local": 100},
		},
		{
			name:      "self not in the list counts as 100",
			self:      "a:7602",
			update:    true,
			instances: []Instance{{ID: "b:7602", Weight: 100}, {ID: "c:7602", Weight: 0}},
			want:      map[string]float64{"local": 100},
		},
		{
			name:      "empty list: local",
			self:      "a:7602",
			update:    true,
			instances: nil,
			want:      map[string]float64{"local": 100},
		},
		{
			name:      "weight 30, one sibling",
			self:      "a:7602",
			update:    true,
			instances: []Instance{{ID: "a:7602", Weight: 30}, {ID: "b:7602", Weight: 100}},
			want:      map[string]float64{"local": 30, "b:7602": 70},
		},
		{
			name:   "weight 30, two siblings at 100 share the rest evenly, others get nothing",
			self:   "a:7602",
			update: true,
			instances: []Instance{
				{ID: "a:7602", Weight: 30}, {ID: "b:7602", Weight: 100}, {ID: "c:7602", Weight: 100}, {ID: "d:7602", Weight: 50}, {ID: "e:7602", Weight: 0},
			},
			want: map[string]float64{"local": 30, "b:7602": 35, "c:7602": 35},
		},
		{
			name:   "weight 1 with three siblings",
			self:   "a:7602",
			update: true,
			instances: []Instance{
				{ID: "a:7602", Weight: 1}, {ID: "b:7602", Weight: 100}, {ID: "c:7602", Weight: 100}, {ID: "d:7602", Weight: 100},
			},
			want: map[string]float64{"local": 1, "b:7602": 33, "c:7602": 33, "d:7602": 33},
		},
		{
			name:      "weight 99",
			self:      "a:7602",
			update:    true,
			instances: []Instance{{ID: "a:7602", Weight: 99}, {ID: "b:7602", Weight: 100}},
			want:      map[string]float64{"local": 99, "b:7602": 1},
		},
		{
			name:      "weight 0 drains to the weight-100 siblings",
			self:      "a:7602",
			update:    true,
			instances: []Instance{{ID: "a:7602", Weight: 0}, {ID: "b:7602", Weight: 100}, {ID: "c:7602", Weight: 100}},
			want:      map[string]float64{"b:7602": 50, "c:7602": 50},
		},
		{
			name:      "weight 0 with no weight-100 sibling: local",
			self:      "a:7602",
			update:    true,
			instances: []Instance{{ID: "a:7602", Weight: 0}, {ID: "b:7602", Weight: 99}, {ID: "c:7602", Weight: 0}},
			want:      map[string]float64{"local": 100},
		},
		{
			name:      "weight 0 alone: local",
			self:      "a:7602",
			update:    true,
			instances: []Instance{{ID: "a:7602", Weight: 0}},
			want:      map[string]float64{"local": 100},
		},
		{
			name:      "all siblings below 100: local",
			self:      "a:7602",
			update:    true,
			instances: []Instance{{ID: "a:7602", Weight: 50}, {ID: "b:7602", Weight: 50}, {ID: "c:7602", Weight: 99}},
			want:      map[string]float64{"local": 100},
		},
		{
			name:      "negative weight clamps to 0",
			self:      "a:7602",
			update:    true,
			instances: []Instance{{ID: "a:7602", Weight: -20}, {ID: "b:7602", Weight: 100}},
			want:      map[string]float64{"b:7602": 100},
		},
		{
			name:      "weight over 100 clamps to 100, for self and for siblings",
			self:      "a:7602",
			update:    true,
			instances: []Instance{{ID: "a:7602", Weight: 40}, {ID: "b:7602", Weight: 250}},
			want:      map[string]float64{"local": 40, "b:7602": 60},
		},
		{
			name:      "duplicate id: the last entry wins",
			self:      "a:7602",
			update:    true,
			instances: []Instance{{ID: "a:7602", Weight: 100}, {ID: "b:7602", Weight: 100}, {ID: "a:7602", Weight: 50}, {ID: "b:7602", Weight: 0}, {ID: "b:7602", Weight: 100}},
			want:      map[string]float64{"local": 50, "b:7602": 50},
		},
		{
			name:      "empty ids are ignored",
			self:      "a:7602",
			update:    true,
			instances: []Instance{{ID: "a:7602", Weight: 0}, {ID: "", Weight: 100}},
			want:      map[string]float64{"local": 100},
		},
		{
			name:   "an offline sibling gets nothing; its online peers share the rest",
			self:   "a:7602",
			update: true,
			instances: []Instance{{ID: "a:7602", Weight: 40}, {ID: "b:7602", Weight: 100, Offline: true},
				{ID: "c:7602", Weight: 100}, {ID: "d:7602", Weight: 100}},
			want: map[string]float64{"local": 40, "c:7602": 30, "d:7602": 30},
		},
		{
			name:      "only offline siblings at 100: local",
			self:      "a:7602",
			update:    true,
			instances: []Instance{{ID: "a:7602", Weight: 0}, {ID: "b:7602", Weight: 100, Offline: true}},
			want:      map[string]float64{"local": 100},
		},
		{
			name:      "this node's own weight applies though it is marked offline",
			self:      "a:7602",
			update:    true,
			instances: []Instance{{ID: "a:7602", Weight: 20, Offline: true}, {ID: "b:7602", Weight: 100}},
			want:      map[string]float64{"local": 20, "b:7602": 80},
		},
		{
			name:      "empty self never matches an instance",
			self:      "",
			update:    true,
			instances: []Instance{{ID: "", Weight: 0}, {ID: "b:7602", Weight: 100}},
			want:      map[string]float64{"local": 100},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := New(tt.self)
			if tt.update {
				s.Update(tt.instances)
			}
			if fwd := tt.want["local"] < 100; s.Forwarding() != fwd {
				t.Errorf("Forwarding() = %v, want %v", s.Forwarding(), fwd)
			}
			got := counts(s, n)
			for k, v := range got {
				share, ok := tt.want[k]
				if !ok {
					t.Errorf("%d decisions went to %q, want none", v, k)
					continue
				}
				// ±1 delivery, far inside the ±1 point the design allows.
				if exp := share / 100 * n; math.Abs(float64(v)-exp) > 1 {
					t.Errorf("%q got %d of %d decisions, want %.0f ± 1", k, v, n, exp)
				}
			}
			for k, share := range tt.want {
				if share > 0 && got[k] == 0 {
					t.Errorf("%q got no decisions, want %v%%", k, share)
				}
			}
			// A delivery from a sibling is never forwarded, whatever the table.
			for range 100 {
				if d := s.Decide(true); !d.Local || d.Sibling != "" {
					t.Fatalf("Decide(fromSibling) = %+v, want local", d)
				}
			}
		})
	}
}

// The split is smooth, not only right on average: any 100 consecutive
// decisions keep exactly w local, and forwarded ones rotate over siblings.
func TestSmoothSplit(t *testing.T) {
	s := New("self")
	s.Update([]Instance{{ID: "self", Weight: 30}, {ID: "b", Weight: 100}, {ID: "c", Weight: 100}})
	ds := make([]Decision, 1000)
	for i := range ds {
		ds[i] = s.Decide(false)
	}
	for start := 0; start+100 <= len(ds); start++ {
		n := 0
		for _, d := range ds[start : start+100] {
			if d.Local {
				n++
			}
		}
		if n != 30 {
			t.Fatalf("decisions %d..%d: %d local, want 30", start, start+99, n)
		}
	}
	var fwd []string
	for _, d := range ds {
		if !d.Local {
			fwd = append(fwd, d.Sibling)
		}
	}
	for i := 1; i < len(fwd); i++ {
		if fwd[i] == fwd[i-1] {
			t.Fatalf("forwarded decisions %d and %d both went to %s; want them to alternate", i-1, i, fwd[i])
		}
	}
}

func TestWeight(t *testing.T) {
	s := New("self")
	if w := s.Weight(); w != 100 {
		t.Errorf("Weight before Update = %d, want 100", w)
	}
	s.Update([]Instance{{ID: "self", Weight: 30}})
	if w := s.Weight(); w != 30 {
		t.Errorf("Weight = %d, want 30", w)
	}
	s.Update([]Instance{{ID: "b", Weight: 0}})
	if w := s.Weight(); w != 100 {
		t.Errorf("Weight when absent = %d, want 100", w)
	}
}

func TestWeightsChangeMidStream(t *testing.T) {
	const n = 10_000
	s := New("self")
	phases := []struct {
		instances []Instance
		want      map[string]float64
	}{
		{[]Instance{{ID: "self", Weight: 30}, {ID: "b", Weight: 100}}, map[string]float64{"local": 30, "b": 70}},
		{[]Instance{{ID: "self", Weight: 70}, {ID: "b", Weight: 100}, {ID: "c", Weight: 100}}, map[string]float64{"local": 70, "b": 15, "c": 15}},
		{[]Instance{{ID: "self", Weight: 0}, {ID: "b", Weight: 50}, {ID: "c", Weight: 100}}, map[string]float64{"c": 100}},
		{[]Instance{{ID: "self", Weight: 0}, {ID: "b", Weight: 50}}, map[string]float64{"local": 100}},
		{[]Instance{{ID: "b", Weight: 100}}, map[string]float64{"local": 100}},
		{[]Instance{{ID: "self", Weight: 25}, {ID: "d", Weight: 100}, {ID: "e", Weight: 100}, {ID: "f", Weight: 100}}, map[string]float64{"local": 25, "d": 25, "e": 25, "f": 25}},
	}
	for i, ph := range phases {
		s.Update(ph.instances)
		got := counts(s, n)
		for k, v := range got {
			share, ok := ph.want[k]
			if !ok {
				t.Errorf("phase %d: %d decisions went to %q, want none", i, v, k)
				continue
			}
			if exp := share / 100 * n; math.Abs(float64(v)-exp) > 1 {
				t.Errorf("phase %d: %q got %d of %d, want %.0f ± 1", i, k, v, n, exp)
			}
		}
	}
}

func TestNext(t *testing.T) {
	s := New("self")
	s.Update([]Instance{{ID: "self", Weight: 0}, {ID: "b", Weight: 100}, {ID: "c", Weight: 100}, {ID: "d", Weight: 100}})

	t.Run("empty exclude is Decide", func(t *testing.T) {
		got := make(map[string]int)
		for range 300 {
			d := s.Next(false, nil)
			checkOne(t, d)
			got[d.Sibling]++
		}
		for _, id := range []string{"b", "c", "d"} {
			if got[id] != 100 {
				t.Errorf("Next(nil) sent %d of 300 to %s, want 100 (%v)", got[id], id, got)
			}
		}
	})
	t.Run("skips failed siblings and spreads over the rest", func(t *testing.T) {
		got := make(map[string]int)
		for range 200 {
			d := s.Next(false, map[string]bool{"c": true})
			checkOne(t, d)
			got[d.String()]++
		}
		if got["sibling b"] != 100 || got["sibling d"] != 100 || len(got) != 2 {
			t.Errorf("Next(exclude c) = %v, want b and d 100 each", got)
		}
	})
	t.Run("all failed: local", func(t *testing.T) {
		d := s.Next(false, map[string]bool{"b": true, "c": true, "d": true})
		if !d.Local {
			t.Errorf("Next(exclude all) = %v, want local", d)
		}
	})
	t.Run("excluding unknown ids changes nothing", func(t *testing.T) {
		d := s.Next(false, map[string]bool{"zzz": true})
		if d.Local {
			t.Errorf("Next(exclude zzz) = %v, want a sibling", d)
		}
	})
	t.Run("from a sibling: local", func(t *testing.T) {
		if d := s.Next(true, map[string]bool{"b": true}); !d.Local {
			t.Errorf("Next(fromSibling) = %v, want local", d)
		}
	})
	t.Run("table now keeps all: local", func(t *testing.T) {
		s2 := New("self")
		s2.Update([]Instance{{ID: "self", Weight: 100}, {ID: "b", Weight: 100}})
		if d := s2.Next(false, map[string]bool{"c": true}); !d.Local {
			t.Errorf("Next with weight 100 = %v, want local", d)
		}
	})
}

// With a fixed table the counter makes the total exact even when many
// goroutines decide at once; a concurrent Update is never seen half done.
func TestConcurrent(t *testing.T) {
	const goroutines, per = 8, 10_000
	t.Run("fixed table: exact totals", func(t *testing.T) {
		s := New("self")
		s.Update([]Instance{{ID: "self", Weight: 30}, {ID: "b", Weight: 100}, {ID: "c", Weight: 100}})
		var mu sync.Mutex
		total := make(map[string]int)
		var wg sync.WaitGroup
		for range goroutines {
			wg.Go(func() {
				c := counts(s, per)
				mu.Lock()
				for k, v := range c {
					total[k] += v
				}
				mu.Unlock()
			})
		}
		wg.Wait()
		n := goroutines * per
		if total["bad"] != 0 {
			t.Errorf("%d malformed decisions", total["bad"])
		}
		if total["local"] != n*30/100 {
			t.Errorf("local = %d of %d, want exactly %d", total["local"], n, n*30/100)
		}
		if d := total["b"] - total["c"]; d < -1 || d > 1 {
			t.Errorf("b = %d, c = %d: want equal ± 1", total["b"], total["c"])
		}
	})
	t.Run("updates racing with decisions", func(t *testing.T) {
		s := New("self")
		tables := [][]Instance{
			{{ID: "self", Weight: 30}, {ID: "b", Weight: 100}, {ID: "c", Weight: 100}},
			{{ID: "self", Weight: 0}, {ID: "d", Weight: 100}},
			{{ID: "self", Weight: 100}, {ID: "b", Weight: 100}},
		}
		valid := map[string]bool{"local": true, "b": true, "c": true, "d": true}
		stop := make(chan struct{})
		var updater sync.WaitGroup
		updater.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				s.Update(tables[i%len(tables)])
			}
		})
		var wg sync.WaitGroup
		errs := make(chan string, goroutines)
		for range goroutines {
			wg.Go(func() {
				for range per {
					d := s.Next(false, map[string]bool{"c": true})
					if d.Local == (d.Sibling != "") {
						errs <- fmt.Sprintf("bad decision %+v", d)
						return
					}
					if d.Sibling == "c" || (!d.Local && !valid[d.Sibling]) {
						errs <- fmt.Sprintf("decision %+v: not allowed", d)
						return
					}
					if d := s.Decide(false); !d.Local && !valid[d.Sibling] {
						errs <- fmt.Sprintf("decision %+v: unknown sibling", d)
						return
					}
				}
			})
		}
		wg.Wait()
		close(stop)
		updater.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	})
}

// The arithmetic must not overflow even after 2^64/100 decisions.
func TestLocalsBeforeNoOverflow(t *testing.T) {
	for _, k := range []uint64{0, 1, 99, 100, 101, 1 << 40, math.MaxUint64 / 100, math.MaxUint64 - 1} {
		for _, w := range []uint64{0, 1, 30, 99, 100} {
			got := localsBefore(k, w)
			// floor(k*w/100) in 128-bit terms: compare with big-free reasoning
			// on the decomposition k = 100q + r.
			q, r := k/100, k%100
			want := q*w + r*w/100
			if got != want || got > k {
				t.Fatalf("localsBefore(%d, %d) = %d, want %d", k, w, got, want)
			}
		}
	}
	// Local ticks stay exactly 30 in every hundred near the top of the range.
	s := New("self")
	s.Update([]Instance{{ID: "self", Weight: 30}, {ID: "b", Weight: 100}})
	s.ticks.Store(math.MaxUint64 - 250)
	n := 0
	for range 200 {
		if s.Decide(false).Local {
			n++
		}
	}
	if n < 59 || n > 61 {
		t.Errorf("near the counter's end: %d of 200 local, want 60 ± 1", n)
	}
}

func BenchmarkDecide(b *testing.B) {
	s := New("self")
	s.Update([]Instance{{ID: "self", Weight: 30}, {ID: "b", Weight: 100}, {ID: "c", Weight: 100}, {ID: "d", Weight: 100}})
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = s.Decide(false)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				_ = s.Decide(false)
			}
		})
	})
	b.Run("keep-all", func(b *testing.B) {
		s := New("self")
		s.Update([]Instance{{ID: "self", Weight: 100}, {ID: "b", Weight: 100}})
		b.ReportAllocs()
		for b.Loop() {
			_ = s.Decide(false)
		}
	})
}

// Changed is closed by the next Update, and only by it: a reader that
// waits for local room also waits on it, so that a weight change (to 0,
// say) makes it look again.
func TestChanged(t *testing.T) {
	s := New("a")
	ch := s.Changed()
	select {
	case <-ch:
		t.Fatal("Changed closed before any Update")
	default:
	}
	s.Update([]Instance{{ID: "a", Weight: 0}, {ID: "b", Weight: 100}})
	select {
	case <-ch:
	default:
		t.Fatal("Update did not close the channel Changed returned before it")
	}
	if !s.Forwarding() {
		t.Fatal("weight 0 with a sibling at 100 is not forwarding")
	}
	next := s.Changed()
	select {
	case <-next:
		t.Fatal("the channel after the Update is closed already")
	default:
	}
}
