package ctrlclient

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/msgmesh/msgmesh/ctrlplane/api"
)

// The schema registry (docs/schemas.md) answers at Confluent's paths;
// its errors are {"error_code": N, "message": TEXT}, which an *APIError
// carries with the code as a string ("40401", "409").

func subjectPath(subject string, rest ...string) string {
	p := "/subjects/" + url.PathEscape(subject)
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

func versionSegment(version int) string {
	if version == api.LatestVersion {
		return "latest"
	}
	return strconv.Itoa(version)
}

// schemaBody is the body of register, lookup and compatibility calls.
type schemaBody struct {
	Schema string `json:"schema"`
}

// Subjects returns the registry's subjects (topics with a schema), sorted.
func (c *Client) Subjects(ctx context.Context) ([]string, error) {
	var out []string
	_, err := c.call(ctx, http.MethodGet, "/subjects", nil, &out)
	return out, err
}

// RegisterSchema adds schemaText (an Avro schema) as the next version of
// subject, the topic's name, and returns that version. A schema the
// subject already has returns its version and changes nothing. A schema
// the subject's compatibility level refuses is an *APIError with status
// 409 (errors.Is ErrConflict) whose message says why. Needs the operator
// token. Every sidecar gets the new version with its next config.
func (c *Client) RegisterSchema(ctx context.Context, subject, schemaText string) (api.SchemaVersion, error) {
	var id struct {
		ID int `json:"id"`
	}
	if _, err := c.call(ctx, http.MethodPost, subjectPath(subject, "versions"), schemaBody{schemaText}, &id); err != nil {
		return api.SchemaVersion{}, err
	}
	// Confluent's answer is the id alone; the lookup gives the version.
	var out api.SchemaVersion
	_, err := c.call(ctx, http.MethodPost, subjectPath(subject), schemaBody{schemaText}, &out)
	return out, err
}

// Schema returns one version of subject (api.LatestVersion: the newest).
// A subject or version that does not exist is ErrNotFound.
func (c *Client) Schema(ctx context.Context, subject string, version int) (api.SchemaVersion, error) {
	var out api.SchemaVersion
	_, err := c.call(ctx, http.MethodGet, subjectPath(subject, "versions", versionSegment(version)), nil, &out)
	return out, err
}

// SchemaVersions returns subject's version numbers.
func (c *Client) SchemaVersions(ctx context.Context, subject string) ([]int, error) {
	var out []int
	_, err := c.call(ctx, http.MethodGet, subjectPath(subject, "versions"), nil, &out)
	return out, err
}

// CheckSchema asks whether RegisterSchema would accept schemaText for
// subject, without registering it. A subject without versions is
// ErrNotFound (any valid schema would become its version 1); a schema
// that does not parse is ErrInvalid.
func (c *Client) CheckSchema(ctx context.Context, subject, schemaText string) (api.CompatibilityResult, error) {
	var out api.CompatibilityResult
	_, err := c.call(ctx, http.MethodPost, "/compatibility"+subjectPath(subject, "versions", "latest"), schemaBody{schemaText}, &out)
	return out, err
}

// SchemaPolicies returns the topics that have a validation policy of their
// own; every other topic with a schema enforces it.
func (c *Client) SchemaPolicies(ctx context.Context) (map[string]string, error) {
	var out map[string]string
	_, err := c.call(ctx, http.MethodGet, "/v1/schema-policies", nil, &out)
	return out, err
}

// SchemaPolicy returns a topic's validation policy (Default: it has none of
// its own and enforces its schema).
func (c *Client) SchemaPolicy(ctx context.Context, topic string) (api.SchemaPolicy, error) {
	var out api.SchemaPolicy
	_, err := c.call(ctx, http.MethodGet, "/v1/schema-policies/"+url.PathEscape(topic), nil, &out)
	return out, err
}

// SetSchemaPolicy sets a topic's validation policy: api.PolicyEnforce,
// api.PolicyWarn or api.PolicyOff.
func (c *Client) SetSchemaPolicy(ctx context.Context, topic, policy string) (api.SchemaPolicy, error) {
	var out api.SchemaPolicy
	_, err := c.call(ctx, http.MethodPut, "/v1/schema-policies/"+url.PathEscape(topic), api.SchemaPolicyRequest{Policy: policy}, &out)
	return out, err
}

// DeleteSchemaPolicy removes a topic's own policy: it enforces its schema
// again.
func (c *Client) DeleteSchemaPolicy(ctx context.Context, topic string) error {
	_, err := c.call(ctx, http.MethodDelete, "/v1/schema-policies/"+url.PathEscape(topic), nil, nil)
	return err
}
