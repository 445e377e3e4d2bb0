package pki

import (
	"errors"
	"fmt"
)

// Errors callers branch on with errors.Is.
var (
	// ErrInvalidApp: an app name that is not a registrable app name
	// (^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$, the registry's rule).
	ErrInvalidApp = errors.New("pki: invalid app name")
	// ErrBadPEM: input that is not the PEM block expected (certificate,
	// private key, certificate request), or whose content does not parse.
	ErrBadPEM = errors.New("pki: bad PEM input")
	// ErrBadCSR: a certificate request whose signature does not verify,
	// whose key type is refused, or that asks for another app's identity.
	ErrBadCSR = errors.New("pki: bad certificate request")
	// ErrPeer: a TLS peer was refused: its certificate does not chain to
	// the CA, or it names no app or another app (see *PeerError).
	ErrPeer = errors.New("pki: peer refused")
)

// PeerError says why a TLS peer was refused.
type PeerError struct {
	Want   string // the app this side serves
	Got    string // the app the peer's certificate names; empty if none
	Reason string
}

func (e *PeerError) Error() string {
	if e.Got != "" {
		return fmt.Sprintf("pki: peer refused: certificate is for app %q, this side serves %q: %s", e.Got, e.Want, e.Reason)
	}
	return fmt.Sprintf("pki: peer refused (this side serves app %q): %s", e.Want, e.Reason)
}

func (e *PeerError) Unwrap() error { return ErrPeer }
