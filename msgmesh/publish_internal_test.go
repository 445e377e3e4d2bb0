package msgmesh

import (
	"testing"
	"time"
)

// TestSharedDeadlines: a mesh publish's context ends no earlier than the
// publish timeout after the publish starts and at most the slack later;
// publishes starting within one slack share a context, later ones get the
// next.
func TestSharedDeadlines(t *testing.T) {
	const timeout = 2 * time.Second
	d := newDeadlines(timeout)
	if d.slack != timeout/100 {
		t.Fatalf("slack %s, want %s", d.slack, timeout/100)
	}
	first := d.get()
	for limit := time.Now().Add(10 * time.Second); ; {
		before := time.Now()
		ctx := d.get()
		after := time.Now()
		dl, ok := ctx.Deadline()
		if !ok {
			t.Fatal("no deadline")
		}
		if dl.Sub(before) < timeout || dl.Sub(after) > timeout+d.slack {
			t.Fatalf("deadline %s after the publish started, want within [%s, %s]", dl.Sub(before), timeout, timeout+d.slack)
		}
		if ctx != first {
			break // the slack passed: a new shared context
		}
		if time.Now().After(limit) {
			t.Fatal("the first context still served publishes 10 s later")
		}
	}
	if a, b := d.get(), d.get(); a != b {
		t.Error("two publishes one after the other got different contexts")
	}
}
