package pki

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

func newCA(t testing.TB) *CA {
	t.Helper()
	ca, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue makes a key and CSR for app and has ca sign it.
func issue(t testing.TB, ca *CA, app string, ttl time.Duration) (certPEM, keyPEM []byte) {
	t.Helper()
	keyPEM, csrPEM, err := NewKeyAndCSR(app)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err = ca.Issue(csrPEM, app, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

func identity(t testing.TB, ca *CA, app string) *Identity {
	t.Helper()
	c, k := issue(t, ca, app, time.Hour)
	id, err := NewIdentity(app, c, k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestCARoundTrip(t *testing.T) {
	ca := newCA(t)
	c := ca.Certificate()
	if !c.IsCA || c.PublicKeyAlgorithm != x509.ECDSA || c.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P256() {
		t.Fatalf("CA certificate: IsCA=%v alg=%v", c.IsCA, c.PublicKeyAlgorithm)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Fatalf("CA is not self-signed: %v", err)
	}
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := LoadCA(ca.CertPEM(), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	// A certificate issued by the reloaded CA chains to the original.
	certPEM, _ := issue(t, ca2, "orders", time.Hour)
	leaf, err := ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := CertPool(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("issued by reloaded CA does not verify: %v", err)
	}

	other := newCA(t)
	otherKey, _ := other.KeyPEM()
	if _, err := LoadCA(ca.CertPEM(), otherKey); !errors.Is(err, ErrBadPEM) {
		t.Errorf("LoadCA with another key = %v, want ErrBadPEM", err)
	}
	if _, err := LoadCA(certPEM, keyPEM); !errors.Is(err, ErrBadPEM) {
		t.Errorf("LoadCA with a leaf = %v, want ErrBadPEM", err)
	}
	if _, err := LoadCA([]byte("nope"), keyPEM); !errors.Is(err, ErrBadPEM) {
		t.Errorf("LoadCA with garbage = %v, want ErrBadPEM", err)
	}
}

func TestIssue(t *testing.T) {
	ca := newCA(t)
	certPEM, keyPEM := issue(t, ca, "orders", 2*time.Hour)
	leaf, err := ParseCertPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if app, err := AppOf(leaf); err != nil || app != "orders" {
		t.Errorf("AppOf = %q, %v; want orders", app, err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "msgmesh://app/orders" {
		t.Errorf("URIs = %v, want [msgmesh://app/orders]", leaf.URIs)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || leaf.IsCA {
		t.Errorf("leaf has other names or is a CA: %+v", leaf)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life < 2*time.Hour || life > 2*time.Hour+backdate+time.Minute {
		t.Errorf("lifetime %v, want 2h (+ backdate)", life)
	}
	pool, _ := CertPool(ca.CertPEM())
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("verify for usage %v: %v", usage, err)
		}
	}
	if _, err := NewIdentity("orders", certPEM, keyPEM); err != nil {
		t.Errorf("NewIdentity: %v", err)
	}

	t.Run("default ttl", func(t *testing.T) {
		c, _ := issue(t, ca, "orders", 0)
		leaf, _ := ParseCertPEM(c)
		if life := leaf.NotAfter.Sub(leaf.NotBefore); life < DefaultTTL || life > DefaultTTL+backdate+time.Minute {
			t.Errorf("lifetime %v, want %v", life, DefaultTTL)
		}
	})
	t.Run("never past the CA", func(t *testing.T) {
		c, _ := issue(t, ca, "orders", 100*365*24*time.Hour)
		leaf, _ := ParseCertPEM(c)
		if leaf.NotAfter.After(ca.Certificate().NotAfter) {
			t.Errorf("leaf NotAfter %v after CA NotAfter %v", leaf.NotAfter, ca.Certificate().NotAfter)
		}
	})
	t.Run("for a public key", func(t *testing.T) {
		k, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		c, err := ca.IssueForKey(&k.PublicKey, "billing", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := ParseCertPEM(c)
		if app, _ := AppOf(leaf); app != "billing" {
			t.Errorf("AppOf = %q", app)
		}
	})
}

func TestIssueRefuses(t *testing.T) {
	ca := newCA(t)
	_, csrOrders, err := NewKeyAndCSR("orders")
	if err != nil {
		t.Fatal(err)
	}
	tampered := tamperCSR(t, csrOrders)
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	tests := []struct {
		name string
		do   func() error
		want error
	}{
		{"csr for another app", func() error { _, err := ca.Issue(csrOrders, "billing", 0); return err }, ErrBadCSR},
		{"bad signature", func() error { _, err := ca.Issue(tampered, "orders", 0); return err }, ErrBadCSR},
		{"not PEM", func() error { _, err := ca.Issue([]byte("hello"), "orders", 0); return err }, ErrBadPEM},
		{"certificate instead of CSR", func() error { _, err := ca.Issue(ca.CertPEM(), "orders", 0); return err }, ErrBadPEM},
		{"empty app", func() error { _, err := ca.Issue(csrOrders, "", 0); return err }, ErrInvalidApp},
		{"app with slash", func() error { _, err := ca.Issue(csrOrders, "a/b", 0); return err }, ErrInvalidApp},
		{"app too long", func() error { _, err := ca.Issue(csrOrders, strings.Repeat("a", 129), 0); return err }, ErrInvalidApp},
		{"weak RSA key", func() error { _, err := ca.IssueForKey(&weak.PublicKey, "orders", 0); return err }, ErrBadCSR},
		{"unknown key type", func() error { _, err := ca.IssueForKey("key", "orders", 0); return err }, ErrBadCSR},
		{"NewKeyAndCSR bad app", func() error { _, _, err := NewKeyAndCSR(".x"); return err }, ErrInvalidApp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.do(); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

// tamperCSR flips a byte of the CSR's subject so its signature no longer
// matches.
func tamperCSR(t *testing.T, csrPEM []byte) []byte {
	t.Helper()
	b, _ := pem.Decode(csrPEM)
	der := bytes.Clone(b.Bytes)
	i := bytes.Index(der, []byte("orders"))
	if i < 0 {
		t.Fatal("no subject in CSR")
	}
	der[i] = 'X'
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestAppOf(t *testing.T) {
	u := func(s string) *url.URL {
		v, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tests := []struct {
		name string
		uris []*url.URL
		want string // "" means an error
	}{
		{"one app", []*url.URL{u("msgmesh://app/orders")}, "orders"},
		{"other schemes ignored", []*url.URL{u("spiffe://x/y"), u("msgmesh://app/a.b-c_9")}, "a.b-c_9"},
		{"none", nil, ""},
		{"only other schemes", []*url.URL{u("spiffe://x/y")}, ""},
		{"two apps", []*url.URL{u("msgmesh://app/a"), u("msgmesh://app/b")}, ""},
		{"wrong host", []*url.URL{u("msgmesh://svc/orders")}, ""},
		{"empty name", []*url.URL{u("msgmesh://app/")}, ""},
		{"nested path", []*url.URL{u("msgmesh://app/a/b")}, ""},
		{"query", []*url.URL{u("msgmesh://app/a?x=1")}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AppOf(&x509.Certificate{URIs: tt.uris})
			if got != tt.want || (err == nil) != (tt.want != "") {
				t.Errorf("AppOf = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestIdentityUpdate(t *testing.T) {
	ca := newCA(t)
	id := identity(t, ca, "orders")
	c, k := issue(t, ca, "billing", time.Hour)
	if err := id.Update(c, k); !errors.Is(err, ErrInvalidApp) {
		t.Errorf("Update to another app = %v, want ErrInvalidApp", err)
	}
	c2, k2 := issue(t, ca, "orders", 3*time.Hour)
	if err := id.Update(c2, k); !errors.Is(err, ErrBadPEM) {
		t.Errorf("Update with a mismatched key = %v, want ErrBadPEM", err)
	}
	before := id.NotAfter()
	if err := id.Update(c2, k2); err != nil {
		t.Fatal(err)
	}
	if !id.NotAfter().After(before) {
		t.Errorf("NotAfter %v not after %v after renewal", id.NotAfter(), before)
	}
	if _, err := NewIdentity("billing", c2, k2); !errors.Is(err, ErrInvalidApp) {
		t.Errorf("NewIdentity for the wrong app = %v", err)
	}
}

func TestCertPool(t *testing.T) {
	a, b := newCA(t), newCA(t)
	bundle := append(a.CertPEM(), b.CertPEM()...)
	pool, err := CertPool(bundle)
	if err != nil {
		t.Fatal(err)
	}
	for _, ca := range []*CA{a, b} {
		c, _ := issue(t, ca, "orders", time.Hour)
		leaf, _ := ParseCertPEM(c)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("bundle does not trust a CA in it: %v", err)
		}
	}
	leafPEM, _ := issue(t, a, "orders", time.Hour)
	if _, err := CertPool(leafPEM); !errors.Is(err, ErrBadPEM) {
		t.Errorf("CertPool(leaf) = %v, want ErrBadPEM", err)
	}
	if _, err := CertPool(nil); !errors.Is(err, ErrBadPEM) {
		t.Errorf("CertPool(nil) = %v, want ErrBadPEM", err)
	}
}

// handshake runs one real TLS handshake over TCP on 127.0.0.1 and returns
// the server's and the client's errors. TLS 1.3 clients learn that the
// server refused their certificate only on their first read, so the client
// side reads one byte after its handshake.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		err = tc.HandshakeContext(ctx)
		if err == nil {
			_, err = tc.Write([]byte{1})
		}
		done <- err
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tc := tls.Client(raw, client)
	clientErr = tc.HandshakeContext(ctx)
	if clientErr == nil {
		_, clientErr = tc.Read(make([]byte, 1))
	}
	if clientErr != nil {
		_ = raw.Close() // unblock a server still waiting for the client's certificate
	}
	return <-done, clientErr
}

func TestMutualTLS(t *testing.T) {
	ca, otherCA := newCA(t), newCA(t)
	orders := identity(t, ca, "orders")
	srv, err := ServerTLS(orders, ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	client := func(id *Identity, caPEM []byte) *tls.Config {
		c, err := ClientTLS(id, caPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// rogue presents id's certificate (or none) and accepts any server, so
	// that only the server's checks stand between it and the listener.
	rogue := func(id *Identity) *tls.Config {
		return &tls.Config{
			MinVersion:         tls.VersionTLS13,
			InsecureSkipVerify: true, // the attacker does not care who the server is
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if id == nil {
					return &tls.Certificate{}, nil
				}
				return id.cert.Load(), nil
			},
		}
	}
	expiredCert, expiredKey := issue(t, ca, "orders", time.Nanosecond)
	expired, err := NewIdentity("orders", expiredCert, expiredKey)
	if err != nil {
		t.Fatal(err)
	}

	// want: "ok"; "server" (the server refuses; with peer, by the app
	// check); "client" (the client refuses the server; with peer, by the
	// app check or the chain check of ClientTLS).
	tests := []struct {
		name   string
		server *tls.Config
		client *tls.Config
		want   string
		peer   bool
	}{
		{name: "same app, same CA", server: srv, client: client(orders, ca.CertPEM()), want: "ok"},
		{name: "client of another app", server: srv, client: rogue(identity(t, ca, "billing")), want: "server", peer: true},
		{name: "client from another CA", server: srv, client: rogue(identity(t, otherCA, "orders")), want: "server"},
		{name: "client with no certificate", server: srv, client: rogue(nil), want: "server"},
		{name: "client with an expired certificate", server: srv, client: rogue(expired), want: "server"},
		{name: "server of another app", server: must(ServerTLS(identity(t, ca, "billing"), ca.CertPEM())), client: client(orders, ca.CertPEM()), want: "client", peer: true},
		{name: "server from another CA", server: must(ServerTLS(identity(t, otherCA, "orders"), append(ca.CertPEM(), otherCA.CertPEM()...))), client: client(orders, ca.CertPEM()), want: "client", peer: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serr, cerr := handshake(t, tt.server, tt.client)
			t.Logf("server: %v; client: %v", serr, cerr)
			switch tt.want {
			case "ok":
				if serr != nil || cerr != nil {
					t.Fatalf("want success")
				}
				return
			case "server":
				if serr == nil || cerr == nil {
					t.Fatalf("want the server to refuse the client")
				}
				if tt.peer && !errors.Is(serr, ErrPeer) {
					t.Errorf("server error is not the app check's")
				}
			case "client":
				if cerr == nil || serr == nil {
					t.Fatalf("want the client to refuse the server")
				}
				if tt.peer && !errors.Is(cerr, ErrPeer) {
					t.Errorf("client error is not a PeerError")
				}
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// A renewed certificate is presented by the next handshake.
func TestRotation(t *testing.T) {
	ca := newCA(t)
	srvID := identity(t, ca, "orders")
	srv, _ := ServerTLS(srvID, ca.CertPEM())
	cliID := identity(t, ca, "orders")
	cli, _ := ClientTLS(cliID, ca.CertPEM())
	var seen []string
	cli.VerifyConnection = func(next func(tls.ConnectionState) error) func(tls.ConnectionState) error {
		return func(cs tls.ConnectionState) error {
			seen = append(seen, cs.PeerCertificates[0].SerialNumber.String())
			return next(cs)
		}
	}(cli.VerifyConnection)
	if s, c := handshake(t, srv, cli); s != nil || c != nil {
		t.Fatal(s, c)
	}
	cert, key := issue(t, ca, "orders", time.Hour)
	if err := srvID.Update(cert, key); err != nil {
		t.Fatal(err)
	}
	if s, c := handshake(t, srv, cli); s != nil || c != nil {
		t.Fatal(s, c)
	}
	leaf, _ := ParseCertPEM(cert)
	if len(seen) != 2 || seen[0] == seen[1] || seen[1] != leaf.SerialNumber.String() {
		t.Errorf("serials seen %v, want the renewed one (%s) second", seen, leaf.SerialNumber)
	}
}

func TestCheckPeer(t *testing.T) {
	ca := newCA(t)
	c, _ := issue(t, ca, "orders", time.Hour)
	leaf, _ := ParseCertPEM(c)
	good := tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf, ca.Certificate()}}}
	if err := CheckPeer(good, "orders"); err != nil {
		t.Errorf("CheckPeer(good) = %v", err)
	}
	if err := CheckPeer(good, "billing"); !errors.Is(err, ErrPeer) {
		t.Errorf("CheckPeer(other app) = %v", err)
	}
	unverified := good
	unverified.VerifiedChains = nil
	if err := CheckPeer(unverified, "orders"); !errors.Is(err, ErrPeer) {
		t.Errorf("CheckPeer(unverified) = %v", err)
	}
	incomplete := good
	incomplete.HandshakeComplete = false
	if err := CheckPeer(incomplete, "orders"); !errors.Is(err, ErrPeer) {
		t.Errorf("CheckPeer(incomplete) = %v", err)
	}
}
