package msgmesh_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker"
	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/internal/pki"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh"
	"github.com/msgmesh/msgmesh/msgmesh/forward"
	"github.com/msgmesh/msgmesh/scheduler"
)

// billingTopic is the second app's topic in the tests of two apps on one
// sidecar ("orders" has topic, group g1; "billing" has billingTopic, group
// g-billing).
const billingTopic = "billing.invoiced"

func registerTwoApps(t *testing.T, httpAddr string) {
	t.Helper()
	for _, r := range []struct {
		app              string
		produce, consume []string
	}{
		{"orders", []string{"p1:" + topic}, []string{"g1:" + topic}},
		{"billing", []string{"p2:" + billingTopic}, []string{"g-billing:" + billingTopic}},
	} {
		if status, body := sidecartest.Register(t, httpAddr, r.app, r.produce, r.consume); status != http.StatusCreated {
			t.Fatalf("register %s: %d %s", r.app, status, body)
		}
	}
}

// publishTo publishes through HTTP with the given headers (name, value
// pairs) and returns the status and body.
func publishTo(t *testing.T, httpAddr, tp, body string, headers ...string) (int, string) {
	t.Helper()
	return sidecartest.HTTPDo(t, http.MethodPost, "http://"+httpAddr+"/v1/publish/"+tp, "application/octet-stream", []byte(body), headers...)
}

// wantCode fails unless err is an ERROR answer with code.
func wantCode(t *testing.T, what string, err error, code mesh.Code) {
	t.Helper()
	if got := client.CodeOf(err); got != code {
		t.Fatalf("%s: %v (code %s), want %s", what, err, got, code)
	}
}

// TestHelloNeedsARegisteredApp: HELLO with a name no registration has is
// refused NOT_REGISTERED, the connection stays unbound (nothing else is
// accepted on it) but usable: a HELLO for a registered app then works.
func TestHelloNeedsARegisteredApp(t *testing.T) {
	e := newEnv(t)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})

	raw := dialRaw(t, e.addr)
	if me := wantError(t, raw.request(mesh.KindHello, &mesh.Hello{App: "ghost"}), mesh.CodeNotRegistered); !strings.Contains(me.Message, `"ghost"`) {
		t.Fatalf("the refusal does not name the app: %q", me.Message)
	}
	wantError(t, raw.request(mesh.KindPublish, &mesh.Publish{Topic: topic, Body: []byte("x")}), mesh.CodeInvalid)
	raw.hello()
	if f := raw.request(mesh.KindPublish, &mesh.Publish{Topic: topic, Body: []byte("x")}); f.Kind != mesh.KindPublishAck {
		t.Fatalf("PUBLISH after a good HELLO answered %s", f.Kind)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := client.Dial(ctx, e.addr, client.WithApp("ghost"), client.WithLogger(sidecartest.Logger()))
	wantCode(t, "Dial as an unregistered app", err, mesh.CodeNotRegistered)
}

// TestAppsStayInTheirLanes: two apps on one sidecar. A connection of one
// may publish only to its app's topics and declare or pull only its app's
// groups; the other app's are FORBIDDEN, and the connection stays usable.
// Over HTTP, Msgmesh-App binds a publish the same way. Every message
// reaches its own app only.
func TestAppsStayInTheirLanes(t *testing.T) {
	e := newEnv(t)
	registerTwoApps(t, e.http)
	orders, billing := e.dial(), e.dial(client.WithApp("billing"))
	ordersGot, billingGot := sidecartest.NewTally(), sidecartest.NewTally()
	sidecartest.Subscribe(t, orders, "g1", topic, "orders", ordersGot)
	sidecartest.Subscribe(t, billing, "g-billing", billingTopic, "billing", billingGot)
	ctx := context.Background()

	tests := []struct {
		name string
		try  func() error
		code mesh.Code
	}{
		{"publish to the other app's topic", func() error {
			_, err := billing.Publish(ctx, &client.Message{Topic: topic, Body: []byte("forged")})
			return err
		}, mesh.CodeForbidden},
		{"subscribe to the other app's group", func() error {
			_, err := billing.Subscribe(ctx, "g1", topic, func(context.Context, *client.Delivery) error { return nil })
			return err
		}, mesh.CodeForbidden},
		{"pull from the other app's group", func() error {
			_, err := billing.Pull(ctx, "g1", topic, 10)
			return err
		}, mesh.CodeForbidden},
		{"publish to a topic nobody produces", func() error {
			_, err := billing.Publish(ctx, &client.Message{Topic: "no.such.topic", Body: []byte("x")})
			return err
		}, mesh.CodeNotRegistered},
		{"subscribe to a pair nobody consumes", func() error {
			_, err := billing.Subscribe(ctx, "g1", billingTopic, func(context.Context, *client.Delivery) error { return nil })
			return err
		}, mesh.CodeNotRegistered},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, tc.name, tc.try(), tc.code)
			// The connection is still fine for what its app may do.
			if _, err := billing.Publish(ctx, &client.Message{Topic: billingTopic, Body: []byte("check-" + tc.name)}); err != nil {
				t.Fatalf("own publish after the refusal: %v", err)
			}
		})
	}

	// A raw connection cannot DECLARE a mix either: all or nothing.
	raw := dialRaw(t, e.addr)
	raw.helloAs("billing", "")
	me := wantError(t, raw.request(mesh.KindDeclare, &mesh.Declare{Subs: []mesh.Subscription{
		{Group: "g-billing", Topic: billingTopic, Mode: mesh.ModePull}, {Group: "g1", Topic: topic, Mode: mesh.ModePull}}}), mesh.CodeForbidden)
	if !strings.Contains(me.Message, "subs[1]") || !strings.Contains(me.Message, `app "billing"`) {
		t.Fatalf("DECLARE refusal %q does not say which subscription and app", me.Message)
	}
	wantError(t, raw.request(mesh.KindPull, &mesh.Pull{Group: "g-billing", Topic: billingTopic, Max: 1}), mesh.CodeNotDeclared)

	// HTTP: Msgmesh-App binds the publish to that app.
	for _, tc := range []struct {
		name    string
		headers []string
		status  int
		code    string
	}{
		{"as the other app", []string{"Msgmesh-App", "billing"}, http.StatusForbidden, "FORBIDDEN"},
		{"as an unknown app", []string{"Msgmesh-App", "ghost"}, http.StatusNotFound, "NOT_REGISTERED"},
		{"a secret without an app", []string{"Authorization", "Bearer 0123456789abcdefgh"}, http.StatusBadRequest, "INVALID"},
		{"as its own app", []string{"Msgmesh-App", "orders"}, http.StatusOK, ""},
		{"naming no app (no app has a secret)", nil, http.StatusOK, ""},
	} {
		status, body := publishTo(t, e.http, topic, "http-"+tc.name, tc.headers...)
		if status != tc.status || !strings.Contains(body, tc.code) {
			t.Fatalf("HTTP publish %s: %d %s, want %d %s", tc.name, status, body, tc.status, tc.code)
		}
	}

	const n = 200
	sidecartest.PublishN(t, orders, topic, "o", n, 32)
	sidecartest.PublishN(t, billing, billingTopic, "b", n, 32)
	sidecartest.WaitFor(t, 60*time.Second, "both apps' messages", func() bool {
		return ordersGot.Count() >= n+2 && billingGot.Count() >= n+len(tests)
	})
	for b := range ordersGot.Bodies() {
		if strings.HasPrefix(b, "b-") || strings.HasPrefix(b, "check-") || b == "forged" {
			t.Errorf("orders received billing's message %q", b)
		}
	}
	for b := range billingGot.Bodies() {
		if strings.HasPrefix(b, "o-") || strings.HasPrefix(b, "http-") {
			t.Errorf("billing received orders' message %q", b)
		}
	}
}

// TestRegistrationChangesReachOpenConnections: requests are checked
// against the registrations as they are now. A connection whose app no
// longer consumes a group gets none of its deliveries though it declared
// it earlier, cannot declare it again, and once its app is deregistered
// it cannot publish.
func TestRegistrationChangesReachOpenConnections(t *testing.T) {
	e := newEnv(t)
	e.register("orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	e.register("billing", []string{"p2:" + billingTopic}, nil)
	before := sidecartest.NewTally()
	sidecartest.Subscribe(t, e.dial(), "g1", topic, "orders", before)
	raw := dialRaw(t, e.addr)
	raw.hello()

	// g1 moves from orders to billing.
	e.register("orders", []string{"p1:" + topic}, nil)
	e.register("billing", []string{"p2:" + billingTopic}, []string{"g1:" + topic})
	after := sidecartest.NewTally()
	sidecartest.Subscribe(t, e.dial(client.WithApp("billing")), "g1", topic, "billing", after)
	const n = 300
	sidecartest.PublishN(t, e.dial(), topic, "m", n, 32)
	sidecartest.WaitFor(t, 60*time.Second, "billing to get every message", func() bool { return after.Distinct() == n })
	after.ExactlyOnce(t, "m", n)
	if got := before.Count(); got != 0 {
		t.Fatalf("the orders connection that declared g1 before it moved got %d of its messages", got)
	}
	wantError(t, raw.request(mesh.KindDeclare, &mesh.Declare{Subs: []mesh.Subscription{{Group: "g1", Topic: topic, Mode: mesh.ModePush}}}), mesh.CodeForbidden)

	if status, body := sidecartest.HTTPDo(t, http.MethodDelete, "http://"+e.http+"/v1/registrations/orders", "", nil); status != http.StatusNoContent {
		t.Fatalf("deregister: %d %s", status, body)
	}
	if me := wantError(t, raw.request(mesh.KindPublish, &mesh.Publish{Topic: topic, Body: []byte("late")}), mesh.CodeNotRegistered); !strings.Contains(me.Message, "no longer registered") {
		t.Fatalf("PUBLISH of a deregistered app: %q", me.Message)
	}
}

// TestAppSecretsRequired: with Config.RequireAppSecrets, registering an app
// issues its secret once; HELLO, HTTP publish, replacing and deleting the
// registration need it (UNAUTHORIZED otherwise); the registrations list
// shows neither secret nor hash; and another app cannot take over a group
// of an app with a secret.
func TestAppSecretsRequired(t *testing.T) {
	e := newEnv(t, func(c *msgmesh.Config) { c.RequireAppSecrets = true })
	status, body := sidecartest.Register(t, e.http, "orders", []string{"p1:" + topic}, []string{"g1:" + topic})
	var reg struct {
		App    string `json:"app"`
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal([]byte(body), &reg); status != http.StatusCreated || err != nil || reg.App != "orders" || len(reg.Secret) < 32 {
		t.Fatalf("register: %d %s (%v); want 201 with an issued secret", status, body, err)
	}
	secret := reg.Secret
	if _, list := sidecartest.HTTPDo(t, http.MethodGet, "http://"+e.http+"/v1/registrations", "", nil); strings.Contains(list, secret) || strings.Contains(list, "secret") {
		t.Fatalf("the registrations list shows a secret: %s", list)
	}

	// HELLO.
	for _, tc := range []struct {
		name, app, secret string
		code              mesh.Code
	}{
		{"no secret", "orders", "", mesh.CodeUnauthorized},
		{"wrong secret", "orders", "not-the-secret-0123456789", mesh.CodeUnauthorized},
		{"the secret, another app's name", "ghost", secret, mesh.CodeNotRegistered},
	} {
		wantError(t, dialRaw(t, e.addr).request(mesh.KindHello, &mesh.Hello{App: tc.app, Secret: tc.secret}), tc.code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := client.Dial(ctx, e.addr, client.WithApp("orders"), client.WithLogger(sidecartest.Logger()))
	wantCode(t, "Dial without the secret", err, mesh.CodeUnauthorized)
	c := e.dial(client.WithSecret(secret))
	if _, err := c.Publish(ctx, &client.Message{Topic: topic, Body: []byte("with secret")}); err != nil {
		t.Fatalf("publish with the secret: %v", err)
	}

	// HTTP publish.
	for _, tc := range []struct {
		name    string
		headers []string
		status  int
	}{
		{"naming no app", nil, http.StatusUnauthorized},
		{"no secret", []string{"Msgmesh-App", "orders"}, http.StatusUnauthorized},
		{"wrong secret", []string{"Msgmesh-App", "orders", "Authorization", "Bearer not-the-secret-0123456789"}, http.StatusUnauthorized},
		{"not a bearer", []string{"Msgmesh-App", "orders", "Authorization", "Basic b3JkZXJzOng="}, http.StatusUnauthorized},
		{"the secret", []string{"Msgmesh-App", "orders", "Authorization", "Bearer " + secret}, http.StatusOK},
	} {
		if status, body := publishTo(t, e.http, topic, tc.name, tc.headers...); status != tc.status {
			t.Fatalf("HTTP publish with %s: %d %s, want %d", tc.name, status, body, tc.status)
		}
	}

	// Replacing the registration.
	for _, tc := range []struct {
		name, secret string
		status       int
	}{
		{"no secret", "", http.StatusUnauthorized},
		{"wrong secret", "not-the-secret-0123456789", http.StatusUnauthorized},
		{"the secret", secret, http.StatusCreated},
	} {
		status, body := sidecartest.RegisterAs(t, e.http, "orders", tc.secret, []string{"p1:" + topic}, []string{"g1:" + topic})
		if status != tc.status || strings.Contains(body, `"secret"`) {
			t.Fatalf("replace with %s: %d %s, want %d and no new secret", tc.name, status, body, tc.status)
		}
	}

	// Another app: its own secret, no share of orders' group, and its
	// secret opens nothing of orders'.
	status, body = sidecartest.Register(t, e.http, "evil", nil, []string{"g1:" + topic})
	if status != http.StatusForbidden || !strings.Contains(body, "FORBIDDEN") || !strings.Contains(body, `app \"orders\"`) {
		t.Fatalf("another app registering orders' group: %d %s, want 403 naming the owner", status, body)
	}
	status, body = sidecartest.Register(t, e.http, "evil", nil, []string{"g-evil:" + topic})
	var evil struct{ Secret string }
	if err := json.Unmarshal([]byte(body), &evil); status != http.StatusCreated || err != nil || evil.Secret == "" || evil.Secret == secret {
		t.Fatalf("another app with its own group: %d %s", status, body)
	}
	wantError(t, dialRaw(t, e.addr).request(mesh.KindHello, &mesh.Hello{App: "orders", Secret: evil.Secret}), mesh.CodeUnauthorized)

	// Deleting.
	for _, tc := range []struct {
		name, secret string
		status       int
	}{
		{"no secret", "", http.StatusUnauthorized},
		{"another app's secret", evil.Secret, http.StatusUnauthorized},
		{"the secret", secret, http.StatusNoContent},
	} {
		if status, body := sidecartest.HTTPDo(t, http.MethodDelete, "http://"+e.http+"/v1/registrations/orders", "", nil, sidecartest.BearerHeader(tc.secret)...); status != tc.status {
			t.Fatalf("delete with %s: %d %s, want %d", tc.name, status, body, tc.status)
		}
	}
}

// TestAppSecretOptIn: without Config.RequireAppSecrets an app opts in by
// registering with a secret of its own choosing; it then needs it, while
// an app without one does not. Registering it again after deleting with a
// new secret cuts off connections that proved the old one: their requests
// are UNAUTHORIZED and deliveries go to the new ones only.
func TestAppSecretOptIn(t *testing.T) {
	e := newEnv(t)
	const own, rotated = "orders-own-secret-0123456789", "orders-rotated-secret-98765"
	if status, body := sidecartest.RegisterAs(t, e.http, "orders", "short", []string{"p1:" + topic}, nil); status != http.StatusBadRequest {
		t.Fatalf("a 5-character secret: %d %s, want 400", status, body)
	}
	if status, body := sidecartest.RegisterAs(t, e.http, "orders", own, []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated || strings.Contains(body, own) || strings.Contains(body, `"secret"`) {
		t.Fatalf("register with an own secret: %d %s", status, body)
	}
	e.register("billing", []string{"p2:" + billingTopic}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := client.Dial(ctx, e.addr, client.WithApp("orders"), client.WithLogger(sidecartest.Logger()))
	wantCode(t, "orders without its secret", err, mesh.CodeUnauthorized)
	_, err = client.Dial(ctx, e.addr, client.WithApp("billing"), client.WithSecret(own), client.WithLogger(sidecartest.Logger()))
	wantCode(t, "billing (no secret) with one", err, mesh.CodeUnauthorized)
	e.dial(client.WithApp("billing")) // needs none
	if status, body := publishTo(t, e.http, topic, "anonymous"); status != http.StatusUnauthorized {
		t.Fatalf("HTTP publish naming no app to a topic only an app with a secret produces: %d %s", status, body)
	}
	if status, body := publishTo(t, e.http, billingTopic, "anonymous"); status != http.StatusOK {
		t.Fatalf("HTTP publish naming no app to billing's topic: %d %s", status, body)
	}

	old := e.dial(client.WithSecret(own))
	oldGot := sidecartest.NewTally()
	sidecartest.Subscribe(t, old, "g1", topic, "old", oldGot)

	if status, body := sidecartest.HTTPDo(t, http.MethodDelete, "http://"+e.http+"/v1/registrations/orders", "", nil, sidecartest.BearerHeader(own)...); status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", status, body)
	}
	if status, body := sidecartest.RegisterAs(t, e.http, "orders", rotated, []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
		t.Fatalf("register again with a new secret: %d %s", status, body)
	}
	_, err = old.Publish(ctx, &client.Message{Topic: topic, Body: []byte("old secret")})
	wantCode(t, "publish on a connection that proved the old secret", err, mesh.CodeUnauthorized)
	newGot := sidecartest.NewTally()
	fresh := e.dial(client.WithSecret(rotated))
	sidecartest.Subscribe(t, fresh, "g1", topic, "new", newGot)
	const n = 200
	sidecartest.PublishN(t, fresh, topic, "m", n, 32)
	sidecartest.WaitFor(t, 60*time.Second, "the new connection to get every message", func() bool { return newGot.Distinct() == n })
	if got := oldGot.Count(); got != 0 {
		t.Fatalf("the connection with the old secret got %d messages", got)
	}
}

// injected is what an intruding forwarder sends: a delivery whose Ack and
// Nack report on settled. (The forwarder and the sidecar it talks to are
// real; only the broker behind the forwarder is not needed.)
type injected struct {
	msg     broker.Message
	settled chan string
}

func newInjected(tp, body string) *injected {
	return &injected{msg: broker.Message{Topic: tp, Body: []byte(body)}, settled: make(chan string, 2)}
}

func (d *injected) Message() *broker.Message { return &d.msg }
func (d *injected) MessageID() string        { return "injected-" + string(d.msg.Body) }
func (d *injected) Redelivered() int         { return 0 }
func (d *injected) Timestamp() time.Time     { return time.Time{} }
func (d *injected) Ack(context.Context) error {
	d.settled <- "ack"
	return nil
}
func (d *injected) Nack(context.Context, time.Duration) error {
	d.settled <- "nack"
	return nil
}

// wantAck waits for d's answer, which must be an ack.
func (d *injected) wantAck(ctx context.Context, t *testing.T) {
	t.Helper()
	select {
	case got := <-d.settled:
		if got != "ack" {
			t.Fatalf("the app answered %s for %q", got, d.msg.Body)
		}
	case <-ctx.Done():
		t.Fatalf("no answer for %q", d.msg.Body)
	}
}

// TestSiblingStaysInItsApp: a sidecar serves apps orders and billing, and
// forwards for orders. A sibling holding a valid orders certificate from
// the same CA is refused FORBIDDEN when it delivers into billing's group,
// and nothing reaches billing; its delivery into orders' group reaches
// orders' app, whose ack comes back.
func TestSiblingStaysInItsApp(t *testing.T) {
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	node := startNode(t, sidecartest.NATSCluster(t), ca)
	registerTwoApps(t, node.http)
	ordersGot, billingGot := sidecartest.NewTally(), sidecartest.NewTally()
	sidecartest.Subscribe(t, sidecartest.Dial(t, node.addr), "g1", topic, "orders", ordersGot)
	sidecartest.Subscribe(t, sidecartest.Dial(t, node.addr, client.WithApp("billing")), "g-billing", billingTopic, "billing", billingGot)

	_, cli := tlsFor(t, ca, "orders")
	fwd, err := forward.NewForwarder(forward.ClientConfig{TLS: cli, App: "orders", Name: "intruder", Logger: sidecartest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fwd.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(20*time.Second))
	defer cancel()

	for _, tc := range []struct {
		group, topic string
		code         mesh.Code
	}{
		{"g-billing", billingTopic, mesh.CodeForbidden},
		{"g1", billingTopic, mesh.CodeNotRegistered},
	} {
		err := fwd.Forward(ctx, node.fwdAddr, tc.group, tc.topic, newInjected(tc.topic, "into-"+tc.group))
		var re *forward.RefusedError
		if !errors.As(err, &re) || re.Code != tc.code {
			t.Fatalf("forward into %s:%s: %v, want refused %s", tc.group, tc.topic, err, tc.code)
		}
	}
	d := newInjected(topic, "into-orders")
	if err := fwd.Forward(ctx, node.fwdAddr, "g1", topic, d); err != nil {
		t.Fatalf("forward into orders' own group: %v", err)
	}
	d.wantAck(ctx, t)
	if ordersGot.Distinct() != 1 || billingGot.Count() != 0 || node.sc.Stats().FromSiblings != 1 {
		t.Fatalf("orders got %d, billing %d, from siblings %d; want 1, 0, 1", ordersGot.Distinct(), billingGot.Count(), node.sc.Stats().FromSiblings)
	}
}

// TestOtherAppsGroupsAreNotForwarded: two sidecars of orders that also
// serve billing; the second is drained (weight 0) for orders. billing's
// messages are billing's, not orders': whatever the second sidecar takes
// from the broker for billing stays with its billing connection.
func TestOtherAppsGroupsAreNotForwarded(t *testing.T) {
	c := sidecartest.NATSCluster(t)
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	nodes := []*meshNode{startNode(t, c, ca), startNode(t, c, ca)}
	got := []*sidecartest.Tally{sidecartest.NewTally(), sidecartest.NewTally()}
	for i, n := range nodes {
		registerTwoApps(t, n.http)
		sidecartest.Subscribe(t, sidecartest.Dial(t, n.addr, client.WithApp("billing")), "g-billing", billingTopic, fmt.Sprint("node", i), got[i])
	}
	ins := []scheduler.Instance{{ID: nodes[0].fwdAddr, Weight: 100}, {ID: nodes[1].fwdAddr, Weight: 0}}
	for _, n := range nodes {
		n.sched.Update(ins)
	}
	const n = 400
	sidecartest.PublishN(t, sidecartest.Dial(t, nodes[0].addr, client.WithApp("billing")), billingTopic, "b", n, 32)
	sidecartest.WaitFor(t, 60*time.Second, "every billing message", func() bool { return got[0].Distinct()+got[1].Distinct() >= n })
	s0, s1 := nodes[0].sc.Stats(), nodes[1].sc.Stats()
	if s1.FromBroker == 0 {
		t.Skip("the broker gave the drained node no billing message; nothing to check this run")
	}
	if s1.Forwarded != 0 || s0.FromSiblings != 0 || uint64(got[1].Count()) != s1.FromBroker {
		t.Fatalf("drained node took %d billing messages from the broker, forwarded %d (node 1 took %d from siblings), its billing app got %d",
			s1.FromBroker, s1.Forwarded, s0.FromSiblings, got[1].Count())
	}
}
