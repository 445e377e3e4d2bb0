package msgmesh

import (
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/msgmesh/msgmesh/codecs/mesh"
)

// The HTTP API has no authentication: it trusts whatever can open a
// connection to it, which by default is only this host. A web browser on
// this host can open such connections for any page it shows, so httpGuard
// keeps pages out (docs/http-api.md, "Browsers and other hosts"):
//
//   - DNS rebinding: a page of evil.example whose name now resolves to
//     127.0.0.1 sends "Host: evil.example". Only loopback names and
//     addresses (localhost, 127.0.0.0/8, ::1) and the configured
//     Config.HTTPAllowedHosts are served, on any port.
//   - Cross-site requests: a browser marks them with Sec-Fetch-Site
//     (cross-site, same-site) and, on every POST and cross-origin request,
//     Origin. A request with Sec-Fetch-Site other than same-origin or none,
//     or with an Origin other than the sidecar's own (the origin of the
//     Host it was sent to; "null" included), is refused. curl, the SDKs and
//     other programs send neither header and are served.
//   - Requests a page may send without asking the server first (CORS
//     "simple" ones) carry text/plain, form or multipart bodies: a JSON
//     body (registrations) must say application/json, and a publish may
//     not be sent as one of those three types. This also shuts out form
//     submissions of browsers that send neither Origin nor Sec-Fetch-Site.
//
// GET /healthz and GET /readyz are exempt: they are what probes (a
// kubelet's, say) ask, naming the pod's address in Host, and they change
// nothing (readiness names the clusters that are down, as the sidecar's
// log does).
type httpGuard struct {
	names    map[string]bool // allowed host names besides localhost, lower case
	prefixes []netip.Prefix  // allowed addresses besides loopback
	log      *slog.Logger
}

// newHTTPGuard parses the allowed hosts: host names, IP addresses and CIDR
// prefixes, without ports (any port matches).
func newHTTPGuard(allowed []string, log *slog.Logger) (*httpGuard, error) {
	return newHostSet("HTTPAllowedHosts", allowed, log)
}

// newHostSet parses a list of allowed hosts as newHTTPGuard does; field
// names the list in errors. Its allowedHost is the one host rule of the
// sidecar: the HTTP API's Host check and where push subscriptions may
// POST (push.go).
func newHostSet(field string, allowed []string, log *slog.Logger) (*httpGuard, error) {
	g := &httpGuard{names: map[string]bool{}, log: log}
	for i, h := range allowed {
		h = strings.TrimSpace(h)
		if p, err := netip.ParsePrefix(h); err == nil {
			g.prefixes = append(g.prefixes, p.Masked())
			continue
		}
		if a, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
			g.prefixes = append(g.prefixes, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		if !validHostName(h) {
			return nil, fmt.Errorf("%s[%d] %q: not a host name, IP address or CIDR prefix (leave out the port: any port matches)", field, i, h)
		}
		g.names[normalizeHost(h)] = true
	}
	return g, nil
}

// validHostName: letters, digits, '-' and '.', not empty.
func validHostName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// wrap puts the guard in front of next.
// nosniff is the X-Content-Type-Options of every answer, one slice for
// all of them (net/http only reads it; Header.Set would allocate one per
// answer).
var nosniff = []string{"nosniff"}

func (g *httpGuard) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["X-Content-Type-Options"] = nosniff
		if r.Method == http.MethodGet && (r.URL.Path == "/healthz" || r.URL.Path == "/readyz") {
			next.ServeHTTP(w, r)
			return
		}
		if reason := g.refuse(r); reason != "" {
			g.log.Debug("http: request refused", "method", r.Method, "uri", r.RequestURI, "host", r.Host,
				"origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"), "reason", reason)
			writeJSON(w, http.StatusForbidden, errorBody{Error: mesh.CodeForbidden.String(), Message: "msgmesh: " + reason})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuse says why r may not be served, "" when it may.
func (g *httpGuard) refuse(r *http.Request) string {
	if !g.allowedHost(r.Host) {
		return fmt.Sprintf("Host %q is neither a loopback name or address nor an allowed host: the HTTP API answers requests for localhost, 127.0.0.0/8, [::1] and the names in --http-allowed-hosts (another name is what DNS rebinding sends)", r.Host)
	}
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
	default:
		return fmt.Sprintf("a web page of another site sent this request (Sec-Fetch-Site: %s); the HTTP API serves programs on this host, not browsers", site)
	}
	if origin := r.Header.Get("Origin"); origin != "" && !sameOrigin(origin, r.Host) {
		return fmt.Sprintf("a web page of another origin sent this request (Origin: %s); the HTTP API serves programs on this host, not browsers", origin)
	}
	return ""
}

// allowedHost: a loopback name or address, or a configured one; any port.
func (g *httpGuard) allowedHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if host == "127.0.0.1" || host == "localhost" {
		// What nearly every request names, already normal and loopback:
		// no need to normalise and parse it on every request.
		return true
	}
	host = normalizeHost(host)
	if isLoopbackHost(host) || g.names[host] {
		return true
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range g.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// normalizeHost is a host name or address as the allowed hosts hold it:
// lower case, no brackets, no trailing dot.
func normalizeHost(host string) string {
	return strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
}

// sameOrigin says whether origin is http://host, the origin of a page the
// sidecar itself served on the Host the request names (it serves none).
func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Scheme != "http" || u.Path != "" || u.User != nil {
		return false // "null", https, garbage
	}
	return strings.EqualFold(strings.TrimSuffix(u.Host, ":80"), strings.TrimSuffix(host, ":80"))
}

// jsonBody wraps a handler of a JSON request body: any other Content-Type
// is 415.
func jsonBody(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ct := r.Header.Get("Content-Type")
		if mt, err := parseMediaType(ct); err != nil || mt != "application/json" {
			unsupportedType(w, fmt.Sprintf("msgmesh: %s %s takes a JSON body sent as Content-Type: application/json, not %q", r.Method, r.URL.Path, ct))
			return
		}
		h(w, r)
	})
}

// opaqueBody wraps a handler of an opaque request body (a message to
// publish): any Content-Type but the three a web page may send to any
// site without asking first, or none.
func opaqueBody(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A CloudEvent in binary mode may carry any type: its ce-* headers
		// are not ones a page may send without asking first (CORS), and the
		// sidecar answers no such question.
		if ct := r.Header.Get("Content-Type"); ct != "" && r.Header.Get("Ce-Specversion") == "" {
			mt, err := parseMediaType(ct)
			switch {
			case err != nil:
				unsupportedType(w, fmt.Sprintf("msgmesh: Content-Type %q: %v", ct, err))
				return
			case mt == "text/plain", mt == "application/x-www-form-urlencoded", mt == "multipart/form-data":
				unsupportedType(w, fmt.Sprintf("msgmesh: %s %s does not take Content-Type %s, which any web page may send to this sidecar: send the body as application/octet-stream (curl: -H 'Content-Type: application/octet-stream'), as its own type, or with no Content-Type", r.Method, r.URL.Path, mt))
				return
			}
		}
		h(w, r)
	})
}

// parseMediaType is mime.ParseMediaType without the parameters: the
// media type, lower case, or the error. A Content-Type that is already a
// bare lower-case type/subtype (application/octet-stream,
// application/json: what nearly every request sends) is its own media
// type, returned without ParseMediaType, whose map of parameters is an
// allocation per request on the publish path (docs/benchmarks.md);
// anything else goes to ParseMediaType, so the answers are the same.
func parseMediaType(v string) (string, error) {
	if bareMediaType(v) {
		return v, nil
	}
	mt, _, err := mime.ParseMediaType(v)
	return mt, err
}

// bareMediaType: v is token "/" token (RFC 2045, the tokens
// mime.ParseMediaType accepts) in lower case, with nothing before, after
// or between: no spaces, no parameters.
func bareMediaType(v string) bool {
	slash := strings.IndexByte(v, '/')
	if slash <= 0 || slash == len(v)-1 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if i == slash {
			continue
		}
		if c <= ' ' || c >= 0x7f || 'A' <= c && c <= 'Z' || strings.IndexByte(mediaTypeSpecials, c) >= 0 {
			return false
		}
	}
	return true
}

// mediaTypeSpecials are RFC 2045's tspecials: not part of a token.
const mediaTypeSpecials = `()<>@,;:\"/[]?=`

func unsupportedType(w http.ResponseWriter, msg string) {
	writeJSON(w, http.StatusUnsupportedMediaType, errorBody{Error: "UNSUPPORTED_MEDIA_TYPE", Message: msg})
}
