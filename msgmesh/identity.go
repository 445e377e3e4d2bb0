package msgmesh

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/msgmesh/msgmesh/msgmesh/registry"
)

// Who may do what (docs/protocol.md §9 is the spec and the threat model):
//
//   - a mesh connection acts as the one registered app it named in HELLO
//     (with the app's secret when the app has one); an HTTP publish acts as
//     the app in its Msgmesh-App header (secret in Authorization: Bearer),
//     or, without the header, as any app without a secret that produces
//     the topic;
//   - it may publish only to topics its app's registration produces, and
//     declare, pull and receive only (group, topic) pairs its app's
//     registration consumes; anything in another app's registration is
//     FORBIDDEN, anything in no registration NOT_REGISTERED;
//   - every request is checked against the registrations as they are now,
//     not as they were at HELLO: an app deregistered, or given a new
//     secret, while its connections are open loses them at the next
//     request, and their push subscriptions stop receiving at once;
//   - a sibling sidecar acts as the app its certificate names, and may
//     deliver only into that app's consumer groups.

// identity is who a connection or an HTTP request acts as.
type identity struct {
	app   string
	proof []byte // the hash of the secret it presented; nil: none
}

// grant is what one app's registration allows, in the snapshot.
type grant struct {
	produce map[string]string // topic → cluster
	consume map[routeKey]bool
	secret  []byte // SHA-256 of the app's secret; nil: none
}

// addGrants fills snap.apps and snap.anonProduce from the registrations
// whose union snap.produce and snap.consume already hold.
func (snap *snapshot) addGrants(regs []registry.Registration) {
	snap.apps = make(map[string]*grant, len(regs))
	snap.anonProduce = map[string]string{}
	for _, r := range regs {
		g := &grant{produce: make(map[string]string, len(r.Produce)), consume: make(map[routeKey]bool, len(r.Consume)), secret: r.SecretHash}
		for _, b := range r.Produce {
			g.produce[b.Topic] = snap.produce[b.Topic]
			if g.secret == nil {
				snap.anonProduce[b.Topic] = snap.produce[b.Topic]
			}
		}
		for _, b := range r.Consume {
			g.consume[routeKey{group: b.Group, topic: b.Topic}] = true
		}
		snap.apps[r.App] = g
	}
}

// wakeRoutes makes every route's dispatcher look again at its targets,
// after a registration change may have allowed or barred some of them.
func (s *Sidecar) wakeRoutes() {
	s.routesMu.Lock()
	defer s.routesMu.Unlock()
	for _, r := range s.routes {
		r.signal()
	}
}

// standing says whether an identity still holds, as of one snapshot.
type standing int

const (
	standingOK      standing = iota
	standingGone             // the app is not registered (any more)
	standingChanged          // the app's secret is not the one the identity proved
)

// lookup returns id's grant and whether id still stands as that app. It
// allocates nothing: route.pick calls it for every delivery.
func (snap *snapshot) lookup(id *identity, required bool) (*grant, standing) {
	g := snap.apps[id.app]
	switch {
	case g == nil:
		return nil, standingGone
	case !bytes.Equal(g.secret, id.proof), required && g.secret == nil:
		return g, standingChanged
	}
	return g, standingOK
}

// refusalReason is the msgmesh_rejected_total label of an identity or
// registration refusal.
func refusalReason(err error) string {
	switch {
	case errors.Is(err, ErrForbidden):
		return "forbidden"
	case errors.Is(err, ErrUnauthorized):
		return "unauthorized"
	}
	return "not_registered"
}

// grantOf is lookup with the error a request gets.
func (sc *Sidecar) grantOf(snap *snapshot, id *identity) (*grant, error) {
	if id == nil {
		return nil, fmt.Errorf("%w: no HELLO on this connection", ErrInvalid)
	}
	g, st := snap.lookup(id, sc.cfg.RequireAppSecrets)
	switch st {
	case standingGone:
		return nil, fmt.Errorf("%w: app %q is no longer registered with this sidecar", ErrNotRegistered, id.app)
	case standingChanged:
		return nil, fmt.Errorf("%w: app %q's secret is not the one this connection proved (the app was registered again); reconnect with its current secret", ErrUnauthorized, id.app)
	}
	return g, nil
}

// permits reports, without allocating, whether id may receive deliveries
// of k now.
func (snap *snapshot) permits(id *identity, k routeKey, required bool) bool {
	g, st := snap.lookup(id, required)
	return st == standingOK && g.consume[k]
}

// consumes reports whether app's registration consumes k.
func (snap *snapshot) consumes(app string, k routeKey) bool {
	g := snap.apps[app]
	return g != nil && g.consume[k]
}

// authenticate checks that app is registered and that secret is its secret
// (or that it has none, both are empty, and secrets are not required). HELLO
// and the HTTP API call it.
func (sc *Sidecar) authenticate(app, secret string) (identity, error) {
	g := sc.snap.Load().apps[app]
	switch {
	case g == nil:
		return identity{}, fmt.Errorf("%w: app %q is not registered with this sidecar (register it with POST /v1/registrations first)", ErrNotRegistered, app)
	case g.secret != nil:
		if err := checkSecret(app, g.secret, secret); err != nil {
			return identity{}, err
		}
	case secret != "":
		return identity{}, fmt.Errorf("%w: app %q has no secret, but one was sent: register the app with it (Authorization: Bearer on POST /v1/registrations) or send none", ErrUnauthorized, app)
	case sc.cfg.RequireAppSecrets:
		return identity{}, fmt.Errorf("%w: this sidecar requires app secrets and app %q has none yet: register it again (POST /v1/registrations) to set or be issued one", ErrUnauthorized, app)
	}
	return identity{app: app, proof: g.secret}, nil
}

// mayProduce returns the cluster of topic if id may publish to it. A nil id
// is an HTTP publish that names no app: it may publish to a topic that an
// app without a secret produces, unless secrets are required.
func (sc *Sidecar) mayProduce(id *identity, topic string) (string, error) {
	snap := sc.snap.Load()
	if id == nil {
		if sc.cfg.RequireAppSecrets {
			return "", fmt.Errorf("%w: this sidecar requires app secrets: name the app (header %s) and send its secret (Authorization: Bearer)", ErrUnauthorized, httpAppHeader)
		}
		if cluster, ok := snap.anonProduce[topic]; ok {
			return cluster, nil
		}
		if _, ok := snap.produce[topic]; ok {
			return "", fmt.Errorf("%w: topic %q is produced only by apps with a secret: name the app (header %s) and send its secret (Authorization: Bearer)", ErrUnauthorized, topic, httpAppHeader)
		}
		return "", fmt.Errorf("%w: topic %q is not produced by any registration (register it with POST /v1/registrations)", ErrNotRegistered, topic)
	}
	g, err := sc.grantOf(snap, id)
	if err != nil {
		return "", err
	}
	if cluster, ok := g.produce[topic]; ok {
		return cluster, nil
	}
	if _, ok := snap.produce[topic]; ok {
		return "", fmt.Errorf("%w: topic %q is produced by other apps' registrations, not by app %q's", ErrForbidden, topic, id.app)
	}
	return "", fmt.Errorf("%w: topic %q is not produced by app %q's registration (register it with POST /v1/registrations)", ErrNotRegistered, topic, id.app)
}

// mayConsume checks that id may declare, pull and receive k.
func (sc *Sidecar) mayConsume(snap *snapshot, id *identity, k routeKey) error {
	g, err := sc.grantOf(snap, id)
	if err != nil {
		return err
	}
	switch {
	case g.consume[k]:
		return nil
	case snap.consume[k]:
		return fmt.Errorf("%w: group %q on topic %q is in another app's registration, not in app %q's", ErrForbidden, k.group, k.topic, id.app)
	}
	return fmt.Errorf("%w: group %q does not consume topic %q in app %q's registration (register it with POST /v1/registrations)", ErrNotRegistered, k.group, k.topic, id.app)
}

// Secrets are what an app proves it is with. An issued one is 32 random
// bytes (256 bits) in unpadded base64url; one the app chooses must be 16 to
// 256 printable ASCII characters. Only their SHA-256 is stored: a fast hash
// is enough for secrets of that strength (no dictionary to try), and HELLO
// must stay cheap under a flood of connections.
const (
	minSecretLen = 16
	maxSecretLen = 256
)

func hashSecret(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("msgmesh: issuing a secret: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func checkSecretFormat(secret string) error {
	if n := len(secret); n < minSecretLen || n > maxSecretLen {
		return fmt.Errorf("%w: an app secret is %d to %d characters, got %d", ErrInvalid, minSecretLen, maxSecretLen, n)
	}
	for i := 0; i < len(secret); i++ {
		if c := secret[i]; c <= ' ' || c > '~' {
			return fmt.Errorf("%w: an app secret is printable ASCII without spaces; byte %d is 0x%02x", ErrInvalid, i, c)
		}
	}
	return nil
}

// checkSecret compares a presented secret with an app's stored hash in
// constant time.
func checkSecret(app string, hash []byte, secret string) error {
	if secret == "" {
		return fmt.Errorf("%w: app %q has a secret: send it (the HELLO secret, or Authorization: Bearer over HTTP)", ErrUnauthorized, app)
	}
	if subtle.ConstantTimeCompare(hashSecret(secret), hash) != 1 {
		return fmt.Errorf("%w: wrong secret for app %q", ErrUnauthorized, app)
	}
	return nil
}

// admit decides, inside the store's write transaction, whether reg may be
// stored given the current registrations and the secret the caller
// presented, and with which secret hash. It returns the registration to
// store and the secret it issued ("" if none):
//
//   - replacing the registration of an app that has a secret needs that
//     secret, and keeps it;
//   - otherwise a presented secret becomes the app's secret (an app opts
//     in; this is also how an app chooses its own secret);
//   - otherwise, when secrets are required, a new one is issued (returned
//     once; only its hash is kept);
//   - a consumer group belongs to one app as soon as that app or the one
//     registering it has a secret: groups are shared between apps only
//     when none of them has one (docs/design.md flow 3's union).
func (sc *Sidecar) admit(reg registry.Registration, secret string, current []registry.Registration) (registry.Registration, string, error) {
	var old *registry.Registration
	for i := range current {
		if current[i].App == reg.App {
			old = &current[i]
			break
		}
	}
	reg.SecretHash = nil
	var issued string
	switch {
	case old != nil && old.SecretHash != nil:
		if err := checkSecret(reg.App, old.SecretHash, secret); err != nil {
			return reg, "", fmt.Errorf("%w (replacing an app's registration needs its secret)", err)
		}
		reg.SecretHash = old.SecretHash
	case secret != "":
		if err := checkSecretFormat(secret); err != nil {
			return reg, "", err
		}
		reg.SecretHash = hashSecret(secret)
	case sc.cfg.RequireAppSecrets:
		var err error
		if issued, err = newSecret(); err != nil {
			return reg, "", err
		}
		reg.SecretHash = hashSecret(issued)
	}
	for _, o := range current {
		if o.App == reg.App || o.SecretHash == nil && reg.SecretHash == nil {
			continue
		}
		for _, b := range reg.Consume {
			for _, ob := range o.Consume {
				if b.Group == ob.Group {
					return reg, "", fmt.Errorf("%w: consumer group %q belongs to app %q; apps share a group only when none of them has a secret", ErrForbidden, b.Group, o.App)
				}
			}
		}
	}
	return reg, issued, nil
}

// mayDeregister is the check of Deregister: deleting the registration of
// an app that has a secret needs it.
func mayDeregister(reg registry.Registration, secret string) error {
	switch {
	case reg.SecretHash != nil:
		if err := checkSecret(reg.App, reg.SecretHash, secret); err != nil {
			return fmt.Errorf("%w (deleting an app's registration needs its secret)", err)
		}
	case secret != "":
		return fmt.Errorf("%w: app %q has no secret, but one was sent", ErrUnauthorized, reg.App)
	}
	return nil
}

// Identity on the HTTP API: the app a publish acts as, and the secret of
// the app a request acts as.
const httpAppHeader = "Msgmesh-App"

// bearer returns the secret of an "Authorization: Bearer <secret>" header;
// "" when there is none.
func bearer(r *http.Request) (string, error) {
	return bearerValue(r.Header.Get("Authorization"))
}

// bearerValue returns the secret of an Authorization value "Bearer
// <secret>" (the HTTP header, or the gRPC metadata); "" for none.
func bearerValue(h string) (string, error) {
	if h == "" {
		return "", nil
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", fmt.Errorf("%w: the Authorization header must be \"Bearer <app secret>\"", ErrUnauthorized)
	}
	return strings.TrimSpace(token), nil
}

// httpIdentity is who an HTTP publish acts as: the app of its Msgmesh-App
// header, authenticated; named is false when it names none (and sends no
// secret).
func (sc *Sidecar) httpIdentity(r *http.Request) (id identity, named bool, err error) {
	secret, err := bearer(r)
	if err != nil {
		return identity{}, false, err
	}
	return sc.namedIdentity(r.Header.Get(httpAppHeader), secret)
}

// namedIdentity is who a request naming app (its Msgmesh-App header or
// msgmesh-app metadata) with secret acts as: the app, authenticated;
// named is false when it names none (and sends no secret). The identity
// is a value, not a pointer, so that a caller that only passes it down
// (an HTTP publish) keeps it on its stack.
func (sc *Sidecar) namedIdentity(app, secret string) (id identity, named bool, err error) {
	if app == "" {
		if secret != "" {
			return identity{}, false, fmt.Errorf("%w: a secret was sent without the app it belongs to: name the app in the %s header", ErrInvalid, httpAppHeader)
		}
		return identity{}, false, nil
	}
	if id, err = sc.authenticate(app, secret); err != nil {
		return identity{}, false, err
	}
	return id, true, nil
}
