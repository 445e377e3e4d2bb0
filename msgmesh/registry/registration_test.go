package registry

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func b(group, topic string) Binding { return Binding{Group: group, Topic: topic} }

func TestValidate(t *testing.T) {
	long := func(n int) string { return strings.Repeat("a", n) }
	tests := []struct {
		name  string
		reg   Registration
		field string // "-" means valid
	}{
		{"produce only", Registration{App: "orders", Produce: []Binding{b("p1", "orders.created")}}, "-"},
		{"consume only", Registration{App: "orders", Consume: []Binding{b("g1", "orders.created")}}, "-"},
		{"both, same binding in each list", Registration{App: "a", Produce: []Binding{b("g", "t")}, Consume: []Binding{b("g", "t")}}, "-"},
		{"max lengths", Registration{App: long(128), Consume: []Binding{b(long(128), long(249))}}, "-"},
		{"name punctuation", Registration{App: "A-b_c.9", Consume: []Binding{b("9.g-_", "_a-b.c_d.-e")}}, "-"},
		{"same group, two topics", Registration{App: "a", Consume: []Binding{b("g", "t1"), b("g", "t2")}}, "-"},

		{"push on produce", Registration{App: "a", Produce: []Binding{{Group: "g", Topic: "t", PushURL: "http://127.0.0.1/x"}}}, "produce[0].push_url"},
		{"push with a bad url", Registration{App: "a", Consume: []Binding{b("g", "t"), {Group: "g", Topic: "u", PushURL: "127.0.0.1:80"}}}, "consume[1].push_url"},

		{"empty app", Registration{App: "", Consume: []Binding{b("g", "t")}}, "app"},
		{"app too long", Registration{App: long(129), Consume: []Binding{b("g", "t")}}, "app"},
		{"app starts with dot", Registration{App: ".a", Consume: []Binding{b("g", "t")}}, "app"},
		{"app starts with dash", Registration{App: "-a", Consume: []Binding{b("g", "t")}}, "app"},
		{"app with space", Registration{App: "my app", Consume: []Binding{b("g", "t")}}, "app"},
		{"app with slash", Registration{App: "a/b", Consume: []Binding{b("g", "t")}}, "app"},
		{"app non-ASCII", Registration{App: "café", Consume: []Binding{b("g", "t")}}, "app"},
		{"no bindings", Registration{App: "a"}, ""},
		{"empty binding lists", Registration{App: "a", Produce: []Binding{}, Consume: []Binding{}}, ""},
		{"empty produce group", Registration{App: "a", Produce: []Binding{b("", "t")}}, "produce[0].group"},
		{"bad consume group", Registration{App: "a", Consume: []Binding{b("g", "t"), b("g:1", "t")}}, "consume[1].group"},
		{"group too long", Registration{App: "a", Consume: []Binding{b(long(129), "t")}}, "consume[0].group"},
		{"empty topic", Registration{App: "a", Consume: []Binding{b("g", "")}}, "consume[0].topic"},
		{"topic too long", Registration{App: "a", Produce: []Binding{b("g", long(250))}}, "produce[0].topic"},
		{"topic leading dot", Registration{App: "a", Consume: []Binding{b("g", ".t")}}, "consume[0].topic"},
		{"topic trailing dot", Registration{App: "a", Consume: []Binding{b("g", "t.")}}, "consume[0].topic"},
		{"topic double dot", Registration{App: "a", Consume: []Binding{b("g", "a..b")}}, "consume[0].topic"},
		{"topic dot only", Registration{App: "a", Consume: []Binding{b("g", ".")}}, "consume[0].topic"},
		{"topic wildcard", Registration{App: "a", Consume: []Binding{b("g", "orders.*")}}, "consume[0].topic"},
		{"topic space", Registration{App: "a", Consume: []Binding{b("g", "orders created")}}, "consume[0].topic"},
		{"third consume topic", Registration{App: "a", Consume: []Binding{b("g", "t1"), b("g", "t2"), b("g", "t 3")}}, "consume[2].topic"},
		{"duplicate produce", Registration{App: "a", Produce: []Binding{b("p", "t"), b("p", "u"), b("p", "t")}}, "produce[2]"},
		{"duplicate consume", Registration{App: "a", Consume: []Binding{b("g", "t"), b("g", "t")}}, "consume[1]"},
		{"produce checked before consume", Registration{App: "a", Produce: []Binding{b("p", "")}, Consume: []Binding{b("", "t")}}, "produce[0].topic"},

		{"dead-letter policy", Registration{App: "a", Consume: []Binding{{Group: "g", Topic: "t", MaxAttempts: 3, DeadLetterTopic: "t.poison"}}}, "-"},
		{"max attempts at the limit", Registration{App: "a", Consume: []Binding{{Group: "g", Topic: "t", MaxAttempts: MaxAttemptsLimit}}}, "-"},
		{"max attempts over the limit", Registration{App: "a", Consume: []Binding{{Group: "g", Topic: "t", MaxAttempts: MaxAttemptsLimit + 1}}}, "consume[0].max_attempts"},
		{"negative max attempts", Registration{App: "a", Consume: []Binding{b("g", "t"), {Group: "g", Topic: "u", MaxAttempts: -1}}}, "consume[1].max_attempts"},
		{"bad dead-letter topic", Registration{App: "a", Consume: []Binding{{Group: "g", Topic: "t", DeadLetterTopic: "t..dlq"}}}, "consume[0].dead_letter_topic"},
		{"dead-letter topic is the topic", Registration{App: "a", Consume: []Binding{{Group: "g", Topic: "t", DeadLetterTopic: "t"}}}, "consume[0].dead_letter_topic"},
		{"policy on a produce binding", Registration{App: "a", Produce: []Binding{{Group: "p", Topic: "t", MaxAttempts: 3}}}, "produce[0].max_attempts"},
		{"dead-letter topic on a produce binding", Registration{App: "a", Produce: []Binding{{Group: "p", Topic: "t", DeadLetterTopic: "x"}}}, "produce[0].dead_letter_topic"},
		{"broker group", Registration{App: "a", Consume: []Binding{{Group: "g", Topic: "t", BrokerGroup: "com.example.orders-consumer_1"}}}, "-"},
		{"broker group at the limit", Registration{App: "a", Consume: []Binding{{Group: "g", Topic: "t", BrokerGroup: strings.Repeat("g", 249)}}}, "-"},
		{"broker group too long", Registration{App: "a", Consume: []Binding{{Group: "g", Topic: "t", BrokerGroup: strings.Repeat("g", 250)}}}, "consume[0].broker_group"},
		{"broker group with a space", Registration{App: "a", Consume: []Binding{b("g", "u"), {Group: "g", Topic: "t", BrokerGroup: "a b"}}}, "consume[1].broker_group"},
		{"broker group starting with '.'", Registration{App: "a", Consume: []Binding{{Group: "g", Topic: "t", BrokerGroup: ".g"}}}, "consume[0].broker_group"},
		{"broker group on a produce binding", Registration{App: "a", Produce: []Binding{{Group: "p", Topic: "t", BrokerGroup: "x"}}}, "produce[0].broker_group"},
		{"same binding, two policies", Registration{App: "a", Consume: []Binding{{Group: "g", Topic: "t", MaxAttempts: 3}, {Group: "g", Topic: "t", MaxAttempts: 4}}}, "consume[1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.reg.Validate()
			if tt.field == "-" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate() = %v (%T), want *ValidationError", err, err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
			}
			if ve.Field != tt.field {
				t.Errorf("Field = %q, want %q (error: %v)", ve.Field, tt.field, err)
			}
			if ve.Reason == "" {
				t.Errorf("empty Reason")
			}
			if tt.field != "" && !strings.Contains(err.Error(), tt.field+": ") {
				t.Errorf("Error() = %q does not name the field %q", err, tt.field)
			}
		})
	}
}

func TestValidateNil(t *testing.T) {
	var r *Registration
	if err := r.Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("nil.Validate() = %v, want ErrInvalid", err)
	}
}

// TestNameRulesMatchRegexp checks the hand-written name checks against the
// regular expressions the rules are written in.
func TestNameRulesMatchRegexp(t *testing.T) {
	nameRE := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	topicRE := regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
	inputs := []string{"", "a", ".", "..", "a.", ".a", "a..b", "a.b", "_", "-", "_a", "-a", "a b", "a:b",
		"é", "a\x00", strings.Repeat("x", 128), strings.Repeat("x", 129), strings.Repeat("x", 249), strings.Repeat("x", 250)}
	const alphabet = "aZ09_.-:/ é"
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		var sb strings.Builder
		for range rng.IntN(8) {
			sb.WriteByte(alphabet[rng.IntN(len(alphabet))])
		}
		inputs = append(inputs, sb.String())
	}
	for _, s := range inputs {
		if got, want := checkName(s) == "", nameRE.MatchString(s); got != want {
			t.Errorf("checkName(%q) valid = %v, regexp says %v", s, got, want)
		}
		if got, want := checkTopic(s) == "", topicRE.MatchString(s) && len(s) <= 249; got != want {
			t.Errorf("checkTopic(%q) valid = %v, regexp says %v", s, got, want)
		}
	}
}

func TestParseBinding(t *testing.T) {
	tests := []struct {
		in    string
		want  Binding
		field string // "-" means valid
	}{
		{"g1:orders.created", b("g1", "orders.created"), "-"},
		{"a.b-c_d:x_y-z", b("a.b-c_d", "x_y-z"), "-"},
		{"g:" + strings.Repeat("t", 249), b("g", strings.Repeat("t", 249)), "-"},
		{"", Binding{}, ""},
		{"orders", Binding{}, ""},
		{"g:t:u", Binding{}, ""},
		{":orders", Binding{}, "group"},
		{"g1:", Binding{}, "topic"},
		{" g1:orders", Binding{}, "group"},
		{"g1:orders ", Binding{}, "topic"},
		{"-g:t", Binding{}, "group"},
		{"g:t..u", Binding{}, "topic"},
		{"g:" + strings.Repeat("t", 250), Binding{}, "topic"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseBinding(tt.in)
			if tt.field == "-" {
				if err != nil {
					t.Fatalf("ParseBinding(%q) error %v", tt.in, err)
				}
				if got != tt.want {
					t.Fatalf("ParseBinding(%q) = %+v, want %+v", tt.in, got, tt.want)
				}
				if s := got.String(); s != tt.in {
					t.Errorf("String() = %q, want %q", s, tt.in)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseBinding(%q) = %+v, %v; want *ValidationError", tt.in, got, err)
			}
			if ve.Field != tt.field {
				t.Errorf("Field = %q, want %q (error: %v)", ve.Field, tt.field, err)
			}
			if got != (Binding{}) {
				t.Errorf("binding = %+v on error, want zero", got)
			}
		})
	}
}

func TestParseConsumeBinding(t *testing.T) {
	tests := []struct {
		in    string
		want  Binding
		field string // "-" means valid
	}{
		{"g1:orders.created", b("g1", "orders.created"), "-"},
		{"g1:orders,max_attempts=3", Binding{Group: "g1", Topic: "orders", MaxAttempts: 3}, "-"},
		{"g1:orders,dead_letter_topic=orders.poison", Binding{Group: "g1", Topic: "orders", DeadLetterTopic: "orders.poison"}, "-"},
		{"g1:orders,max_attempts=5,dead_letter_topic=x", Binding{Group: "g1", Topic: "orders", MaxAttempts: 5, DeadLetterTopic: "x"}, "-"},
		{"g1:orders,broker_group=orders-svc", Binding{Group: "g1", Topic: "orders", BrokerGroup: "orders-svc"}, "-"},
		{"g1:orders,max_attempts=5,broker_group=com.example.orders", Binding{Group: "g1", Topic: "orders", MaxAttempts: 5, BrokerGroup: "com.example.orders"}, "-"},
		{"g1:orders,broker_group=", Binding{Group: "g1", Topic: "orders"}, "-"},
		{"g1:orders,broker_group=a/b", Binding{}, "broker_group"},
		{"g1:orders,max_attempts=x", Binding{}, "max_attempts"},
		{"g1:orders,max_attempts=0", Binding{Group: "g1", Topic: "orders"}, "-"},
		{"g1:orders,max_attempts=1001", Binding{}, "max_attempts"},
		{"g1:orders,dead_letter_topic=orders", Binding{}, "dead_letter_topic"},
		{"g1:orders,dead_letter_topic=a b", Binding{}, "dead_letter_topic"},
		{"g1:orders,retries=3", Binding{}, "retries"},
		{"g1:orders,push_url=http://127.0.0.1:8080/in,push_concurrency=4,push_mode=structured,push_timeout=2s",
			Binding{Group: "g1", Topic: "orders", PushURL: "http://127.0.0.1:8080/in", PushConcurrency: 4, PushMode: "structured", PushTimeout: "2s"}, "-"},
		{"g1:orders,push_url=https://[::1]:9/x?y=1", Binding{Group: "g1", Topic: "orders", PushURL: "https://[::1]:9/x?y=1"}, "-"},
		{"g1:orders,push_url=ftp://127.0.0.1/x", Binding{}, "push_url"},
		{"g1:orders,push_url=http:///x", Binding{}, "push_url"},
		{"g1:orders,push_url=http://u:p@127.0.0.1/x", Binding{}, "push_url"},
		{"g1:orders,push_url=http://127.0.0.1/x#f", Binding{}, "push_url"},
		{"g1:orders,push_url=http://127.0.0.1/x,push_concurrency=0", Binding{Group: "g1", Topic: "orders", PushURL: "http://127.0.0.1/x"}, "-"},
		{"g1:orders,push_url=http://127.0.0.1/x,push_concurrency=1025", Binding{}, "push_concurrency"},
		{"g1:orders,push_url=http://127.0.0.1/x,push_concurrency=-1", Binding{}, "push_concurrency"},
		{"g1:orders,push_url=http://127.0.0.1/x,push_mode=batched", Binding{}, "push_mode"},
		{"g1:orders,push_url=http://127.0.0.1/x,push_timeout=0s", Binding{}, "push_timeout"},
		{"g1:orders,push_url=http://127.0.0.1/x,push_timeout=6m", Binding{}, "push_timeout"},
		{"g1:orders,push_url=http://127.0.0.1/x,push_timeout=soon", Binding{}, "push_timeout"},
		{"g1:orders,push_concurrency=2", Binding{}, "push_concurrency"},
		{"g1:orders,push_mode=binary", Binding{}, "push_mode"},
		{"g1:orders,push_timeout=1s", Binding{}, "push_timeout"},
		{"g1:orders,max_attempts", Binding{}, ""},
		{"g1:orders,", Binding{}, ""},
		{"g1,max_attempts=3", Binding{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseConsumeBinding(tt.in)
			if tt.field == "-" {
				if err != nil {
					t.Fatalf("ParseConsumeBinding(%q) error %v", tt.in, err)
				}
				if got != tt.want {
					t.Fatalf("ParseConsumeBinding(%q) = %+v, want %+v", tt.in, got, tt.want)
				}
				if again, err := ParseConsumeBinding(got.String()); err != nil || again != got {
					t.Errorf("ParseConsumeBinding(String()) = %+v, %v; want %+v", again, err, got)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseConsumeBinding(%q) = %+v, %v; want *ValidationError", tt.in, got, err)
			}
			if ve.Field != tt.field {
				t.Errorf("Field = %q, want %q (error: %v)", ve.Field, tt.field, err)
			}
		})
	}
}

func TestDefaultDeadLetterTopic(t *testing.T) {
	long := strings.Repeat("t", 240)
	tests := []struct {
		group, topic, want string
	}{
		{"g1", "orders.created", "orders.created.g1.dlq"},
		{"billing.v2", "orders", "orders.billing_v2.dlq"},
		{"a..b.", "t", "t.a__b_.dlq"},
		{"g", strings.Repeat("t", 243), strings.Repeat("t", 243) + ".g.dlq"}, // 249 bytes: kept
	}
	for _, tt := range tests {
		if got := DefaultDeadLetterTopic(tt.group, tt.topic); got != tt.want {
			t.Errorf("DefaultDeadLetterTopic(%q, %q) = %q, want %q", tt.group, tt.topic, got, tt.want)
		}
	}
	// Too long: cut, and told apart by a hash of the whole name.
	a, b := DefaultDeadLetterTopic("group-a", long), DefaultDeadLetterTopic("group-b", long)
	if a == b {
		t.Fatalf("two groups share the cut dead-letter topic %q", a)
	}
	for _, n := range []string{a, b} {
		if len(n) != maxTopicLen || !strings.HasSuffix(n, ".dlq") || !strings.HasPrefix(n, long[:200]) {
			t.Errorf("cut name %q (%d bytes): want %d bytes, the topic first and .dlq last", n, len(n), maxTopicLen)
		}
	}
	// Every default name is a valid topic, whatever the group's dots.
	for _, g := range []string{"g", "a.b", "a..b", "g.", "x-_.y", strings.Repeat("g.", 64)} {
		for _, tp := range []string{"t", "a.b", long, strings.Repeat("x", 249)} {
			n := DefaultDeadLetterTopic(g, tp)
			if reason := checkTopic(n); reason != "" {
				t.Errorf("DefaultDeadLetterTopic(%q, %q) = %q: %s", g, tp, n, reason)
			}
			if n == tp {
				t.Errorf("DefaultDeadLetterTopic(%q, %q) is the topic itself", g, tp)
			}
		}
	}
}

func TestNormalize(t *testing.T) {
	r := Registration{
		App:     "a",
		Produce: []Binding{},
		Consume: []Binding{b("g2", "a"), b("g1", "b"), b("g1", "a")},
	}
	r.Normalize()
	want := Registration{App: "a", Consume: []Binding{b("g1", "a"), b("g1", "b"), b("g2", "a")}}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("Normalize() = %+v, want %+v", r, want)
	}
}
