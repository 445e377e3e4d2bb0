package broker_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/msgmesh/msgmesh/broker"
)

func TestOpen(t *testing.T) {
	var o broker.Open[int]
	added := 0
	for _, c := range []int{1, 2, 3} {
		if !o.Add(c, func() { added++ }) {
			t.Fatalf("Add(%d) refused while open", c)
		}
	}
	o.Remove(2)
	o.Remove(7) // unknown: nothing
	if o.Closed() {
		t.Fatal("closed before Close")
	}
	open, first := o.Close()
	slices.Sort(open)
	if !first || !slices.Equal(open, []int{1, 3}) || added != 3 {
		t.Fatalf("Close: %v first=%v (also ran %d times), want [1 3] true 3", open, first, added)
	}
	if open, first := o.Close(); first || len(open) != 0 {
		t.Fatalf("second Close: %v %v, want none and not first", open, first)
	}
	if o.Add(4, func() { t.Error("also ran on a closed Open") }) {
		t.Fatal("Add after Close accepted")
	}
}

func TestCheckPublish(t *testing.T) {
	topicOK := func(s string) error {
		if s == "bad topic" {
			return errors.New("no spaces")
		}
		return nil
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	var open, closed broker.Open[int]
	closed.Close()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		o    *broker.Open[int]
		msg  *broker.Message
		want error
	}{
		{"ok", context.Background(), &open, &broker.Message{Topic: "t"}, nil},
		{"nil message", context.Background(), &open, nil, broker.ErrRejected},
		{"ctx done", cancelled, &open, &broker.Message{Topic: "t"}, context.Canceled},
		{"closed", context.Background(), &closed, &broker.Message{Topic: "t"}, broker.ErrClosed},
		{"bad topic", context.Background(), &open, &broker.Message{Topic: "bad topic"}, broker.ErrRejected},
	} {
		err := broker.CheckPublish(tc.ctx, "x", tc.o, tc.msg, topicOK)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}
