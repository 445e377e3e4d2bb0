package ctrlplane

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
)

// principal is who a request comes from.
type principal struct {
	operator bool   // the operator token (or authentication is off)
	app      string // else: the app whose credential was presented
	cred     string // that credential
}

// bearer returns the token of an "Authorization: Bearer TOKEN" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// OperatorUser is the user name that goes with the operator token in HTTP
// Basic authentication (Confluent clients' basic.auth.user.info =
// "operator:TOKEN"); an app's credential goes with the app's name.
const OperatorUser = "operator"

// credential returns the token a request presents: "Authorization:
// Bearer TOKEN", or HTTP Basic with the token as the password, and the
// Basic user name (basic is false for a bearer token).
func credential(r *http.Request) (tok, user string, basic, ok bool) {
	if tok, ok := bearer(r); ok {
		return tok, "", false, true
	}
	user, tok, ok = r.BasicAuth()
	return tok, user, true, ok && tok != ""
}

// authorize checks a request's credential. configApp is the app whose
// config the request reads (or whose forwarding certificate or instance
// lease it asks for), "" on every other route: the operator token
// is good everywhere, an app's credential (current, or previous until it
// expires) only for its own config. A missing or unknown credential is
// ErrUnauthorized (401); a valid app credential anywhere else is
// ErrForbidden (403).
func (s *Server) authorize(ctx context.Context, r *http.Request, configApp string) (principal, error) {
	who, err := s.authenticate(ctx, r)
	if err != nil {
		return principal{}, err
	}
	if !who.operator && who.app != configApp {
		return principal{}, errorf(ErrForbidden, "the credential of app %q may only read that app's config (GET /v1/apps/%s/config), get forwarding certificates and register that app's instances (PUT /v1/apps/%s/lease); everything else needs the operator token", who.app, who.app, who.app)
	}
	return who, nil
}

// authenticate says whose credential a request carries: the operator
// token, or the current (or unexpired previous) credential of some app.
// A missing or unknown credential is ErrUnauthorized. It does not say
// what the principal may do: authorize does, and the schema registry's
// reads take any principal (schemas.go).
func (s *Server) authenticate(ctx context.Context, r *http.Request) (principal, error) {
	if s.opts.InsecureNoAuth {
		return principal{operator: true}, nil
	}
	tok, user, basic, ok := credential(r)
	if !ok {
		return principal{}, errorf(ErrUnauthorized, "no credential; send \"Authorization: Bearer TOKEN\" with the operator token (or, to read an app's config, the app's credential), or Basic authentication with user %q and the operator token, or the app's name and its credential, as password", OperatorUser)
	}
	if api.ConstantTimeEqual(tok, s.opts.Token) {
		if basic && user != OperatorUser {
			return principal{}, errorf(ErrUnauthorized, "Basic authentication with the operator token needs the user name %q, not %q", OperatorUser, user)
		}
		return principal{operator: true}, nil
	}
	unknown := errorf(ErrUnauthorized, "the credential is neither the operator token nor a current app credential")
	app, ok := credentialApp(tok)
	if !ok {
		return principal{}, unknown
	}
	if basic && user != app {
		return principal{}, errorf(ErrUnauthorized, "Basic authentication with an app's credential needs the app's name as user name, not %q", user)
	}
	rec, _, err := s.getApp(ctx, app)
	if errors.Is(err, ErrNotFound) {
		return principal{}, unknown
	}
	if err != nil {
		return principal{}, err
	}
	if rec.matchCredential(tok, s.now()) == noCredential {
		return principal{}, unknown
	}
	return principal{app: app, cred: tok}, nil
}
