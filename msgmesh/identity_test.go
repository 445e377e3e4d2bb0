package msgmesh

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/msgmesh/msgmesh/msgmesh/registry"
)

// identitySidecar is a Sidecar with only what the identity checks read: a
// snapshot of apps registrations, app0 of them with secret "secret-0…".
func identitySidecar(tb testing.TB, apps int, required bool) *Sidecar {
	tb.Helper()
	regs := make([]registry.Registration, apps)
	snap := &snapshot{produce: map[string]string{}, consume: map[routeKey]bool{}}
	for i := range regs {
		r := registry.Registration{App: fmt.Sprint("app", i)}
		for g := 0; g < 3; g++ {
			b := registry.Binding{Group: fmt.Sprintf("g%d-%d", i, g), Topic: fmt.Sprintf("t%d.%d", i, g)}
			r.Produce = append(r.Produce, b)
			r.Consume = append(r.Consume, b)
			snap.produce[b.Topic] = "default"
			snap.consume[routeKey{group: b.Group, topic: b.Topic}] = true
		}
		if required || i == 0 {
			r.SecretHash = hashSecret(fmt.Sprintf("secret-%d-0123456789abcdef", i))
		}
		regs[i] = r
	}
	snap.addGrants(regs)
	sc := &Sidecar{cfg: Config{RequireAppSecrets: required}}
	sc.snap.Store(snap)
	return sc
}

func TestAuthenticate(t *testing.T) {
	sc := identitySidecar(t, 3, false)
	for _, tc := range []struct {
		app, secret string
		want        error
	}{
		{"app0", "secret-0-0123456789abcdef", nil},
		{"app0", "", ErrUnauthorized},
		{"app0", "secret-1-0123456789abcdef", ErrUnauthorized},
		{"app1", "", nil},
		{"app1", "secret-1-0123456789abcdef", ErrUnauthorized}, // app1 has none
		{"ghost", "", ErrNotRegistered},
	} {
		_, err := sc.authenticate(tc.app, tc.secret)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("authenticate(%s, %q) = %v, want %v", tc.app, tc.secret, err, tc.want)
		}
		if err != nil && tc.secret != "" && strings.Contains(err.Error(), tc.secret) {
			t.Errorf("the error shows the secret: %v", err)
		}
	}
	if _, err := identitySidecar(t, 1, true).authenticate("app0", ""); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("required secrets, none sent: %v", err)
	}
}

func TestSecretFormatAndBearer(t *testing.T) {
	for _, tc := range []struct {
		secret string
		ok     bool
	}{
		{strings.Repeat("a", 15), false},
		{strings.Repeat("a", 16), true},
		{strings.Repeat("a", 256), true},
		{strings.Repeat("a", 257), false},
		{"has a space in it 0123", false},
		{"non-ascii-é-0123456789", false},
		{"tab\t0123456789abcdef", false},
	} {
		if err := checkSecretFormat(tc.secret); (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("checkSecretFormat(%q) = %v, want ok %v", tc.secret, err, tc.ok)
		}
	}
	issued, err := newSecret()
	if err != nil || checkSecretFormat(issued) != nil || len(issued) != 43 {
		t.Fatalf("issued secret %q (%v) does not pass the format it asks of others", issued, err)
	}
	for _, tc := range []struct {
		header, want string
		err          bool
	}{
		{"", "", false},
		{"Bearer abc", "abc", false},
		{"bearer   abc ", "abc", false},
		{"Basic YTpi", "", true},
		{"Bearer", "", true},
		{"Bearer ", "", true},
	} {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		got, err := bearer(r)
		if got != tc.want || (err != nil) != tc.err || err != nil && !errors.Is(err, ErrUnauthorized) {
			t.Errorf("bearer(%q) = %q, %v", tc.header, got, err)
		}
	}
}

// The identity checks on the hot paths, on a sidecar serving 100 apps:
// permits runs for every delivery handed to a connection, mayProduce for
// every publish, authenticate for every HELLO.
func BenchmarkPermits(b *testing.B) {
	sc := identitySidecar(b, 100, true)
	snap := sc.snap.Load()
	id := &identity{app: "app42", proof: snap.apps["app42"].secret}
	k := routeKey{group: "g42-1", topic: "t42.1"}
	b.ReportAllocs()
	for b.Loop() {
		if !snap.permits(id, k, true) {
			b.Fatal("not permitted")
		}
	}
}

func BenchmarkMayProduce(b *testing.B) {
	sc := identitySidecar(b, 100, true)
	id := &identity{app: "app42", proof: sc.snap.Load().apps["app42"].secret}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := sc.mayProduce(id, "t42.1"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAuthenticate(b *testing.B) {
	sc := identitySidecar(b, 100, true)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := sc.authenticate("app42", "secret-42-0123456789abcdef"); err != nil {
			b.Fatal(err)
		}
	}
}
