package ctrlclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/topology"
)

// Defaults.
const (
	// DefaultURL is where meshctl looks for the control plane.
	DefaultURL = "http://127.0.0.1:7700"
	// DefaultTimeout bounds one API call (not a long poll).
	DefaultTimeout = 30 * time.Second
	// pollSlack is added to a long poll's wait for its request timeout.
	pollSlack = 15 * time.Second
	// maxAnswer is the largest answer body read.
	maxAnswer = 16 << 20
)

// Option configures a Client.
type Option interface{ apply(*options) }

type options struct {
	http    *http.Client
	timeout time.Duration
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithHTTPClient sets the HTTP client. Default: a client of its own with
// no overall timeout (every call has its own, see WithTimeout) over a
// transport like http.DefaultTransport's.
func WithHTTPClient(c *http.Client) Option { return optionFunc(func(o *options) { o.http = c }) }

// WithTimeout bounds each API call other than a long poll, whose bound is
// its wait plus 15 s. Default DefaultTimeout.
func WithTimeout(d time.Duration) Option { return optionFunc(func(o *options) { o.timeout = d }) }

// Client calls the control plane's HTTP API. It is safe for concurrent
// use and starts no goroutine.
type Client struct {
	urls    []string
	cur     atomic.Uint32 // index into urls of the replica in use
	token   string
	http    *http.Client
	timeout time.Duration
}

// New returns a client of the control plane at baseURL: "http://host:port"
// ("host:port" means http://host:port), or a comma-separated list of them
// for the replicas of one control plane. token is sent on every call:
// the operator token, or an app's credential (which only reads that app's
// config); empty sends none.
func New(baseURL, token string, opts ...Option) (*Client, error) {
	o := options{timeout: DefaultTimeout}
	for _, opt := range opts {
		opt.apply(&o)
	}
	if o.timeout <= 0 {
		return nil, fmt.Errorf("ctrlclient: timeout %v is not positive", o.timeout)
	}
	if o.http == nil {
		o.http = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	var urls []string
	for raw := range strings.SplitSeq(baseURL, ",") {
		u, err := parseBaseURL(strings.TrimSpace(raw))
		if err != nil {
			return nil, err
		}
		urls = append(urls, u)
	}
	return &Client{urls: urls, token: token, http: o.http, timeout: o.timeout}, nil
}

func parseBaseURL(v string) (string, error) {
	if v == "" {
		return "", errors.New("ctrlclient: empty control plane URL")
	}
	if !strings.Contains(v, "://") {
		v = "http://" + v
	}
	u, err := url.Parse(v)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("ctrlclient: control plane URL %q: expected http(s)://host:port", v)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// URLs returns the base URLs, the one in use first.
func (c *Client) URLs() []string {
	i := int(c.cur.Load()) % len(c.urls)
	return append(append([]string{}, c.urls[i:]...), c.urls[:i]...)
}

// request is one API call.
type request struct {
	method string
	path   string // with query
	body   any    // JSON-encoded when not nil
	token  string
	// timeout overrides c.timeout (long polls).
	timeout time.Duration
}

// do sends req and returns the answer's status, headers and body. A
// non-2xx, non-304 answer is an *APIError. When the replica in use cannot
// be reached or answers 502/503/504, do moves to the next URL, and tries
// it at once if the request was not sent or is idempotent.
func (c *Client) do(ctx context.Context, req request) (int, http.Header, []byte, error) {
	var body []byte
	if req.body != nil {
		var err error
		if body, err = json.Marshal(req.body); err != nil {
			return 0, nil, nil, err
		}
	}
	timeout := c.timeout
	if req.timeout > 0 {
		timeout = req.timeout
	}
	idempotent := req.method != http.MethodPost
	var lastErr error
	for range len(c.urls) {
		i := c.cur.Load()
		base := c.urls[int(i)%len(c.urls)]
		status, hdr, out, sent, err := c.once(ctx, base, req, body, timeout)
		if err == nil {
			return status, hdr, out, nil
		}
		lastErr = err
		if ctx.Err() != nil || !failover(err) {
			return status, hdr, out, err
		}
		c.cur.CompareAndSwap(i, i+1)
		if sent && !idempotent {
			return status, hdr, out, err
		}
	}
	return 0, nil, nil, lastErr
}

// failover reports whether err means "try another replica".
func failover(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status == http.StatusBadGateway || ae.Status == http.StatusServiceUnavailable || ae.Status == http.StatusGatewayTimeout
	}
	return true // a transport error
}

// once sends the request to one replica. sent is false when the
// connection could not even be made.
func (c *Client) once(ctx context.Context, base string, req request, body []byte, timeout time.Duration) (status int, hdr http.Header, out []byte, sent bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, base+req.path, rd)
	if err != nil {
		return 0, nil, nil, false, err
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if req.token != "" {
		hr.Header.Set("Authorization", "Bearer "+req.token)
	}
	resp, err := c.http.Do(hr)
	if err != nil {
		var op *net.OpError
		sent := !(errors.As(err, &op) && op.Op == "dial")
		return 0, nil, nil, sent, fmt.Errorf("ctrlclient: %s %s: %w", req.method, base+req.path, err)
	}
	defer resp.Body.Close()
	out, err = io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return resp.StatusCode, resp.Header, nil, true, fmt.Errorf("ctrlclient: %s %s: reading the answer: %w", req.method, base+req.path, err)
	}
	if resp.StatusCode/100 != 2 && resp.StatusCode != http.StatusNotModified {
		return resp.StatusCode, resp.Header, out, true, apiError(resp.StatusCode, out)
	}
	return resp.StatusCode, resp.Header, out, true, nil
}

func apiError(status int, body []byte) *APIError {
	var eb struct {
		api.ErrorBody
		RegistryCode int `json:"error_code"` // the schema registry's (Confluent's) shape
	}
	if json.Unmarshal(body, &eb) == nil && (eb.Code != "" || eb.Message != "" || eb.RegistryCode != 0) {
		if eb.Code == "" && eb.RegistryCode != 0 {
			eb.Code = strconv.Itoa(eb.RegistryCode)
		}
		return &APIError{Status: status, Code: eb.Code, Message: eb.Message}
	}
	return &APIError{Status: status, Message: strings.TrimSpace(string(body))}
}

// call sends req with the client's token and decodes a JSON answer into
// out (if not nil).
func (c *Client) call(ctx context.Context, method, path string, in, out any) (int, error) {
	status, _, body, err := c.do(ctx, request{method: method, path: path, body: in, token: c.token})
	if err != nil {
		return status, err
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return status, fmt.Errorf("ctrlclient: %s %s: decoding the answer: %w", method, path, err)
		}
	}
	return status, nil
}

func appPath(app string, rest ...string) string {
	p := "/v1/apps/" + url.PathEscape(app)
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

// Health checks that the control plane answers GET /healthz.
func (c *Client) Health(ctx context.Context) error {
	_, err := c.call(ctx, http.MethodGet, "/healthz", nil, nil)
	return err
}

// ListApps returns every app, sorted by name.
func (c *Client) ListApps(ctx context.Context) ([]api.App, error) {
	var out []api.App
	_, err := c.call(ctx, http.MethodGet, "/v1/apps", nil, &out)
	return out, err
}

// CreateApp creates an app. The answer holds the app's credential; it is
// never shown again (RotateCredential makes a new one).
func (c *Client) CreateApp(ctx context.Context, name string) (api.AppCreated, error) {
	var out api.AppCreated
	_, err := c.call(ctx, http.MethodPost, "/v1/apps", api.CreateAppRequest{Name: name}, &out)
	return out, err
}

// GetApp returns one app (without its credential).
func (c *Client) GetApp(ctx context.Context, name string) (api.App, error) {
	var out api.App
	_, err := c.call(ctx, http.MethodGet, appPath(name), nil, &out)
	return out, err
}

// DeleteApp deletes an app; its sidecars' config polls then fail with
// ErrNotFound and they keep their last config.
func (c *Client) DeleteApp(ctx context.Context, name string) error {
	_, err := c.call(ctx, http.MethodDelete, appPath(name), nil, nil)
	return err
}

// RotateCredential gives an app a new credential. req.Grace is how long
// the old one keeps working (empty: the server's default).
func (c *Client) RotateCredential(ctx context.Context, app string, req api.RotateCredentialRequest) (api.CredentialRotated, error) {
	var out api.CredentialRotated
	_, err := c.call(ctx, http.MethodPost, appPath(app, "credential"), req, &out)
	return out, err
}

// Instances returns an app's instances, sorted by ID.
func (c *Client) Instances(ctx context.Context, app string) ([]api.Instance, error) {
	var out []api.Instance
	_, err := c.call(ctx, http.MethodGet, appPath(app, "instances"), nil, &out)
	return out, err
}

// Traffic returns the recent traffic of app's instances and the topology
// their sidecars reported (GET /v1/apps/{app}/traffic), as the replica
// that answers saw it.
func (c *Client) Traffic(ctx context.Context, app string) (api.AppTraffic, error) {
	var out api.AppTraffic
	_, err := c.call(ctx, http.MethodGet, appPath(app, "traffic"), nil, &out)
	return out, err
}

// PutInstance adds an instance, or replaces the one with the same ID
// (spec.ID, default spec.Addr). created says which.
func (c *Client) PutInstance(ctx context.Context, app string, spec api.InstanceSpec) (in api.Instance, created bool, err error) {
	status, err := c.call(ctx, http.MethodPost, appPath(app, "instances"), spec, &in)
	return in, status == http.StatusCreated, err
}

// RemoveInstance removes an instance.
func (c *Client) RemoveInstance(ctx context.Context, app, id string) error {
	_, err := c.call(ctx, http.MethodDelete, appPath(app, "instances", url.PathEscape(id)), nil, nil)
	return err
}

// SetWeight sets an instance's weight (0..100).
func (c *Client) SetWeight(ctx context.Context, app, id string, weight int) (api.Instance, error) {
	var out api.Instance
	_, err := c.call(ctx, http.MethodPut, appPath(app, "instances", url.PathEscape(id), "weight"), api.WeightRequest{Weight: &weight}, &out)
	return out, err
}

// Topology returns the global topology; ErrNotFound when none is set.
func (c *Client) Topology(ctx context.Context) (*topology.Topology, error) {
	var out topology.Topology
	if _, err := c.call(ctx, http.MethodGet, "/v1/topology", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetTopology replaces the global topology and returns it as stored
// (validated, default cluster filled in).
func (c *Client) SetTopology(ctx context.Context, t *topology.Topology) (*topology.Topology, error) {
	var out topology.Topology
	if _, err := c.call(ctx, http.MethodPut, "/v1/topology", t, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteTopology clears the global topology.
func (c *Client) DeleteTopology(ctx context.Context) error {
	_, err := c.call(ctx, http.MethodDelete, "/v1/topology", nil, nil)
	return err
}

// AppTopology returns an app's own topology; ErrNotFound when it uses the
// global one.
func (c *Client) AppTopology(ctx context.Context, app string) (*topology.Topology, error) {
	var out topology.Topology
	if _, err := c.call(ctx, http.MethodGet, appPath(app, "topology"), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// SetAppTopology gives an app its own topology, overriding the global one.
func (c *Client) SetAppTopology(ctx context.Context, app string, t *topology.Topology) (*topology.Topology, error) {
	var out topology.Topology
	if _, err := c.call(ctx, http.MethodPut, appPath(app, "topology"), t, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteAppTopology makes an app use the global topology again.
func (c *Client) DeleteAppTopology(ctx context.Context, app string) error {
	_, err := c.call(ctx, http.MethodDelete, appPath(app, "topology"), nil, nil)
	return err
}

// Config returns an app's current config.
func (c *Client) Config(ctx context.Context, app string) (api.AppConfig, error) {
	var out api.AppConfig
	_, err := c.call(ctx, http.MethodGet, appPath(app, "config"), nil, &out)
	return out, err
}

// PollConfig long-polls an app's config: it returns the config as soon as
// its version differs from after (changed true), or changed false when
// wait (0: the server's default, 30 s) passed without a change.
func (c *Client) PollConfig(ctx context.Context, app string, after uint64, wait time.Duration) (cfg api.AppConfig, changed bool, err error) {
	return c.poll(ctx, app, after, wait, c.token)
}

func (c *Client) poll(ctx context.Context, app string, after uint64, wait time.Duration, token string) (api.AppConfig, bool, error) {
	q := url.Values{"after": {strconv.FormatUint(after, 10)}}
	timeout := api.DefaultWait + pollSlack
	if wait > 0 {
		q.Set("wait", wait.String())
		timeout = wait + pollSlack
	}
	status, _, body, err := c.do(ctx, request{method: http.MethodGet, path: appPath(app, "config") + "?" + q.Encode(), token: token, timeout: timeout})
	if err != nil || status == http.StatusNotModified {
		return api.AppConfig{}, false, err
	}
	var cfg api.AppConfig
	if err := json.Unmarshal(body, &cfg); err != nil {
		return api.AppConfig{}, false, fmt.Errorf("ctrlclient: config of %q: decoding: %w", app, err)
	}
	if cfg.App != app {
		return api.AppConfig{}, false, fmt.Errorf("ctrlclient: asked for the config of %q, got the config of %q", app, cfg.App)
	}
	return cfg, true, nil
}

// IssueCertificate has the control plane sign csrPEM (from
// pki.NewKeyAndCSR) for app; the client's token must be the app's
// credential or the operator token.
func (c *Client) IssueCertificate(ctx context.Context, app string, csrPEM []byte) (api.Certificate, error) {
	var out api.Certificate
	_, err := c.call(ctx, http.MethodPost, appPath(app, "certificate"), api.CertificateRequest{CSR: string(csrPEM)}, &out)
	return out, err
}

// RenewLease registers the sidecar advertising req.Addr as an instance of
// app, or renews its lease (PUT /v1/apps/{app}/lease); call it every
// Lease.RenewEvery. token is the app's credential to present, "" for the
// client's own (a sidecar passes the newest one its watcher saw, so
// renewals follow a credential rotation).
func (c *Client) RenewLease(ctx context.Context, app, token string, req api.LeaseRequest) (api.Lease, error) {
	if token == "" {
		token = c.token
	}
	path := appPath(app, "lease")
	_, _, body, err := c.do(ctx, request{method: http.MethodPut, path: path, body: req, token: token})
	if err != nil {
		return api.Lease{}, err
	}
	var out api.Lease
	if err := json.Unmarshal(body, &out); err != nil {
		return api.Lease{}, fmt.Errorf("ctrlclient: PUT %s: decoding the answer: %w", path, err)
	}
	return out, nil
}

// SetLimits replaces an app's flow-control limits (a flowctl.Config as
// JSON); its sidecars apply them without a restart.
func (c *Client) SetLimits(ctx context.Context, app string, limits any) error {
	_, err := c.call(ctx, http.MethodPut, appPath(app, "limits"), limits, nil)
	return err
}

// Routing returns an app's routing rules (docs/routing.md).
func (c *Client) Routing(ctx context.Context, app string) (api.Routing, error) {
	var out api.Routing
	_, err := c.call(ctx, http.MethodGet, appPath(app, "routing"), nil, &out)
	return out, err
}

// SetRouting replaces an app's routing rules; its sidecars apply them with
// the next push. It returns the rules as stored (fallbacks filled in).
func (c *Client) SetRouting(ctx context.Context, app string, r api.Routing) (api.Routing, error) {
	var out api.Routing
	_, err := c.call(ctx, http.MethodPut, appPath(app, "routing"), r, &out)
	return out, err
}
