package sidecarapp

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/msgmesh/msgmesh/internal/atomicfile"
)

// Access is the config file's access section (docs/config.md, "Who can
// reach the sidecar"): which listeners may leave loopback and which Host
// names the HTTP API answers. The flags --allow-remote and
// --http-allowed-hosts add to it.
type Access struct {
	// AllowRemote names the listeners that may bind a non-loopback
	// address: http, mesh, nats, grpc. Zero: none may.
	AllowRemote []string `yaml:"allow_remote"`
	// HTTPAllowedHosts are Host names, addresses or CIDR prefixes the HTTP
	// API answers besides loopback ones (msgmesh.Config.HTTPAllowedHosts).
	HTTPAllowedHosts []string `yaml:"http_allowed_hosts"`
}

// The listeners --allow-remote names. The forwarding listener is not one:
// it authenticates its peers with mutual TLS and is meant for other hosts.
const (
	remoteHTTP = "http"
	remoteMesh = "mesh"
	remoteNATS = "nats"
	remoteGRPC = "grpc"
)

// checkAccess adds the flags --allow-remote and --http-allowed-hosts to
// the config file's access section and checks the listeners against it
// (checkListeners). natsURL says the brokers are external (--nats-url);
// so does a brokers section in the file.
// more are further listeners to check alike (the gRPC API's).
func checkAccess(log *slog.Logger, file *File, allowRemote, httpHosts, httpListen, meshListen, natsListen string, natsURL bool, more ...listener) (Access, error) {
	a := Access{}
	if file.Access != nil {
		a = *file.Access
	}
	a, err := a.merge(allowRemote, httpHosts)
	if err != nil {
		return a, err
	}
	if (file.Brokers != nil || natsURL) && natsListen != "" {
		return a, errors.New("--nats-listen exposes the embedded NATS server, which does not run with --nats-url or a brokers section in --config")
	}
	return a, checkListeners(log, a, append([]listener{
		{remoteHTTP, "--http", httpListen, "the HTTP API, which authenticates no one, would let them register apps and publish"},
		{remoteMesh, "--listen", meshListen, "the mesh protocol, meant for apps on this host, would let them connect as any registered app"},
		{remoteNATS, "--nats-listen", natsListen, "the embedded NATS server gives its clients every stream (they need the generated credentials, but the traffic is not encrypted)"}},
		more...)...)
}

// validate checks the listener names.
func (a *Access) validate() error {
	for _, n := range a.AllowRemote {
		if !slices.Contains([]string{remoteHTTP, remoteMesh, remoteNATS, remoteGRPC}, n) {
			return fmt.Errorf("unknown listener %q (known: %s, %s, %s, %s)", n, remoteHTTP, remoteMesh, remoteNATS, remoteGRPC)
		}
	}
	return nil
}

// merge adds the flags' comma-separated lists to a's.
func (a Access) merge(allowRemote, httpHosts string) (Access, error) {
	out := Access{AllowRemote: slices.Clone(a.AllowRemote), HTTPAllowedHosts: slices.Clone(a.HTTPAllowedHosts)}
	out.AllowRemote = append(out.AllowRemote, splitList(allowRemote)...)
	out.HTTPAllowedHosts = append(out.HTTPAllowedHosts, splitList(httpHosts)...)
	if err := out.validate(); err != nil {
		return out, fmt.Errorf("--allow-remote: %w", err)
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// listener is one of the binary's listeners for local clients.
type listener struct {
	name string // as --allow-remote names it
	flag string // the flag that sets its address
	addr string
	risk string // what an unwanted client could do there
}

// checkListeners refuses to start with a listener on an address beyond
// loopback that --allow-remote (or access.allow_remote) does not name, and
// warns of those it names.
func checkListeners(log *slog.Logger, a Access, ls ...listener) error {
	for _, l := range ls {
		if l.addr == "" || loopbackAddr(l.addr) {
			continue
		}
		if slices.Contains(a.AllowRemote, l.name) {
			log.Warn("a listener reaches beyond this host, as --allow-remote allows", "listener", l.name, "addr", l.addr)
			continue
		}
		return fmt.Errorf("%s %s is not a loopback address, so other hosts could reach it, and %s; "+
			"bind it to 127.0.0.1, or pass --allow-remote %s (access.allow_remote in --config) to expose it on purpose (docs/config.md)",
			l.flag, l.addr, l.risk, l.name)
	}
	return nil
}

// loopbackAddr says whether a host:port listens on loopback only: its
// host is localhost or a loopback IP. An empty host is every interface;
// any other name counts as remote, as it may resolve to anything. A unix
// socket (unix:/path, the mesh listener's other form) is local: no other
// host reaches it, and its file's mode says which users may.
func loopbackAddr(hostport string) bool {
	if strings.HasPrefix(hostport, "unix:") {
		return true
	}
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false // net.Listen refuses it anyway
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// natsCredsFile is the file in the data directory with the credentials
// the embedded NATS server requires of its clients when it listens on TCP:
// NATS_USER and NATS_PASSWORD lines, which the nats CLI reads from the
// environment.
const natsCredsFile = "nats-credentials.env"

// natsUser is the user name of the generated credentials.
const natsUser = "msgmesh"

// natsCredentials returns the embedded NATS server's credentials from
// dataDir, making them (a random password, mode 0600) on first use. A
// file that others may read is refused rather than used.
func natsCredentials(dataDir string) (user, password, path string, err error) {
	path = filepath.Join(dataDir, natsCredsFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return natsUser, "", path, nil
	}
	if err != nil {
		return "", "", path, fmt.Errorf("nats credentials: %w", err)
	}
	if st, err := os.Stat(path); err != nil {
		return "", "", path, fmt.Errorf("nats credentials: %w", err)
	} else if st.Mode().Perm()&0o077 != 0 {
		return "", "", path, fmt.Errorf("nats credentials %s: mode %v lets other users read them; chmod 600 it, or delete it to make new ones", path, st.Mode().Perm())
	}
	vals := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			vals[k] = v
		}
	}
	if vals["NATS_USER"] == "" || vals["NATS_PASSWORD"] == "" {
		return "", "", path, fmt.Errorf("nats credentials %s: no NATS_USER and NATS_PASSWORD lines; delete it to make new ones", path)
	}
	return vals["NATS_USER"], vals["NATS_PASSWORD"], path, nil
}

// ensureNATSCredentials is natsCredentials, writing new ones when there
// are none.
func ensureNATSCredentials(dataDir string) (user, password, path string, err error) {
	user, password, path, err = natsCredentials(dataDir)
	if err != nil || password != "" {
		return user, password, path, err
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return "", "", path, err
	}
	password = base64.RawURLEncoding.EncodeToString(secret)
	content := fmt.Sprintf("# Credentials of msgmesh's embedded NATS server (--nats-listen). Its TCP clients\n"+
		"# present them; the nats CLI reads them from the environment:\n"+
		"#   set -a; . %s; set +a\n"+
		"# Delete this file and restart msgmesh to make new ones.\n"+
		"NATS_USER=%s\nNATS_PASSWORD=%s\n", path, user, password)
	if err := atomicfile.Write(path, []byte(content)); err != nil {
		return "", "", path, fmt.Errorf("nats credentials: %w", err)
	}
	return user, password, path, nil
}
