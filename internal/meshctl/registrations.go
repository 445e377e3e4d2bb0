package meshctl

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/msgmesh/msgmesh/msgmesh/registry"
)

// bindings is a repeatable binding flag: GROUP:TOPIC, parsed by parse
// (registry.ParseBinding, or ParseConsumeBinding for --consume, which
// also reads the dead-letter, broker_group, tags and push options).
type bindings struct {
	list  []registry.Binding
	parse func(string) (registry.Binding, error)
}

func (b *bindings) String() string {
	s := make([]string, len(b.list))
	for i, x := range b.list {
		s[i] = x.String()
	}
	return strings.Join(s, " ")
}

func (b *bindings) Set(v string) error {
	x, err := b.parse(v)
	if err != nil {
		return err
	}
	b.list = append(b.list, x)
	return nil
}

func httpFlag(fs *flag.FlagSet) *string {
	return fs.String("http", defaultHTTP, "the sidecar's HTTP API, host:port or URL")
}

// baseURL turns the --http value into a URL without a trailing slash.
func baseURL(v string) (string, error) {
	if !strings.Contains(v, "://") {
		v = "http://" + v
	}
	u, err := url.Parse(v)
	if err != nil || u.Host == "" {
		return "", usagef("--http %q: expected host:port or http://host:port", v)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// secretEnv holds an app's secret for meshctl when --secret-file is not
// given. Secrets are never flag values: command lines show in ps.
const secretEnv = "MSGMESH_APP_SECRET"

// secretFlag defines --secret-file and returns what reads the app's secret:
// the file's content, else $MSGMESH_APP_SECRET, else none.
func secretFlag(fs *flag.FlagSet) func() (string, error) {
	file := fs.String("secret-file", "", "file holding the app's secret, needed when the app has one (default: $"+secretEnv+")")
	return func() (string, error) {
		if *file == "" {
			return strings.TrimSpace(os.Getenv(secretEnv)), nil
		}
		b, err := os.ReadFile(*file)
		if err != nil {
			return "", fmt.Errorf("--secret-file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
}

func setupRegister(fs *flag.FlagSet) func(context.Context, *env) error {
	app := appFlag(fs)
	consume := bindings{parse: registry.ParseConsumeBinding}
	produce := bindings{parse: registry.ParseBinding}
	fs.Var(&consume, "consume", "a consumer group and the topic it consumes, GROUP:TOPIC, optionally with its dead-letter policy, its group on the broker, its tag filter and an HTTP push subscription: GROUP:TOPIC,max_attempts=N,dead_letter_topic=T,broker_group=B,tags=X,push_url=U,push_concurrency=N,push_mode=binary|structured,push_timeout=D (repeatable)")
	fs.Var(&produce, "produce", "a producer group and the topic it produces, GROUP:TOPIC (repeatable)")
	httpAddr := httpFlag(fs)
	secret := secretFlag(fs)
	return func(ctx context.Context, e *env) error {
		if err := requireApp(*app); err != nil {
			return err
		}
		s, err := secret()
		if err != nil {
			return err
		}
		reg := registry.Registration{App: *app, Produce: produce.list, Consume: consume.list}
		body, err := json.Marshal(reg)
		if err != nil {
			return err
		}
		// The answer shows the app's secret when the sidecar issued one.
		return e.call(ctx, *httpAddr, http.MethodPost, "/v1/registrations", body, s)
	}
}

func setupDeregister(fs *flag.FlagSet) func(context.Context, *env) error {
	app := appFlag(fs)
	httpAddr := httpFlag(fs)
	secret := secretFlag(fs)
	return func(ctx context.Context, e *env) error {
		if err := requireApp(*app); err != nil {
			return err
		}
		s, err := secret()
		if err != nil {
			return err
		}
		if err := e.call(ctx, *httpAddr, http.MethodDelete, "/v1/registrations/"+url.PathEscape(*app), nil, s); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "deregistered %s\n", *app)
		return nil
	}
}

func setupRegistrations(fs *flag.FlagSet) func(context.Context, *env) error {
	httpAddr := httpFlag(fs)
	return func(ctx context.Context, e *env) error {
		return e.call(ctx, *httpAddr, http.MethodGet, "/v1/registrations", nil, "")
	}
}

// call sends one request to the HTTP API, with the app's secret if not
// empty, and prints a JSON answer indented. A non-2xx answer becomes an
// error carrying the server's message.
func (e *env) call(ctx context.Context, httpAddr, method, path string, body []byte, secret string) error {
	out, err := e.do(ctx, httpAddr, method, path, body, secret)
	if err != nil || len(out) == 0 {
		return err
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, out, "", "  ") == nil {
		out = pretty.Bytes()
	}
	_, err = fmt.Fprintf(e.stdout, "%s\n", out)
	return err
}

// do sends one request to the HTTP API and returns the answer's body,
// trimmed; a non-2xx answer is an error carrying the server's message.
func (e *env) do(ctx context.Context, httpAddr, method, path string, body []byte, secret string) ([]byte, error) {
	base, err := baseURL(httpAddr)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	resp, err := e.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, serverError(resp, out)
	}
	return bytes.TrimSpace(out), nil
}

// serverError renders the HTTP API's error body {"error": CODE, "message":
// text}, or the raw body when it is not that.
func serverError(resp *http.Response, body []byte) error {
	var eb struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &eb) == nil && (eb.Message != "" || eb.Error != "") {
		msg := eb.Message
		if msg == "" {
			msg = eb.Error
		} else if eb.Error != "" {
			msg += " (" + eb.Error + ")"
		}
		return fmt.Errorf("%s: %s", resp.Status, msg)
	}
	if text := strings.TrimSpace(string(body)); text != "" {
		return fmt.Errorf("%s: %s", resp.Status, text)
	}
	return fmt.Errorf("%s", resp.Status)
}
