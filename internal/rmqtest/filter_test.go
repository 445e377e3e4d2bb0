package rmqtest

import (
	"log/slog"
	"testing"
)

// TestTagFilterAtTheBroker: a pull that carries a TAG subscription gets
// only the messages whose tags it names (by hash code, as RocketMQ's
// consume queue compares them), and a pull over non-matching messages only
// answers "no match" with the offset past them, so the client moves on.
func TestTagFilterAtTheBroker(t *testing.T) {
	s := newStore(Config{QueuesPerTopic: 1}, hostPort{}, slog.New(slog.DiscardHandler))
	s.ensureTopic("t")
	for _, tag := range []string{"TagB", "", "TagA", "TagC", "TagA"} {
		props := map[string]string{}
		if tag != "" {
			props[propTags] = tag
		}
		if _, err := s.putAll([]*putRequest{{topic: "t", body: []byte(tag), props: props}}); err != nil {
			t.Fatal(err)
		}
	}
	read := func(res pullResult) []string {
		var tags []string
		for b := res.body; len(b) > 0; {
			m, n, err := decodeRecord(b)
			if err != nil {
				t.Fatal(err)
			}
			tags = append(tags, parseProperties(m.Properties)[propTags])
			b = b[n:]
		}
		return tags
	}
	res := s.get("t", 0, 0, 32, parseTagFilter("TagA || TagC"))
	if got := read(res); res.status != pullFound || len(got) != 3 || got[0] != "TagA" || got[1] != "TagC" || got[2] != "TagA" || res.next != 5 {
		t.Errorf("TagA || TagC: status %d, tags %v, next %d; want found, [TagA TagC TagA], 5", res.status, got, res.next)
	}
	if res := s.get("t", 0, 0, 1, parseTagFilter("TagB")); res.status != pullFound || res.next != 1 {
		t.Errorf("TagB from 0: status %d next %d", res.status, res.next)
	}
	if res := s.get("t", 0, 1, 32, parseTagFilter("TagB")); res.status != pullNoMatch || res.next != 5 || len(res.body) != 0 {
		t.Errorf("TagB from 1: status %d next %d, %d bytes; want no match, 5, none", res.status, res.next, len(res.body))
	}
	if got := read(s.get("t", 0, 0, 32, parseTagFilter(" * "))); len(got) != 5 {
		t.Errorf("*: %d messages, want 5", len(got))
	}
}
