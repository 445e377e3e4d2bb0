package msgmesh_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlclient"
	"github.com/msgmesh/msgmesh/internal/pki"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
	"github.com/msgmesh/msgmesh/msgmesh/forward"
)

// TestBinaryAppSecretsAndIsolation runs the msgmesh binary with
// --require-app-secrets and two apps: each is issued a secret at
// registration, cannot connect without it, and cannot use the other's
// topic or group; after a SIGKILL and a restart on the same data directory
// the stored secrets still hold, and what was published is consumed.
func TestBinaryAppSecretsAndIsolation(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the msgmesh binary")
	}
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	meshAddr, httpAddr := freePort(t), freePort(t)
	args := []string{"--data-dir", t.TempDir(), "--listen", meshAddr, "--http", httpAddr, "--require-app-secrets", "--log-level", "warn"}
	p := sidecartest.StartProc(t, bin, args...)
	sidecartest.WaitHealthy(t, p, httpAddr)
	registerTwoAppsWithSecrets := func() map[string]string {
		secrets := map[string]string{}
		for _, r := range []struct{ app, produce, consume string }{
			{"orders", "p1:" + topic, "g1:" + topic},
			{"billing", "p2:" + billingTopic, "g-billing:" + billingTopic},
		} {
			status, body := sidecartest.Register(t, httpAddr, r.app, []string{r.produce}, []string{r.consume})
			var reg struct{ Secret string }
			if err := json.Unmarshal([]byte(body), &reg); status != http.StatusCreated || err != nil || reg.Secret == "" {
				t.Fatalf("register %s: %d %s, want 201 with a secret", r.app, status, body)
			}
			secrets[r.app] = reg.Secret
		}
		return secrets
	}
	secrets := registerTwoAppsWithSecrets()

	dialFails := func(what string, code mesh.Code, opts ...client.Option) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, meshAddr, append([]client.Option{client.WithLogger(sidecartest.Logger())}, opts...)...)
		if err == nil {
			_ = c.Close()
		}
		wantCode(t, what, err, code)
	}
	dialFails("orders without its secret", mesh.CodeUnauthorized, client.WithApp("orders"))
	dialFails("orders with billing's secret", mesh.CodeUnauthorized, client.WithApp("orders"), client.WithSecret(secrets["billing"]))
	dialFails("an app nobody registered", mesh.CodeNotRegistered, client.WithApp("ghost"), client.WithSecret(secrets["orders"]))

	ctx := context.Background()
	billing := sidecartest.Dial(t, meshAddr, client.WithApp("billing"), client.WithSecret(secrets["billing"]))
	_, err = billing.Publish(ctx, &client.Message{Topic: topic, Body: []byte("forged")})
	wantCode(t, "billing publishing to orders' topic", err, mesh.CodeForbidden)
	_, err = billing.Subscribe(ctx, "g1", topic, func(context.Context, *client.Delivery) error { return nil })
	wantCode(t, "billing subscribing to orders' group", err, mesh.CodeForbidden)
	if status, body := publishTo(t, httpAddr, topic, "forged", "Msgmesh-App", "billing", "Authorization", "Bearer "+secrets["billing"]); status != http.StatusForbidden {
		t.Fatalf("HTTP publish as billing to orders' topic: %d %s", status, body)
	}
	const n = 100
	sidecartest.PublishN(t, sidecartest.Dial(t, meshAddr, client.WithSecret(secrets["orders"])), topic, "m", n, 16)

	if err := p.Cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.Done
	p = sidecartest.StartProc(t, bin, args...)
	sidecartest.WaitHealthy(t, p, httpAddr)

	dialFails("orders without its secret after a restart", mesh.CodeUnauthorized, client.WithApp("orders"))
	if status, body := sidecartest.Register(t, httpAddr, "orders", []string{"p1:" + topic}, nil); status != http.StatusUnauthorized {
		t.Fatalf("replacing orders' registration without its secret after a restart: %d %s", status, body)
	}
	got := sidecartest.NewTally()
	sidecartest.Subscribe(t, sidecartest.Dial(t, meshAddr, client.WithSecret(secrets["orders"])), "g1", topic, "orders", got)
	sidecartest.WaitFor(t, 60*time.Second, "every message published before the crash", func() bool { return got.Distinct() >= n })
	got.ExactlyOnce(t, "m", n)
}

// TestBinarySiblingStaysInItsApp runs the msgmesh binary as a sidecar of
// app orders (control plane, forwarding listener) that also serves app
// billing. A sibling with a certificate the control plane issued for
// orders delivers into orders' group, and orders' app acks it; its
// delivery into billing's group is refused FORBIDDEN.
func TestBinarySiblingStaysInItsApp(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the msgmesh binary")
	}
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	cpURL, _ := controlPlaneAt(t, t.TempDir(), "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), sidecartest.Scaled(60*time.Second))
	defer cancel()
	op, err := ctrlclient.New(cpURL, cpToken)
	if err != nil {
		t.Fatal(err)
	}
	created, err := op.CreateApp(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "msgmesh.yaml")
	if err := os.WriteFile(cfgPath, []byte(sidecartest.ClusterYAML(sidecartest.NATSCluster(t))), 0o600); err != nil {
		t.Fatal(err)
	}
	meshAddr, httpAddr, fwdAddr := freePort(t), freePort(t), freePort(t)
	if _, _, err := op.PutInstance(ctx, "orders", api.InstanceSpec{Addr: fwdAddr}); err != nil {
		t.Fatal(err)
	}
	p := sidecartest.StartProcEnv(t, []string{"MSGMESH_APP_CREDENTIAL=" + created.Credential}, bin,
		"--data-dir", t.TempDir(), "--listen", meshAddr, "--http", httpAddr, "--config", cfgPath,
		"--ctrlplane", cpURL, "--app", "orders", "--forward-listen", fwdAddr, "--log-level", "warn")
	sidecartest.WaitHealthy(t, p, httpAddr)
	registerTwoApps(t, httpAddr)
	ordersGot, billingGot := sidecartest.NewTally(), sidecartest.NewTally()
	sidecartest.Subscribe(t, sidecartest.Dial(t, meshAddr), "g1", topic, "orders", ordersGot)
	sidecartest.Subscribe(t, sidecartest.Dial(t, meshAddr, client.WithApp("billing")), "g-billing", billingTopic, "billing", billingGot)

	// The sibling: a key of its own, a certificate for orders from the
	// control plane, obtained with orders' credential as sidecars do.
	app, err := ctrlclient.New(cpURL, created.Credential)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, csrPEM, err := pki.NewKeyAndCSR("orders")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := app.IssueCertificate(ctx, "orders", csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.NewIdentity("orders", []byte(cert.Certificate), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := pki.ClientTLS(id, []byte(cert.CA))
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := forward.NewForwarder(forward.ClientConfig{TLS: cli, App: "orders", Name: "sibling", Logger: sidecartest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fwd.Close() })

	// Into orders' group: retried while the forwarding listener starts.
	d := newInjected(topic, "into-orders")
	sidecartest.WaitFor(t, 30*time.Second, "the sidecar to take a delivery into orders' group", func() bool {
		err := fwd.Forward(ctx, fwdAddr, "g1", topic, d)
		if err != nil && !errors.Is(err, forward.ErrUnavailable) {
			t.Fatalf("forward into orders' group: %v", err)
		}
		return err == nil
	})
	d.wantAck(ctx, t)

	err = fwd.Forward(ctx, fwdAddr, "g-billing", billingTopic, newInjected(billingTopic, "into-billing"))
	var re *forward.RefusedError
	if !errors.As(err, &re) || re.Code != mesh.CodeForbidden {
		t.Fatalf("forward into billing's group with an orders certificate: %v, want refused FORBIDDEN", err)
	}
	if ordersGot.Distinct() != 1 || billingGot.Count() != 0 {
		t.Fatalf("orders got %d, billing got %d; want 1 and 0", ordersGot.Distinct(), billingGot.Count())
	}
}
