// Package pki is the small certificate authority behind the forwarding
// service (docs/design.md flow 8, docs/forwarding.md): sibling sidecars of one
// app authenticate each other with mutual TLS, using certificates a CA held
// by the control plane issues.
//
// A sidecar's identity is its app. Its certificate carries exactly one URI
// SAN, msgmesh://app/<app> (AppURI), and no DNS or IP names: instances come
// and go on changing addresses, and what a forwarding listener must know is
// "this peer is a sidecar of my app", not "this peer is host X". So both
// sides verify the certificate chain against the CA and then compare the
// peer's app with their own (ServerTLS, ClientTLS); hostnames are not
// checked.
//
// Roles:
//
//   - control plane: NewCA once (or LoadCA from its store), then Issue for
//     each request it has authorised with the app's credential;
//   - sidecar: NewKeyAndCSR, send the CSR, get the certificate back,
//     NewIdentity, then ServerTLS for its forwarding listener and ClientTLS
//     for its forwarder; Identity.Update when it renews.
//
// Keys are ECDSA P-256. Certificates and keys travel as PEM (CERTIFICATE,
// PRIVATE KEY in PKCS #8, CERTIFICATE REQUEST).
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"regexp"
	"sync/atomic"
	"time"
)

const (
	// URIScheme and uriHost make the SAN msgmesh://app/<app>.
	URIScheme = "msgmesh"
	uriHost   = "app"

	// DefaultCATTL is how long NewCA's certificate is valid.
	DefaultCATTL = 10 * 365 * 24 * time.Hour
	// DefaultTTL is the validity of an issued certificate when Issue is
	// given ttl <= 0.
	DefaultTTL = 24 * time.Hour
	// backdate covers clock skew between the CA and the sidecars.
	backdate = 5 * time.Minute
)

var appName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// ValidApp checks that app can be named in a certificate: the registry's
// app name rule.
func ValidApp(app string) error {
	if !appName.MatchString(app) {
		return fmt.Errorf("%w: %q (want ^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$)", ErrInvalidApp, app)
	}
	return nil
}

// AppURI returns the URI SAN naming app: msgmesh://app/<app>.
func AppURI(app string) *url.URL {
	return &url.URL{Scheme: URIScheme, Host: uriHost, Path: "/" + app}
}

// AppOf returns the app a certificate names in its URI SAN. A certificate
// with no such URI, more than one, or an invalid name names no app.
func AppOf(cert *x509.Certificate) (string, error) {
	app := ""
	for _, u := range cert.URIs {
		if u.Scheme != URIScheme {
			continue
		}
		if u.Host != uriHost || len(u.Path) < 2 || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return "", fmt.Errorf("%w: malformed app URI %q", ErrInvalidApp, u)
		}
		if app != "" {
			return "", fmt.Errorf("%w: certificate names more than one app", ErrInvalidApp)
		}
		app = u.Path[1:]
	}
	if app == "" {
		return "", fmt.Errorf("%w: certificate names no app (no %s://%s/ URI SAN)", ErrInvalidApp, URIScheme, uriHost)
	}
	if err := ValidApp(app); err != nil {
		return "", err
	}
	return app, nil
}

// CA is a certificate authority: a self-signed ECDSA P-256 certificate and
// its key. It is safe for concurrent use (Issue only reads it).
type CA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

// NewCA creates a CA valid for DefaultCATTL.
func NewCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generating CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	skid, err := keyID(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"msgmesh"}, CommonName: "msgmesh forwarding CA"},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(DefaultCATTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // signs leaves only
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: self-signing CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parsing CA: %w", err)
	}
	return &CA{cert: cert, key: key, certPEM: encodePEM("CERTIFICATE", der)}, nil
}

// LoadCA restores a CA from the PEM that CertPEM and KeyPEM returned.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%w: certificate is not a CA", ErrBadPEM)
	}
	k, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%w: the key is not the CA certificate's ECDSA key", ErrBadPEM)
	}
	return &CA{cert: cert, key: key, certPEM: encodePEM("CERTIFICATE", cert.Raw)}, nil
}

// CertPEM returns the CA certificate: what every sidecar trusts.
func (ca *CA) CertPEM() []byte { return append([]byte(nil), ca.certPEM...) }

// KeyPEM returns the CA's private key (PKCS #8). Whoever holds it can mint
// an identity for any app: store it like a root credential.
func (ca *CA) KeyPEM() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: encoding CA key: %w", err)
	}
	return encodePEM("PRIVATE KEY", der), nil
}

// Certificate returns the parsed CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Issue signs a certificate for app over the key in csrPEM, valid for ttl
// (DefaultTTL if ttl <= 0; never past the CA's own expiry). The caller has
// already checked that the requester may act as app (the control plane
// checks the app's credential): the identity comes from app, not from the
// request. A request that names an app itself must name the same one;
// its other names (DNS, IP, e-mail) are ignored.
func (ca *CA) Issue(csrPEM []byte, app string, ttl time.Duration) ([]byte, error) {
	if err := ValidApp(app); err != nil {
		return nil, err
	}
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: want a CERTIFICATE REQUEST block", ErrBadPEM)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPEM, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	for _, u := range csr.URIs {
		if u.Scheme == URIScheme && u.String() != AppURI(app).String() {
			return nil, fmt.Errorf("%w: it asks for %s, the credential is for app %q", ErrBadCSR, u, app)
		}
	}
	return ca.IssueForKey(csr.PublicKey, app, ttl)
}

// IssueForKey is Issue for a caller that holds the public key itself.
// Accepted keys: ECDSA P-256/P-384/P-521, Ed25519, RSA of 2048 bits or more.
func (ca *CA) IssueForKey(pub crypto.PublicKey, app string, ttl time.Duration) ([]byte, error) {
	if err := ValidApp(app); err != nil {
		return nil, err
	}
	if err := checkKey(pub); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(ttl)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"msgmesh"}, CommonName: app},
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		// A sidecar is both ends: its listener serves, its forwarder dials.
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{AppURI(app)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: signing certificate for app %q: %w", app, err)
	}
	return encodePEM("CERTIFICATE", der), nil
}

func checkKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("%w: ECDSA curve %s refused", ErrBadCSR, k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 {
			return nil
		}
		return fmt.Errorf("%w: RSA key of %d bits, want at least 2048", ErrBadCSR, k.N.BitLen())
	}
	return fmt.Errorf("%w: key type %T refused", ErrBadCSR, pub)
}

// NewKeyAndCSR makes a fresh ECDSA P-256 key for a sidecar of app and a
// certificate request for it naming the app. The key never leaves the
// sidecar; the request goes to the control plane.
func NewKeyAndCSR(app string) (keyPEM, csrPEM []byte, err error) {
	if err := ValidApp(app); err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generating key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{Organization: []string{"msgmesh"}, CommonName: app},
		URIs:    []*url.URL{AppURI(app)},
	}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: creating certificate request: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: encoding key: %w", err)
	}
	return encodePEM("PRIVATE KEY", kder), encodePEM("CERTIFICATE REQUEST", der), nil
}

// ParseCertPEM parses the first CERTIFICATE block of p.
func ParseCertPEM(p []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(p)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%w: want a CERTIFICATE block", ErrBadPEM)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPEM, err)
	}
	return c, nil
}

// CertPool parses one or more CERTIFICATE blocks (a trust bundle: during a
// CA rotation it holds the old and the new CA) into a pool.
func CertPool(caPEM []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := caPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: CA bundle: %w", ErrBadPEM, err)
		}
		if !c.IsCA {
			return nil, fmt.Errorf("%w: CA bundle holds a certificate that is not a CA (%s)", ErrBadPEM, c.Subject)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: CA bundle holds no CERTIFICATE block", ErrBadPEM)
	}
	return pool, nil
}

func parseKeyPEM(p []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(p)
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: want a PRIVATE KEY (PKCS #8) block", ErrBadPEM)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPEM, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: key type %T cannot sign", ErrBadPEM, k)
	}
	return s, nil
}

func encodePEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil // never zero
}

func keyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("pki: encoding public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return sum[:20], nil
}

// Identity is a sidecar's own certificate and key, for its app. Update
// swaps them atomically, so a renewed certificate is used by the next
// handshake without restarting listeners or dropping connections. Safe for
// concurrent use.
type Identity struct {
	app  string
	cert atomic.Pointer[tls.Certificate]
}

// NewIdentity checks that certPEM and keyPEM are a pair and that the
// certificate names app.
func NewIdentity(app string, certPEM, keyPEM []byte) (*Identity, error) {
	if err := ValidApp(app); err != nil {
		return nil, err
	}
	id := &Identity{app: app}
	if err := id.Update(certPEM, keyPEM); err != nil {
		return nil, err
	}
	return id, nil
}

// Update replaces the certificate and key (a renewal). The new certificate
// must name the same app. certPEM may be followed by intermediates.
func (id *Identity) Update(certPEM, keyPEM []byte) error {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadPEM, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return fmt.Errorf("%w: %w", ErrBadPEM, err)
		}
	}
	app, err := AppOf(c.Leaf)
	if err != nil {
		return err
	}
	if app != id.app {
		return fmt.Errorf("%w: certificate is for app %q, identity is app %q", ErrInvalidApp, app, id.app)
	}
	id.cert.Store(&c)
	return nil
}

// App returns the identity's app.
func (id *Identity) App() string { return id.app }

// NotAfter returns when the current certificate expires: renew well before.
func (id *Identity) NotAfter() time.Time { return id.cert.Load().Leaf.NotAfter }

// ServerTLS returns the configuration of a forwarding listener: TLS 1.3
// only; a client certificate is required and must chain to a CA in caPEM
// and name the identity's app; anything else fails the handshake, before
// the server reads a single frame. Session tickets are off, so every
// connection is a full handshake that checks the peer afresh.
func ServerTLS(id *Identity, caPEM []byte) (*tls.Config, error) {
	pool, err := CertPool(caPEM)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		GetCertificate:         func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return id.cert.Load(), nil },
		ClientAuth:             tls.RequireAndVerifyClientCert,
		ClientCAs:              pool,
		SessionTicketsDisabled: true,
		// crypto/tls has verified the chain (ClientAuth above) before it
		// calls VerifyConnection; this adds the app check.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.VerifiedChains) == 0 {
				return &PeerError{Want: id.app, Reason: "no verified certificate chain"}
			}
			return checkApp(cs.PeerCertificates, id.app)
		},
	}, nil
}

// ClientTLS returns the configuration a forwarder dials siblings with: TLS
// 1.3 only; it presents the identity's certificate, and the server's must
// chain to a CA in caPEM and name the same app. Siblings are identified by
// app, not by host name, so the host-name check of crypto/tls is replaced
// by this chain-and-app check (InsecureSkipVerify only turns off the
// built-in check; VerifyConnection does the whole verification).
func ClientTLS(id *Identity, caPEM []byte) (*tls.Config, error) {
	pool, err := CertPool(caPEM)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return id.cert.Load(), nil },
		InsecureSkipVerify:   true, // replaced by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := verifyChain(cs.PeerCertificates, pool, x509.ExtKeyUsageServerAuth); err != nil {
				return &PeerError{Want: id.app, Reason: err.Error()}
			}
			return checkApp(cs.PeerCertificates, id.app)
		},
	}, nil
}

// CheckPeer re-checks a finished handshake: the peer presented a
// certificate that crypto/tls verified against the CA pool, naming app.
// A forwarding listener calls it after the handshake, so that a
// misconfigured tls.Config cannot let an unauthenticated peer through.
func CheckPeer(cs tls.ConnectionState, app string) error {
	if !cs.HandshakeComplete {
		return &PeerError{Want: app, Reason: "handshake not complete"}
	}
	if len(cs.VerifiedChains) == 0 {
		return &PeerError{Want: app, Reason: "no verified certificate chain"}
	}
	return checkApp(cs.PeerCertificates, app)
}

func verifyChain(certs []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage) error {
	if len(certs) == 0 {
		return fmt.Errorf("no certificate presented")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	return err
}

func checkApp(certs []*x509.Certificate, want string) error {
	if len(certs) == 0 {
		return &PeerError{Want: want, Reason: "no certificate presented"}
	}
	got, err := AppOf(certs[0])
	if err != nil {
		return &PeerError{Want: want, Reason: err.Error()}
	}
	if got != want {
		return &PeerError{Want: want, Got: got, Reason: "a sidecar only takes deliveries from sidecars of its own app"}
	}
	return nil
}
