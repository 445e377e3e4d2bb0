package meshctl

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlclient"
	"github.com/msgmesh/msgmesh/topology"
	"gopkg.in/yaml.v3"
)

// ctrlplaneTokenEnv is read when neither --token nor --token-file is
// given.
const ctrlplaneTokenEnv = api.TokenEnv

// ctrlplaneCommands are the control-plane commands: two words each, a
// group ("weights") and a verb ("set").
func ctrlplaneCommands() []command {
	topo := func(group string) []command {
		alias := ""
		if group == "clusters" {
			alias = " (clusters is another name for topology)"
		}
		return []command{
			{group + " set", "--file FILE [--app NAME]", "set the broker clusters and topic routes: the global topology, or one app's own" + alias, setupTopologySet},
			{group + " get", "[--app NAME]", "print the global topology, or one app's own, as YAML" + alias, setupTopologyGet},
			{group + " delete", "[--app NAME]", "clear the global topology, or make an app use the global one again" + alias, setupTopologyDelete},
		}
	}
	cmds := []command{
		{"apps create", "--app NAME", "create an app on the control plane and print its credential (shown only this once)", setupAppsCreate},
		{"apps list", "", "list the apps with their instances and weights", setupAppsList},
		{"apps get", "--app NAME", "print one app", setupAppGet((*ctrlclient.Client).GetApp)},
		{"apps delete", "--app NAME", "delete an app", setupAppsDelete},
		{"apps rotate-credential", "--app NAME [--grace DURATION]", "give an app a new credential; the old one keeps working for the grace period", setupAppsRotate},
		{"instances add", "--app NAME --addr HOST:PORT [--id ID] [--label K=V]... [--weight N]", "add an instance (a sidecar's forwarding address), or replace the one with the same ID", setupInstancesAdd},
		{"instances remove", "--app NAME (--id ID | --addr HOST:PORT)", "remove an instance", setupInstancesRemove},
		{"instances list", "--app NAME [--json]", "list an app's instances: weight, online/offline/static, last lease renewal, sidecar version, labels", setupInstancesList},
		{"weights set", "--app NAME --node ID --weight N", "set an instance's traffic weight, 0 (drained) to 100", setupWeightsSet},
		{"weights get", "--app NAME", "print an app's instances and their weights", setupWeightsGet},
	}
	cmds = append(cmds, topo("topology")...)
	cmds = append(cmds, topo("clusters")...)
	return append(cmds,
		command{"config get", "--app NAME", "print the config the control plane pushes to an app's sidecars", setupAppGet((*ctrlclient.Client).Config)},
		command{"config watch", "--app NAME [--count N] [--state-file FILE]", "print an app's config and every change to it, as a sidecar sees them", setupConfigWatch},
	)
}

// ctrlplaneFlags are the flags every control-plane command has.
type ctrlplaneFlags struct {
	url       *string
	token     *string
	tokenFile *string
	stderr    io.Writer // gets the warnings about the token
}

func addCtrlplaneFlags(fs *flag.FlagSet) ctrlplaneFlags {
	return ctrlplaneFlags{
		url:       fs.String("ctrlplane", ctrlclient.DefaultURL, "the control plane's URL; a comma-separated list for replicas"),
		token:     fs.String("token", "", "the operator token; visible to every local user in ps, so prefer $"+ctrlplaneTokenEnv+" or --token-file. config get, config watch and the schema reads (get, list, check) also take an app's credential"),
		tokenFile: fs.String("token-file", "", "file whose first line is the token (default $"+ctrlplaneTokenEnv+")"),
		stderr:    fs.Output(),
	}
}

func (f ctrlplaneFlags) client() (*ctrlclient.Client, error) {
	token, warnings, err := api.LoadToken(*f.token, *f.tokenFile)
	if err != nil {
		return nil, usagef("%v", err)
	}
	for _, w := range warnings {
		fmt.Fprintln(f.stderr, "meshctl: warning:", w)
	}
	c, err := ctrlclient.New(*f.url, token)
	if err != nil {
		return nil, usagef("--ctrlplane: %v", err)
	}
	return c, nil
}

// printJSON writes v indented.
func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// appFlag defines the usual --app flag.
func appFlag(fs *flag.FlagSet) *string { return fs.String("app", "", "the app's name (required)") }

// appClient is what a command on one app needs first: --app given, and a
// client of the control plane.
func (f ctrlplaneFlags) appClient(app string) (*ctrlclient.Client, error) {
	if err := requireApp(app); err != nil {
		return nil, err
	}
	return f.client()
}

func requireApp(app string) error {
	if app == "" {
		return usagef("--app is required")
	}
	return nil
}

func setupAppsCreate(fs *flag.FlagSet) func(context.Context, *env) error {
	app := appFlag(fs)
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		c, err := cf.appClient(*app)
		if err != nil {
			return err
		}
		created, err := c.CreateApp(ctx, *app)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stderr, "app %s created; its credential is shown only now: give it to the app's sidecars\n", *app)
		return printJSON(e.stdout, created)
	}
}

func setupAppsList(fs *flag.FlagSet) func(context.Context, *env) error {
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		apps, err := c.ListApps(ctx)
		if err != nil {
			return err
		}
		return printJSON(e.stdout, apps)
	}
}

func setupAppsDelete(fs *flag.FlagSet) func(context.Context, *env) error {
	app := appFlag(fs)
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		c, err := cf.appClient(*app)
		if err != nil {
			return err
		}
		if err := c.DeleteApp(ctx, *app); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "deleted app %s\n", *app)
		return nil
	}
}

func setupAppsRotate(fs *flag.FlagSet) func(context.Context, *env) error {
	app := appFlag(fs)
	grace := fs.String("grace", "", "how long the old credential keeps working, e.g. 10m; 0s revokes it at once (default: the control plane's --rotation-grace)")
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		c, err := cf.appClient(*app)
		if err != nil {
			return err
		}
		out, err := c.RotateCredential(ctx, *app, api.RotateCredentialRequest{Grace: *grace})
		if err != nil {
			return err
		}
		return printJSON(e.stdout, out)
	}
}

// optionalInt is an int flag that knows whether it was given.
type optionalInt struct {
	v   int
	set bool
}

func (o *optionalInt) String() string {
	if o == nil || !o.set {
		return ""
	}
	return strconv.Itoa(o.v)
}

func (o *optionalInt) Set(s string) error {
	v, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("%q is not an integer", s)
	}
	o.v, o.set = v, true
	return nil
}

func setupInstancesAdd(fs *flag.FlagSet) func(context.Context, *env) error {
	app := appFlag(fs)
	addr := fs.String("addr", "", "host:port of the instance's forwarding listener (required)")
	id := fs.String("id", "", "the instance's ID (default: --addr)")
	lbl := api.LabelFlag{}
	fs.Var(lbl, "label", "a label KEY=VALUE (repeatable)")
	var weight optionalInt
	fs.Var(&weight, "weight", "the instance's weight, 0..100 (default: 100 for a new instance, unchanged for an existing one)")
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		if err := requireApp(*app); err != nil {
			return err
		}
		if *addr == "" {
			return usagef("--addr is required")
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		spec := api.InstanceSpec{ID: *id, Addr: *addr}
		if len(lbl) > 0 {
			spec.Labels = lbl
		}
		if weight.set {
			spec.Weight = &weight.v
		}
		in, created, err := c.PutInstance(ctx, *app, spec)
		if err != nil {
			return err
		}
		verb := "replaced"
		if created {
			verb = "added"
		}
		fmt.Fprintf(e.stderr, "%s instance %s of app %s\n", verb, in.ID, *app)
		return printJSON(e.stdout, in)
	}
}

func setupInstancesRemove(fs *flag.FlagSet) func(context.Context, *env) error {
	app := appFlag(fs)
	id := fs.String("id", "", "the instance's ID")
	addr := fs.String("addr", "", "the instance's address, when its ID is its address")
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		if err := requireApp(*app); err != nil {
			return err
		}
		target := *id
		switch {
		case *id != "" && *addr != "":
			return usagef("give --id or --addr, not both")
		case *id == "" && *addr == "":
			return usagef("--id or --addr is required")
		case target == "":
			target = *addr
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		if err := c.RemoveInstance(ctx, *app, target); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "removed instance %s of app %s\n", target, *app)
		return nil
	}
}

func setupWeightsSet(fs *flag.FlagSet) func(context.Context, *env) error {
	app := appFlag(fs)
	node := fs.String("node", "", "the instance's ID, its forwarding address unless it was added with --id (required)")
	var weight optionalInt
	fs.Var(&weight, "weight", "the weight, 0 (drained) to 100 (required)")
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		if err := requireApp(*app); err != nil {
			return err
		}
		switch {
		case *node == "":
			return usagef("--node is required")
		case !weight.set:
			return usagef("--weight is required")
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		in, err := c.SetWeight(ctx, *app, *node, weight.v)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "weight of %s in app %s set to %d\n", in.ID, *app, in.Weight)
		return nil
	}
}

func setupWeightsGet(fs *flag.FlagSet) func(context.Context, *env) error {
	return setupInstancesTable(fs, false, "INSTANCE\tADDR\tWEIGHT\tLABELS", func(in api.Instance) string {
		return fmt.Sprintf("%s\t%s\t%d\t%s", in.ID, in.Addr, in.Weight, api.LabelFlag(in.Labels).String())
	})
}

func setupInstancesList(fs *flag.FlagSet) func(context.Context, *env) error {
	return setupInstancesTable(fs, true, "INSTANCE\tADDR\tWEIGHT\tSTATE\tLAST SEEN\tVERSION\tLABELS", func(in api.Instance) string {
		seen := "-"
		if !in.LastSeen.IsZero() {
			seen = in.LastSeen.UTC().Format(time.RFC3339)
		}
		return fmt.Sprintf("%s\t%s\t%d\t%s\t%s\t%s\t%s", in.ID, in.Addr, in.Weight, in.State(), seen,
			cmp.Or(in.SidecarVersion, "-"), api.LabelFlag(in.Labels).String())
	})
}

// setupInstancesTable is a command that prints an app's instances as a
// table of header and one row per instance, or with --json (when jsonFlag)
// as the API answers them.
func setupInstancesTable(fs *flag.FlagSet, jsonFlag bool, header string, row func(api.Instance) string) func(context.Context, *env) error {
	app := appFlag(fs)
	asJSON := new(bool)
	if jsonFlag {
		asJSON = fs.Bool("json", false, "print the instances as JSON, as the API answers them")
	}
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		c, err := cf.appClient(*app)
		if err != nil {
			return err
		}
		ins, err := c.Instances(ctx, *app)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(e.stdout, ins)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, header)
		for _, in := range ins {
			fmt.Fprintln(tw, row(in))
		}
		return tw.Flush()
	}
}

// readTopology reads a topology document, YAML or JSON: either the
// topology itself (clusters, routes, default_cluster) or a sidecar config
// file, whose brokers section is taken. Unknown fields are errors.
func readTopology(path string) (*topology.Topology, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%s: expected a mapping with clusters (and routes, default_cluster), or a sidecar config with a brokers section", path)
	}
	node := doc.Content[0]
	for i := 0; i+1 < len(node.Content); i += 2 {
		if node.Content[i].Value == "brokers" {
			node = node.Content[i+1]
			break
		}
	}
	// Decode the chosen node strictly: encode it again, then decode with
	// KnownFields (yaml.Node.Decode cannot).
	raw, err := yaml.Marshal(node)
	if err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var t topology.Topology
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &t, nil
}

func setupTopologySet(fs *flag.FlagSet) func(context.Context, *env) error {
	file := fs.String("file", "", "the topology, YAML or JSON: clusters, routes and default_cluster, or a sidecar config file with a brokers section (required)")
	app := fs.String("app", "", "set this app's own topology instead of the global one")
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		if *file == "" {
			return usagef("--file is required")
		}
		t, err := readTopology(*file)
		if err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		if *app != "" {
			t, err = c.SetAppTopology(ctx, *app, t)
		} else {
			t, err = c.SetTopology(ctx, t)
		}
		if err != nil {
			return err
		}
		return printYAML(e.stdout, t)
	}
}

func setupTopologyGet(fs *flag.FlagSet) func(context.Context, *env) error {
	app := fs.String("app", "", "print this app's own topology instead of the global one")
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		var t *topology.Topology
		if *app != "" {
			t, err = c.AppTopology(ctx, *app)
		} else {
			t, err = c.Topology(ctx)
		}
		if err != nil {
			return err
		}
		return printYAML(e.stdout, t)
	}
}

func setupTopologyDelete(fs *flag.FlagSet) func(context.Context, *env) error {
	app := fs.String("app", "", "make this app use the global topology again, instead of clearing the global one")
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		if *app != "" {
			err = c.DeleteAppTopology(ctx, *app)
		} else {
			err = c.DeleteTopology(ctx)
		}
		if err != nil {
			return err
		}
		if *app != "" {
			fmt.Fprintf(e.stdout, "app %s uses the global topology\n", *app)
		} else {
			fmt.Fprintln(e.stdout, "cleared the global topology")
		}
		return nil
	}
}

func printYAML(w io.Writer, v any) error {
	b, err := yaml.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func setupConfigWatch(fs *flag.FlagSet) func(context.Context, *env) error {
	app := appFlag(fs)
	count := fs.Int("count", 0, "exit after printing this many configs (0: run until interrupted)")
	stateFile := fs.String("state-file", "", "keep the last config in this file and start from it, as a sidecar does")
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		if err := requireApp(*app); err != nil {
			return err
		}
		if *count < 0 {
			return usagef("--count must not be negative")
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		// onChange runs on one goroutine at a time: printed counts configs.
		printed := 0
		var printErr error
		opts := []ctrlclient.WatchOption{ctrlclient.WithLogger(e.log)}
		if *stateFile != "" {
			opts = append(opts, ctrlclient.WithStateFile(*stateFile))
		}
		w, err := c.Watch(ctx, *app, func(cfg api.AppConfig) {
			if printErr != nil {
				return
			}
			b, err := json.Marshal(cfg)
			if err == nil {
				_, err = fmt.Fprintf(e.stdout, "%s\n", b)
			}
			printErr = err
			printed++
			if err != nil || (*count > 0 && printed >= *count) {
				cancel()
			}
		}, opts...)
		if err != nil {
			return err
		}
		<-w.Done()
		if printErr != nil {
			return printErr
		}
		if *count > 0 && printed < *count {
			return fmt.Errorf("interrupted after %d of %d configs", printed, *count)
		}
		return nil
	}
}

// setupAppGet builds a command that reads one thing of an app (--app) from
// the control plane with get and prints it as JSON.
func setupAppGet[T any](get func(*ctrlclient.Client, context.Context, string) (T, error)) func(*flag.FlagSet) func(context.Context, *env) error {
	return func(fs *flag.FlagSet) func(context.Context, *env) error {
		app := appFlag(fs)
		cf := addCtrlplaneFlags(fs)
		return func(ctx context.Context, e *env) error {
			if err := requireApp(*app); err != nil {
				return err
			}
			c, err := cf.client()
			if err != nil {
				return err
			}
			v, err := get(c, ctx, *app)
			if err != nil {
				return err
			}
			return printJSON(e.stdout, v)
		}
	}
}
