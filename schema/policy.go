package schema

import (
	"fmt"
	"strings"
)

// Policy is what the sidecar does with a body that fails validation on a
// topic. The Validator reports the problem either way; the caller applies
// the policy.
type Policy uint8

const (
	// PolicyEnforce rejects the message with the validation error. It is
	// the zero value: a topic with a schema and no policy enforces it.
	PolicyEnforce Policy = iota
	// PolicyWarn passes the message on unchanged and logs and counts the
	// problem.
	PolicyWarn
	// PolicyOff does not validate at all.
	PolicyOff
)

// ParsePolicy parses "enforce", "warn" or "off" (case-insensitive); ""
// is PolicyEnforce. Anything else is an error.
func ParsePolicy(s string) (Policy, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "enforce":
		return PolicyEnforce, nil
	case "warn":
		return PolicyWarn, nil
	case "off":
		return PolicyOff, nil
	}
	return 0, fmt.Errorf("schema: unknown validation policy %q; use enforce, warn or off", s)
}

func (p Policy) String() string {
	switch p {
	case PolicyEnforce:
		return "enforce"
	case PolicyWarn:
		return "warn"
	case PolicyOff:
		return "off"
	}
	return fmt.Sprintf("Policy(%d)", uint8(p))
}

// MarshalText implements encoding.TextMarshaler, for JSON and YAML config.
func (p Policy) MarshalText() ([]byte, error) {
	if p > PolicyOff {
		return nil, fmt.Errorf("schema: invalid policy %d", uint8(p))
	}
	return []byte(p.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler with ParsePolicy.
func (p *Policy) UnmarshalText(b []byte) error {
	v, err := ParsePolicy(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}
