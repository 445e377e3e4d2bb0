package ctrlplane

import (
	"context"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/store"
)

// Credentials at rest (docs/ctrlplane.md, "Credentials at rest"). The
// store never holds an app's credential, only:
//
//   - its SHA-256, which a presented credential is checked against (the
//     hashes compared in constant time). A credential is 256 random bits,
//     so a fast unsalted hash is enough: there is no dictionary to try and
//     2^256 guesses to make, which a slow password hash (bcrypt, Argon2)
//     would only make slower for the server, and a key (HMAC) would sit in
//     the same place as the hashes;
//   - its public key: an X25519 key pair is derived from the credential
//     (HPKE DeriveKeyPair, RFC 9180), and on a rotation with a grace
//     period the new credential is sealed to the old one's public key
//     (HPKE base mode, DHKEM(X25519), HKDF-SHA256, AES-256-GCM). A sidecar
//     that still presents the old credential opens it with that credential
//     and gets the new one in its config, as before hashing; whoever reads
//     the store cannot.
//
// Records written before hashing (clear "credential" and
// "previous_credential") are read as if migrated, and migrateCredentials
// rewrites them when the Server starts.

// credentialInfo binds the sealed credential to its use.
const credentialInfo = "msgmesh ctrlplane credential rotation v1"

var (
	credentialKEM  = hpke.DHKEM(ecdh.X25519())
	credentialKDF  = hpke.HKDFSHA256()
	credentialAEAD = hpke.AES256GCM()
)

// hashCredential is the credential's SHA-256, base64url.
func hashCredential(cred string) string {
	h := sha256.Sum256([]byte(cred))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// hashMatches compares cred's hash with a stored one in constant time.
func hashMatches(cred, hash string) bool {
	if cred == "" || hash == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(hashCredential(cred)), []byte(hash)) == 1
}

// credentialKey derives the key pair of a credential.
func credentialKey(cred string) (hpke.PrivateKey, error) {
	k, err := credentialKEM.DeriveKeyPair([]byte(cred))
	if err != nil {
		return nil, fmt.Errorf("deriving the credential's key: %w", err)
	}
	return k, nil
}

// credentialPublicKey is the public key of a credential, base64url.
func credentialPublicKey(cred string) (string, error) {
	k, err := credentialKey(cred)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(k.PublicKey().Bytes()), nil
}

// sealCredential seals cred to the public key pub (credentialPublicKey of
// another credential).
func sealCredential(pub, cred string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(pub)
	if err != nil {
		return "", fmt.Errorf("stored credential public key: %w", err)
	}
	pk, err := credentialKEM.NewPublicKey(b)
	if err != nil {
		return "", fmt.Errorf("stored credential public key: %w", err)
	}
	ct, err := hpke.Seal(pk, credentialKDF, credentialAEAD, []byte(credentialInfo), []byte(cred))
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(ct), nil
}

// openCredential opens what sealCredential sealed to with's public key.
func openCredential(with, sealed string) (string, error) {
	ct, err := base64.RawURLEncoding.DecodeString(sealed)
	if err != nil {
		return "", fmt.Errorf("stored sealed credential: %w", err)
	}
	k, err := credentialKey(with)
	if err != nil {
		return "", err
	}
	p, err := hpke.Open(k, credentialKDF, credentialAEAD, []byte(credentialInfo), ct)
	if err != nil {
		return "", fmt.Errorf("opening the sealed credential: %w", err)
	}
	return string(p), nil
}

// setCredential makes cred the app's current credential, keeping the one
// it replaces valid until expires (not at all if expires is zero): the
// new one is then sealed for holders of the old one.
func (a *appRecord) setCredential(cred string, expires time.Time) error {
	pub, err := credentialPublicKey(cred)
	if err != nil {
		return err
	}
	a.PreviousHash, a.PreviousExpires, a.CredentialSealed = "", time.Time{}, ""
	if !expires.IsZero() && a.CredentialHash != "" {
		sealed, err := sealCredential(a.CredentialPublicKey, cred)
		if err != nil {
			return err
		}
		a.PreviousHash, a.PreviousExpires, a.CredentialSealed = a.CredentialHash, expires, sealed
	}
	a.CredentialHash, a.CredentialPublicKey = hashCredential(cred), pub
	return nil
}

// credentialMatch says which of an app's credentials a presented one is.
type credentialMatch int

const (
	noCredential credentialMatch = iota
	currentCredential
	previousCredential // before the last rotation, still in its grace period
)

// matchCredential checks cred against the app's current credential and
// its unexpired previous one. Both hashes are compared, whatever the
// first says.
func (a *appRecord) matchCredential(cred string, now time.Time) credentialMatch {
	cur := hashMatches(cred, a.CredentialHash)
	prev := hashMatches(cred, a.PreviousHash) && now.Before(a.PreviousExpires)
	switch {
	case cur:
		return currentCredential
	case prev:
		return previousCredential
	}
	return noCredential
}

// credentialsFor fills the credential fields of cfg for the principal that
// reads it: the credential it presented (the current one), or, for the
// previous credential during its grace period, the current one opened with
// it. The operator gets none: the control plane has only hashes. A
// credential that is no longer valid is ErrUnauthorized.
func (a *appRecord) credentialsFor(cfg *api.AppConfig, who principal, now time.Time) error {
	if now.Before(a.PreviousExpires) && a.PreviousHash != "" {
		cfg.PreviousCredentialExpires = a.PreviousExpires
	}
	if who.operator {
		return nil
	}
	switch a.matchCredential(who.cred, now) {
	case currentCredential:
		cfg.Credential = who.cred
	case previousCredential:
		cur, err := openCredential(who.cred, a.CredentialSealed)
		if err != nil {
			return fmt.Errorf("app %q: %w", a.Name, err)
		}
		cfg.Credential, cfg.PreviousCredential = cur, who.cred
	default:
		return errorf(ErrUnauthorized, "the credential of app %q was rotated and is no longer valid", a.Name)
	}
	return nil
}

// migrateLegacy turns the clear-text credential fields of a record written
// before hashing into hashes (and a sealed current credential, while the
// previous one is in its grace period).
func (a *appRecord) migrateLegacy(now time.Time) error {
	if a.LegacyCredential == "" && a.LegacyPrevious == "" {
		return nil
	}
	cur, prev, expires := a.LegacyCredential, a.LegacyPrevious, a.PreviousExpires
	a.LegacyCredential, a.LegacyPrevious = "", ""
	if cur == "" {
		return nil // a stray clear previous credential: dropped
	}
	a.CredentialHash, a.CredentialPublicKey, a.PreviousHash, a.PreviousExpires, a.CredentialSealed = "", "", "", time.Time{}, ""
	if prev != "" && now.Before(expires) {
		if err := a.setCredential(prev, time.Time{}); err != nil {
			return err
		}
		return a.setCredential(cur, expires)
	}
	return a.setCredential(cur, time.Time{})
}

// migrateCredentials rewrites every app record that still holds clear-text
// credentials (written before hashing) into the hashed form, with the
// store's compare-and-swap, and returns how many it rewrote. Replicas that
// share an etcd store may run it at once: a record is rewritten by
// whichever comes first, and the others find nothing to do.
func (s *Server) migrateCredentials(ctx context.Context) (int, error) {
	entries, err := s.store.List(ctx, appPrefix)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		var legacy struct {
			Credential         string `json:"credential"`
			PreviousCredential string `json:"previous_credential"`
		}
		if err := json.Unmarshal(e.Value, &legacy); err != nil {
			return n, fmt.Errorf("decoding stored app %q: %w", e.Key, err)
		}
		if legacy.Credential == "" && legacy.PreviousCredential == "" {
			continue
		}
		name := strings.TrimPrefix(e.Key, appPrefix)
		// getApp reads the record migrated; writing it back stores that.
		_, _, err := s.updateApp(ctx, name, func(*appRecord) error { return nil })
		switch {
		case errors.Is(err, ErrNotFound):
			continue // deleted meanwhile
		case err != nil:
			return n, fmt.Errorf("migrating the credentials of app %q: %w", name, err)
		}
		n++
	}
	if n > 0 {
		s.log.Warn("app credentials were stored in clear text; stored their hashes instead", "apps", n)
	}
	return n, nil
}

// secureStore brings the secrets in the store to their current form:
// clear-text app credentials become hashes (migrateCredentials) and the
// forwarding CA's key is sealed when a seal key is given (loadCA). It
// reports whether it rewrote anything.
func (s *Server) secureStore(ctx context.Context) (bool, error) {
	n, err := s.migrateCredentials(ctx)
	if err != nil {
		return false, err
	}
	resealed, err := s.loadCA(ctx)
	return n > 0 || resealed, err
}

// secureBolt runs secureStore on the bbolt store of dataDir before any
// Server uses it, and compacts the file when it rewrote anything, so that
// the clear-text values do not linger in the file's free pages.
func secureBolt(ctx context.Context, dataDir, sealKey string, log *slog.Logger) error {
	st, err := store.OpenBolt(store.BoltPath(dataDir))
	if err != nil {
		return err
	}
	s := &Server{store: st, log: log, opts: Options{Now: time.Now}}
	if sealKey != "" {
		if s.sealer, err = newSealer(sealKey); err != nil {
			_ = st.Close()
			return err
		}
	}
	rewrote, err := s.secureStore(ctx)
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err != nil || !rewrote {
		return err
	}
	if err := store.CompactBolt(store.BoltPath(dataDir)); err != nil {
		return fmt.Errorf("compacting the store after securing its secrets: %w", err)
	}
	log.Info("store compacted: the clear-text secrets are gone from the file", "file", store.BoltPath(dataDir))
	return nil
}

// newCredential returns a fresh credential for app: 256 random bits.
func newCredential(app string) string {
	secret := make([]byte, 32)
	_, _ = rand.Read(secret) // never fails (crypto/rand)
	return credentialPrefix + app + "." + base64.RawURLEncoding.EncodeToString(secret)
}
