package ctrlplane

import (
	"context"
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

type caRecord struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
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
			var rec caRecord
			if err := json.Unmarshal(e.Value, &rec); err != nil {
				return nil, fmt.Errorf("decoding the stored CA: %w", err)
			}
			ca, err := pki.LoadCA([]byte(rec.Cert), []byte(rec.Key))
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
		keyPEM, err := ca.KeyPEM()
		if err != nil {
			return nil, err
		}
		b, _ := json.Marshal(caRecord{Cert: string(ca.CertPEM()), Key: string(keyPEM)})
		if _, err := s.store.Put(ctx, caKey, b, 0); err != nil && !errors.Is(err, store.ErrConflict) {
			return nil, err
		}
		// Created here or, on a conflict, by another replica: read it back.
	}
}

// handleCertificate signs a sidecar's CSR for its app: POST
// /v1/apps/{app}/certificate {"csr": PEM} with the app's credential (or the
// operator token) → {"certificate": PEM, "ca": PEM, "not_after": time}.
func (s *Server) handleCertificate(w http.ResponseWriter, r *http.Request) {
	if err := s.serveCertificate(w, r); err != nil {
		s.writeError(w, r, err)
	}
}

func (s *Server) serveCertificate(w http.ResponseWriter, r *http.Request) error {
	app, err := pathApp(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.StoreTimeout)
	defer cancel()
	if _, err := s.authorize(ctx, r, app); err != nil {
		return err
	}
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
