package meshctl

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"text/tabwriter"

	"gopkg.in/yaml.v3"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
)

// Routing rules (docs/routing.md): the app's colour and canary rules, set
// on the control plane and pushed to its sidecars with its config.

func routingCommands() []command {
	return []command{
		{"routing get", "--app NAME [--json]", "print an app's routing rules (colour and canary rules)", setupRoutingGet},
		{"routing set", "--app NAME --file FILE", "replace an app's routing rules with a YAML or JSON document {rules: [...]}", setupRoutingSet},
		{"routing add", "--app NAME --name RULE (--colour C | --percent P) --selector K=V... [--group G] [--fallback anywhere|hold [--hold-for D]]", "add a colour or canary rule, or replace the rule of that name", setupRoutingAdd},
		{"routing remove", "--app NAME --name RULE", "remove one routing rule", setupRoutingRemove},
	}
}

// readRouting reads a routing document, YAML or JSON; unknown fields are
// errors.
func readRouting(path string) (api.Routing, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return api.Routing{}, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var r api.Routing
	if err := dec.Decode(&r); err != nil {
		return api.Routing{}, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// printRules prints rules as a table.
func printRules(e *env, rules []api.RoutingRule) error {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tGROUP\tMATCHES\tTO\tFALLBACK")
	for _, r := range rules {
		matches := "colour=" + r.Colour
		if r.Colour == "" && r.Percent != nil {
			matches = "canary " + strconv.Itoa(*r.Percent) + "%"
		}
		group := r.Group
		if group == "" {
			group = "*"
		}
		fallback := r.Fallback
		if r.Fallback == api.FallbackHold {
			fallback += " " + r.HoldFor
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, group, matches, api.LabelFlag(r.Selector).String(), fallback)
	}
	return tw.Flush()
}

func setupRoutingGet(fs *flag.FlagSet) func(context.Context, *env) error {
	app := appFlag(fs)
	asJSON := fs.Bool("json", false, "print the rules as JSON, as the API answers them")
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		c, err := cf.appClient(*app)
		if err != nil {
			return err
		}
		r, err := c.Routing(ctx, *app)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(e.stdout, r)
		}
		return printRules(e, r.Rules)
	}
}

func setupRoutingSet(fs *flag.FlagSet) func(context.Context, *env) error {
	app := appFlag(fs)
	file := fs.String("file", "", "the rules, YAML or JSON: {rules: [{name, group, colour | percent, selector, fallback}]} (required)")
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		if err := requireApp(*app); err != nil {
			return err
		}
		if *file == "" {
			return usagef("--file is required")
		}
		r, err := readRouting(*file)
		if err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		if r, err = c.SetRouting(ctx, *app, r); err != nil {
			return err
		}
		return printRules(e, r.Rules)
	}
}

func setupRoutingAdd(fs *flag.FlagSet) func(context.Context, *env) error {
	app := appFlag(fs)
	name := fs.String("name", "", "the rule's name, unique within the app (required)")
	group := fs.String("group", "", "the consumer group (default: every group of the app)")
	colour := fs.String("colour", "", "a colour rule: messages of this colour")
	var percent optionalInt
	fs.Var(&percent, "percent", "a canary rule: this share, 0 to 100, of the messages no colour rule took")
	selector := api.LabelFlag{}
	fs.Var(selector, "selector", "a label K=V the target instances must have (repeatable; at least one)")
	fallback := fs.String("fallback", api.FallbackAnywhere, "when no matching instance can take a message: anywhere, or hold (hand it back to the broker to be offered again, up to --hold-for after it was stored)")
	holdFor := fs.String("hold-for", "", "with --fallback hold: how long, 1s to 10m (default 30s)")
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		if err := requireApp(*app); err != nil {
			return err
		}
		switch {
		case *name == "":
			return usagef("--name is required")
		case (*colour == "") == !percent.set:
			return usagef("give --colour (a colour rule) or --percent (a canary rule)")
		case len(selector) == 0:
			return usagef("--selector is required")
		}
		rule := api.RoutingRule{Name: *name, Group: *group, Colour: *colour, Selector: selector, Fallback: *fallback, HoldFor: *holdFor}
		if percent.set {
			rule.Percent = &percent.v
		}
		r, err := editRules(ctx, cf, *app, *name, func(rules []api.RoutingRule, i int) ([]api.RoutingRule, error) {
			if i >= 0 {
				rules[i] = rule
				return rules, nil
			}
			return append(rules, rule), nil
		})
		if err != nil {
			return err
		}
		return printRules(e, r.Rules)
	}
}

// editRules reads an app's rules, lets edit change them (i is the index of
// the rule called name, -1 if none) and writes them back. Two operators
// editing at once: the last write wins.
func editRules(ctx context.Context, cf ctrlplaneFlags, app, name string, edit func(rules []api.RoutingRule, i int) ([]api.RoutingRule, error)) (api.Routing, error) {
	c, err := cf.client()
	if err != nil {
		return api.Routing{}, err
	}
	r, err := c.Routing(ctx, app)
	if err != nil {
		return api.Routing{}, err
	}
	i := slices.IndexFunc(r.Rules, func(x api.RoutingRule) bool { return x.Name == name })
	if r.Rules, err = edit(r.Rules, i); err != nil {
		return api.Routing{}, err
	}
	return c.SetRouting(ctx, app, r)
}

func setupRoutingRemove(fs *flag.FlagSet) func(context.Context, *env) error {
	app := appFlag(fs)
	name := fs.String("name", "", "the rule's name (required)")
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		if err := requireApp(*app); err != nil {
			return err
		}
		if *name == "" {
			return usagef("--name is required")
		}
		_, err := editRules(ctx, cf, *app, *name, func(rules []api.RoutingRule, i int) ([]api.RoutingRule, error) {
			if i < 0 {
				return nil, fmt.Errorf("app %s has no routing rule %q", *app, *name)
			}
			return slices.Delete(rules, i, i+1), nil
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "removed routing rule %s of app %s\n", *name, *app)
		return nil
	}
}
