// Package meshctl is the operators' and developers' command-line tool for a
// msgmesh sidecar: it manages registrations over the sidecar's HTTP API,
// publishes and consumes test traffic through the Go SDK (package client),
// and runs the direct-versus-sidecar benchmark (package internal/bench).
// Its two-word commands (apps, instances, weights, routing, topology,
// config, schema) manage the control plane through package ctrlplane/ctrlclient.
// cmd/meshctl is a thin main around Main.
package meshctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Defaults of the sidecar's local listeners.
const (
	defaultAddr = "127.0.0.1:7600"
	defaultHTTP = "127.0.0.1:7601"
)

// env is what a command runs with.
type env struct {
	stdout, stderr io.Writer
	http           *http.Client
	log            *slog.Logger // for the SDK: warnings and errors to stderr
}

// command is one subcommand. setup defines its flags on fs and returns the
// function that runs it once the flags are parsed.
type command struct {
	name    string
	args    string // synopsis after the name
	summary string
	setup   func(fs *flag.FlagSet) func(ctx context.Context, e *env) error
}

func commands() []command {
	return append([]command{
		{"register", "--app NAME [--consume GROUP:TOPIC]... [--produce GROUP:TOPIC]...", "register (or replace) an app's metadata with the sidecar", setupRegister},
		{"deregister", "--app NAME", "remove an app's registration", setupDeregister},
		{"registrations", "", "list the sidecar's registrations", setupRegistrations},
		{"streams", "[--json]", "show each registered topic's stream and the settings in effect (NATS JetStream clusters)", setupStreams},
		{"pub", "--topic T [--count N] [--size S]", "publish test messages and report the rate", setupPub},
		{"sub", "--topic T --group G [--count N]", "consume and ack messages and report the rate", setupSub},
		{"bench", "[--broker nats|kafka|rocketmq|all] [--variants] [--nats-sync always,1s] [--count N] [--size S]", "compare each broker's own client with the SDK through an in-process sidecar, same run, ratios (--variants: schema, tracing, metrics on; --nats-sync: the embedded server's fsync settings)", setupBench},
		{"bench rpc", "[--duration D] [--concurrency N] [--size S] [--profile-dir DIR]", "compare direct RPC calls with calls through an egress and an ingress sidecar, for both codecs", setupBenchRPC},
	}, append(append(ctrlplaneCommands(), routingCommands()...), schemaCommands()...)...)
}

// usageError is a command-line mistake: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// Main runs meshctl with args (without the program name) and returns the
// exit status: 0 on success, 1 when the command failed, 2 for a usage
// error.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{
		stdout: stdout,
		stderr: stderr,
		http:   &http.Client{Timeout: 30 * time.Second},
		log:    slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if len(args) == 0 {
		printHelp(stderr, commands())
		return 2
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "-help", "--help":
		return help(stdout, stderr, rest)
	}
	for isGroup(commands(), name) {
		// A command of several words: "weights set", "schema policy set".
		// A name that is a command of its own too ("bench", beside
		// "bench rpc") runs that command unless a known subcommand follows.
		if isCommand(commands(), name) && (len(rest) == 0 || !isCommand(commands(), name+" "+rest[0]) && !isGroup(commands(), name+" "+rest[0])) {
			break
		}
		if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
			fmt.Fprintf(stderr, "meshctl %s: which one?\n\n", name)
			printGroup(stderr, name)
			return 2
		}
		name, rest = name+" "+rest[0], rest[1:]
	}
	for _, cmd := range commands() {
		if cmd.name != name {
			continue
		}
		fs := flag.NewFlagSet("meshctl "+cmd.name, flag.ContinueOnError)
		fs.SetOutput(stderr)
		run := cmd.setup(fs)
		fs.Usage = func() { printCommand(stderr, cmd, fs) }
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "meshctl %s: unexpected argument %q\n", cmd.name, fs.Arg(0))
			return 2
		}
		if err := run(ctx, e); err != nil {
			fmt.Fprintf(stderr, "meshctl %s: %v\n", cmd.name, err)
			var ue *usageError
			if errors.As(err, &ue) {
				fmt.Fprintf(stderr, "run 'meshctl help %s' for its flags\n", cmd.name)
				return 2
			}
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "meshctl: unknown command %q; run 'meshctl help'\n", name)
	return 2
}

func help(stdout, stderr io.Writer, args []string) int {
	cmds := commands()
	if len(args) == 0 {
		printHelp(stdout, cmds)
		return 0
	}
	name := strings.Join(args, " ")
	if isGroup(cmds, name) {
		printGroup(stdout, name)
		return 0
	}
	for _, cmd := range cmds {
		if cmd.name == name {
			fs := flag.NewFlagSet("meshctl "+cmd.name, flag.ContinueOnError)
			cmd.setup(fs)
			printCommand(stdout, cmd, fs)
			return 0
		}
	}
	fmt.Fprintf(stderr, "meshctl help: unknown command %q\n", name)
	return 2
}

// isGroup reports whether name ("weights", "schema policy") is the start of
// longer commands' names rather than a command's.
func isCommand(cmds []command, name string) bool {
	return slices.ContainsFunc(cmds, func(c command) bool { return c.name == name })
}

func isGroup(cmds []command, name string) bool {
	return slices.ContainsFunc(cmds, func(c command) bool { return strings.HasPrefix(c.name, name+" ") })
}

// printGroup prints the commands of one group ("weights").
func printGroup(w io.Writer, group string) {
	for _, cmd := range commands() {
		if strings.HasPrefix(cmd.name, group+" ") {
			fs := flag.NewFlagSet("meshctl "+cmd.name, flag.ContinueOnError)
			cmd.setup(fs)
			printCommand(w, cmd, fs)
		}
	}
}

// printHelp lists every command with its flags.
func printHelp(w io.Writer, cmds []command) {
	fmt.Fprintln(w, "meshctl: the msgmesh command-line tool")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: meshctl COMMAND [flags]     (meshctl help COMMAND for one command)")
	for _, cmd := range cmds {
		fmt.Fprintln(w)
		fs := flag.NewFlagSet("meshctl "+cmd.name, flag.ContinueOnError)
		cmd.setup(fs)
		printCommand(w, cmd, fs)
	}
}

func printCommand(w io.Writer, cmd command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "%s\n    %s\n", strings.TrimSpace("meshctl "+cmd.name+" "+cmd.args), cmd.summary)
	var b strings.Builder
	fs.SetOutput(&b)
	fs.PrintDefaults()
	fs.SetOutput(w)
	if b.Len() > 0 {
		fmt.Fprint(w, b.String())
	}
}
