package ctrlplane_test

import (
	"crypto/x509"
	"errors"
	"testing"

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
