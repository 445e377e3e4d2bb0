package ctrlplane

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/store"
	"github.com/msgmesh/msgmesh/internal/pki"
)

// The forwarding CA (docs/forwarding.md): sibling sidecars of one app
// authenticate each other with certificates this CA issues, naming the app.
// It is created on first use and kept in the store, so every replica
// issues from the same CA.
const (
	caKey = "pki/ca"
	// certTTL is a forwarding certificate's lifetime; sidecars renew at
	// two thirds of it.
	certTTL = 24 * time.Hour
)

// caRecord is the CA as stored under caKey: its certificate, and its
// private key in clear (Key) or, with a seal key, sealed (KeySealed).
type caRecord struct {
	Cert      string `json:"cert"`
	Key       string `json:"key,omitempty"`
	KeySealed string `json:"key_sealed,omitempty"`
}

// ErrSealKey: the stored CA key is sealed and the control plane was not
// given the key it was sealed with.
var ErrSealKey = errors.New("ctrlplane: the forwarding CA's private key in the store is sealed with another seal key, or none was given")

// sealer encrypts the CA key at rest with a key derived from the operator's
// seal key (Options.SealKey): AES-256-GCM, the CA certificate as
// additional data, so a sealed key only opens for its own certificate.
type sealer struct{ aead cipher.AEAD }

const sealInfo = "msgmesh ctrlplane seal v1: forwarding CA key"

func newSealer(secret string) (*sealer, error) {
	if len(secret) < MinSealKeyLen {
		return nil, fmt.Errorf("ctrlplane: the seal key is %d bytes; use at least %d random bytes (head -c 32 /dev/urandom | base64)", len(secret), MinSealKeyLen)
	}
	key, err := hkdf.Key(sha256.New, []byte(secret), nil, sealInfo, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

func (sl *sealer) seal(plain, aad []byte) string {
	nonce := make([]byte, sl.aead.NonceSize())
	_, _ = rand.Read(nonce) // never fails (crypto/rand)
	return base64.StdEncoding.EncodeToString(sl.aead.Seal(nonce, nonce, plain, aad))
}

func (sl *sealer) open(sealed string, aad []byte) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil || len(b) < sl.aead.NonceSize() {
		return nil, fmt.Errorf("%w: not a sealed value", ErrSealKey)
	}
	n := sl.aead.NonceSize()
	p, err := sl.aead.Open(nil, b[:n], b[n:], aad)
	if err != nil {
		return nil, ErrSealKey
	}
	return p, nil
}

// encode is the stored form of a CA: its key sealed when there is a
// sealer.
func (s *Server) encodeCA(ca *pki.CA) ([]byte, error) {
	keyPEM, err := ca.KeyPEM()
	if err != nil {
		return nil, err
	}
	rec := caRecord{Cert: string(ca.CertPEM())}
	if s.sealer != nil {
		rec.KeySealed = s.sealer.seal(keyPEM, ca.CertPEM())
	} else {
		rec.Key = string(keyPEM)
	}
	return json.Marshal(rec)
}

// decodeCA restores a stored CA and says whether its stored form differs
// from what encodeCA would write now (a clear key and a seal key given).
func (s *Server) decodeCA(v []byte) (*pki.CA, bool, error) {
	var rec caRecord
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, false, fmt.Errorf("decoding the stored CA: %w", err)
	}
	key := []byte(rec.Key)
	if rec.KeySealed != "" {
		if s.sealer == nil {
			return nil, false, fmt.Errorf("%w: start the control plane with its seal key ($%s or --seal-key-file)", ErrSealKey, SealKeyEnv)
		}
		var err error
		if key, err = s.sealer.open(rec.KeySealed, []byte(rec.Cert)); err != nil {
			return nil, false, fmt.Errorf("%w ($%s or --seal-key-file)", err, SealKeyEnv)
		}
	}
	ca, err := pki.LoadCA([]byte(rec.Cert), key)
	if err != nil {
		return nil, false, err
	}
	return ca, s.sealer != nil && rec.KeySealed == "", nil
}

// loadCA reads the stored CA, if there is one, when the Server starts: a
// sealed key that does not open stops the start, and a clear key is
// sealed when a seal key is given. It reports whether it rewrote the CA.
func (s *Server) loadCA(ctx context.Context) (bool, error) {
	for range maxUpdateAttempts {
		e, err := s.store.Get(ctx, caKey)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		ca, reseal, err := s.decodeCA(e.Value)
		if err != nil {
			return false, err
		}
		if !reseal {
			s.ca = ca
			return false, nil
		}
		b, err := s.encodeCA(ca)
		if err != nil {
			return false, err
		}
		if _, err := s.store.Put(ctx, caKey, b, e.ModRev); errors.Is(err, store.ErrConflict) {
			continue
		} else if err != nil {
			return false, err
		}
		s.ca = ca
		s.log.Info("the forwarding CA's private key is sealed with the seal key now")
		return true, nil
	}
	return false, errorf(ErrBusy, "the stored CA: too many concurrent writes to it; retry")
}

// forwardingCA loads the CA, creating it if the store has none.
func (s *Server) forwardingCA(ctx context.Context) (*pki.CA, error) {
	s.caMu.Lock()
	defer s.caMu.Unlock()
	if s.ca != nil {
		return s.ca, nil
	}
	for {
		e, err := s.store.Get(ctx, caKey)
		if err == nil {
			ca, _, err := s.decodeCA(e.Value)
			if err != nil {
				return nil, err
			}
			s.ca = ca
			return ca, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		ca, err := pki.NewCA()
		if err != nil {
			return nil, err
		}
		b, err := s.encodeCA(ca)
		if err != nil {
			return nil, err
		}
		if _, err := s.store.Put(ctx, caKey, b, 0); err != nil && !errors.Is(err, store.ErrConflict) {
			return nil, err
		}
		// Created here or, on a conflict, by another replica: read it back.
	}
}

// handleCertificate signs a sidecar's CSR for its app: POST
// /v1/apps/{app}/certificate {"csr": PEM} with the app's credential (or the
// operator token) → {"certificate": PEM, "ca": PEM, "not_after": time}.
func (s *Server) handleCertificate(ctx context.Context, w http.ResponseWriter, r *http.Request, app string) error {
	if _, _, err := s.getApp(ctx, app); err != nil {
		return err
	}
	var req api.CertificateRequest
	if err := decodeBody(r.Body, &req, false); err != nil {
		return err
	}
	ca, err := s.forwardingCA(ctx)
	if err != nil {
		return err
	}
	cert, err := ca.Issue([]byte(req.CSR), app, certTTL)
	if err != nil {
		return api.Invalid("csr", "%v", err)
	}
	s.log.Info("forwarding certificate issued", "app", app)
	writeJSON(w, http.StatusOK, api.Certificate{Certificate: string(cert), CA: string(ca.CertPEM()), NotAfter: time.Now().Add(certTTL)})
	return nil
}
