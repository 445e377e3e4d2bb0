package ctrlplane_test

import (
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/msgmesh/msgmesh/ctrlplane"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlclient"
	"github.com/msgmesh/msgmesh/internal/pki"
)

// A sidecar holding its app's credential gets a forwarding certificate for
// that app, from a CA that survives a restart of the control plane; it
// cannot get one for another app.
func TestIssueCertificate(t *testing.T) {
	dir := t.TempDir()
	st := openBolt(t, dir)
	c := startCP(t, st, "")
	op := client(t, c.url, testToken)
	ordersCred := mustCreate(t, op, "orders")
	mustCreate(t, op, "billing")

	_, csr, err := pki.NewKeyAndCSR("orders")
	if err != nil {
		t.Fatal(err)
	}
	sidecar := client(t, c.url, ordersCred)
	got, err := sidecar.IssueCertificate(t.Context(), "orders", csr)
	if err != nil {
		t.Fatalf("issue with the app credential: %v", err)
	}
	cert, err := pki.ParseCertPEM([]byte(got.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	if app, err := pki.AppOf(cert); err != nil || app != "orders" {
		t.Fatalf("certificate names app %q (%v), want orders", app, err)
	}
	pool, err := pki.CertPool([]byte(got.CA))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("certificate does not verify under the returned CA: %v", err)
	}

	// Another app's certificate with this credential is refused.
	_, other, _ := pki.NewKeyAndCSR("billing")
	if _, err := sidecar.IssueCertificate(t.Context(), "billing", other); !errors.Is(err, ctrlclient.ErrForbidden) {
		t.Fatalf("issuing for another app: %v, want ErrForbidden", err)
	}
	// A CSR naming another app is refused even for the right credential.
	if _, err := sidecar.IssueCertificate(t.Context(), "orders", other); !errors.Is(err, ctrlclient.ErrInvalid) {
		t.Fatalf("CSR for another app: %v, want ErrInvalid", err)
	}
	if _, err := sidecar.IssueCertificate(t.Context(), "orders", []byte("not a csr")); !errors.Is(err, ctrlclient.ErrInvalid) {
		t.Fatalf("garbage CSR: %v, want ErrInvalid", err)
	}

	// The CA is kept: after a restart on the same store the old
	// certificate still verifies against the CA handed out now.
	c.stop()
	c2 := startCP(t, st, "")
	again, err := client(t, c2.url, ordersCred).IssueCertificate(t.Context(), "orders", csr)
	if err != nil {
		t.Fatal(err)
	}
	if again.CA != got.CA {
		t.Fatal("the control plane made a new CA on restart; existing certificates would stop verifying")
	}
}

// TestCAKeySealed: with a seal key the forwarding CA's private key is kept
// in the store encrypted, never in clear; a CA stored in clear by a
// control plane without a seal key is sealed when one with a key starts;
// the CA is the same throughout. A sealed key without its seal key, or
// with another one, stops the control plane from starting, with
// ErrSealKey.
func TestCAKeySealed(t *testing.T) {
	const key = "seal-key-0123456789abcdef0123456789abcdef"
	st := openBolt(t, t.TempDir())
	apps := 0
	caPEM := func(c *cp) string { // the CA that signs a new app's certificate
		t.Helper()
		apps++
		app := fmt.Sprintf("app%d", apps)
		cred := mustCreate(t, client(t, c.url, testToken), app)
		_, csr, err := pki.NewKeyAndCSR(app)
		if err != nil {
			t.Fatal(err)
		}
		got, err := client(t, c.url, cred).IssueCertificate(t.Context(), app, csr)
		if err != nil {
			t.Fatal(err)
		}
		return got.CA
	}
	stored := func() string {
		t.Helper()
		e, err := st.Get(t.Context(), "pki/ca")
		if err != nil {
			t.Fatal(err)
		}
		return string(e.Value)
	}

	// Without a seal key: in clear, as before.
	c := startCP(t, st, "")
	first := caPEM(c)
	c.stop()
	if !strings.Contains(stored(), "PRIVATE KEY") {
		t.Fatalf("without a seal key the CA key is expected in clear: %s", stored())
	}
	// With one: sealed at start, the same CA.
	c = startCP(t, st, "", func(o *ctrlplane.Options) { o.SealKey = key })
	if s := stored(); strings.Contains(s, "PRIVATE KEY") || !strings.Contains(s, `"key_sealed"`) {
		t.Fatalf("with a seal key the stored CA is %s", s)
	}
	if got := caPEM(c); got != first {
		t.Fatal("sealing the key changed the CA")
	}
	c.stop()
	for name, k := range map[string]string{"no seal key": "", "another seal key": key + "x"} {
		_, err := ctrlplane.New(ctrlplane.Options{Store: st, Token: testToken, SealKey: k})
		if !errors.Is(err, ctrlplane.ErrSealKey) {
			t.Fatalf("%s on a sealed CA key: %v, want ErrSealKey", name, err)
		}
	}
	if _, err := ctrlplane.New(ctrlplane.Options{Store: st, Token: testToken, SealKey: "short"}); err == nil || !strings.Contains(err.Error(), "at least 32") {
		t.Fatalf("a short seal key: %v", err)
	}
	c = startCP(t, st, "", func(o *ctrlplane.Options) { o.SealKey = key })
	if got := caPEM(c); got != first {
		t.Fatal("the sealed CA did not survive a restart")
	}

	// A CA created with a seal key is sealed from the start.
	st2 := openBolt(t, t.TempDir())
	c2 := startCP(t, st2, "", func(o *ctrlplane.Options) { o.SealKey = key })
	caPEM(c2)
	e, err := st2.Get(t.Context(), "pki/ca")
	if err != nil || strings.Contains(string(e.Value), "PRIVATE KEY") {
		t.Fatalf("a new CA with a seal key is stored as %s (%v)", e.Value, err)
	}
}
