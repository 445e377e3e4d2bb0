package meshctl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlclient"
)

// schemaCommands manage the control plane's schema registry and the
// topics' validation policies (docs/schemas.md). A topic's schema is the
// registry subject of the same name.
func schemaCommands() []command {
	return []command{
		{"schema register", "--topic T --file SCHEMA.avsc", "register an Avro schema as the topic's next version; the registry refuses one the topic's compatibility level does not allow. Sidecars validate with it within a second", setupSchemaRegister},
		{"schema get", "--topic T [--version N|latest]", "print one version of the topic's schema (default: the latest)", setupSchemaGet},
		{"schema list", "", "list the topics that have a schema", setupSchemaList},
		{"schema check", "--topic T --file SCHEMA.avsc", "dry run of register: exit 0 if the topic would accept this schema, else exit 1 with the reasons", setupSchemaCheck},
		{"schema policy set", "--topic T --policy enforce|warn|off", "set what the sidecars do with a published body that does not match the topic's schema", setupSchemaPolicySet},
		{"schema policy get", "[--topic T]", "print a topic's validation policy, or every topic's own policy", setupSchemaPolicyGet},
		{"schema policy delete", "--topic T", "remove a topic's own policy: it enforces its schema again", setupSchemaPolicyDelete},
	}
}

func topicFlag(fs *flag.FlagSet) *string {
	return fs.String("topic", "", "the topic; its schema is the registry subject of the same name (required)")
}

func requireTopic(topic string) error {
	if topic == "" {
		return usagef("--topic is required")
	}
	return nil
}

// readSchemaFile reads an Avro schema file (.avsc).
func readSchemaFile(path string) (string, error) {
	if path == "" {
		return "", usagef("--file is required")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	text := strings.TrimSpace(string(b))
	if text == "" {
		return "", fmt.Errorf("%s is empty; expected an Avro schema (JSON)", path)
	}
	return text, nil
}

// printVersion prints a schema version as JSON, the schema itself as a
// JSON value rather than a string when it is one (it always is for Avro).
func printVersion(e *env, v api.SchemaVersion) error {
	out := struct {
		Subject string          `json:"subject"`
		Version int             `json:"version"`
		ID      int             `json:"id"`
		Schema  json.RawMessage `json:"schema"`
	}{v.Subject, v.Version, v.ID, json.RawMessage(v.Schema)}
	if !json.Valid(out.Schema) {
		quoted, _ := json.Marshal(v.Schema)
		out.Schema = quoted
	}
	return printJSON(e.stdout, out)
}

func setupSchemaRegister(fs *flag.FlagSet) func(context.Context, *env) error {
	topic := topicFlag(fs)
	file := fs.String("file", "", "the Avro schema, a JSON file (required)")
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		if err := requireTopic(*topic); err != nil {
			return err
		}
		text, err := readSchemaFile(*file)
		if err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		v, err := c.RegisterSchema(ctx, *topic, text)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "topic %s: schema version %d, id %d\n", *topic, v.Version, v.ID)
		return nil
	}
}

// versionFlag is --version: a number from 1, or "latest".
type versionFlag struct{ v int }

func (f *versionFlag) String() string {
	if f == nil || f.v == api.LatestVersion {
		return "latest"
	}
	return strconv.Itoa(f.v)
}

func (f *versionFlag) Set(s string) error {
	if strings.EqualFold(s, "latest") {
		f.v = api.LatestVersion
		return nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 {
		return fmt.Errorf("%q is not a version: a number from 1, or latest", s)
	}
	f.v = v
	return nil
}

func setupSchemaGet(fs *flag.FlagSet) func(context.Context, *env) error {
	topic := topicFlag(fs)
	version := &versionFlag{v: api.LatestVersion}
	fs.Var(version, "version", "the version: a number from 1, or latest")
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		if err := requireTopic(*topic); err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		v, err := c.Schema(ctx, *topic, version.v)
		if err != nil {
			return err
		}
		return printVersion(e, v)
	}
}

func setupSchemaList(fs *flag.FlagSet) func(context.Context, *env) error {
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		subjects, err := c.Subjects(ctx)
		if err != nil {
			return err
		}
		for _, s := range subjects {
			fmt.Fprintln(e.stdout, s)
		}
		return nil
	}
}

func setupSchemaCheck(fs *flag.FlagSet) func(context.Context, *env) error {
	topic := topicFlag(fs)
	file := fs.String("file", "", "the Avro schema to check, a JSON file (required)")
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		if err := requireTopic(*topic); err != nil {
			return err
		}
		text, err := readSchemaFile(*file)
		if err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		res, err := c.CheckSchema(ctx, *topic, text)
		var ae *ctrlclient.APIError
		if errors.As(err, &ae) && ae.Code == "40401" {
			// The schema parsed (a malformed one is 422); the topic has
			// no versions to be compatible with.
			fmt.Fprintf(e.stdout, "topic %s has no schema yet: this one would become its version 1\n", *topic)
			return nil
		}
		if err != nil {
			return err
		}
		if !res.IsCompatible {
			return fmt.Errorf("topic %s would refuse this schema:\n  %s", *topic, strings.Join(res.Messages, "\n  "))
		}
		fmt.Fprintf(e.stdout, "topic %s would accept this schema\n", *topic)
		return nil
	}
}

func setupSchemaPolicySet(fs *flag.FlagSet) func(context.Context, *env) error {
	topic := topicFlag(fs)
	policy := fs.String("policy", "", "enforce (refuse an invalid body), warn (publish it, log and count it) or off (no validation) (required)")
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		if err := requireTopic(*topic); err != nil {
			return err
		}
		if *policy == "" {
			return usagef("--policy is required: enforce, warn or off")
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		p, err := c.SetSchemaPolicy(ctx, *topic, *policy)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "topic %s: schema policy %s\n", p.Topic, p.Policy)
		return nil
	}
}

func setupSchemaPolicyGet(fs *flag.FlagSet) func(context.Context, *env) error {
	topic := fs.String("topic", "", "the topic (default: every topic with a policy of its own)")
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		c, err := cf.client()
		if err != nil {
			return err
		}
		if *topic == "" {
			all, err := c.SchemaPolicies(ctx)
			if err != nil {
				return err
			}
			return printJSON(e.stdout, all)
		}
		p, err := c.SchemaPolicy(ctx, *topic)
		if err != nil {
			return err
		}
		return printJSON(e.stdout, p)
	}
}

func setupSchemaPolicyDelete(fs *flag.FlagSet) func(context.Context, *env) error {
	topic := topicFlag(fs)
	cf := addCtrlplaneFlags(fs)
	return func(ctx context.Context, e *env) error {
		if err := requireTopic(*topic); err != nil {
			return err
		}
		c, err := cf.client()
		if err != nil {
			return err
		}
		if err := c.DeleteSchemaPolicy(ctx, *topic); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "topic %s enforces its schema (no policy of its own)\n", *topic)
		return nil
	}
}
