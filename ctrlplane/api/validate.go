package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// Limits of names and labels, in bytes.
const (
	MaxAppNameLen    = 128 // the sidecar's app name limit (msgmesh/registry)
	MaxInstanceIDLen = 255
	MaxAddrLen       = 255
	MaxLabels        = 64
	MaxLabelKeyLen   = 63
	MaxLabelValueLen = 256
	MaxInstances     = 1000 // per app
)

// ErrInvalid is wrapped by every *ValidationError.
var ErrInvalid = errors.New("invalid")

// ValidationError says which field of a request is wrong and why. It
// unwraps to ErrInvalid; the control plane answers it with 400 INVALID.
type ValidationError struct {
	// Field is the JSON path of the offending value ("weight",
	// "labels.zone", "clusters[1].kind"), or a parameter ("after"); empty
	// when the body as a whole is wrong.
	Field string
	// Reason says what is wrong, for a person.
	Reason string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

// Unwrap returns ErrInvalid.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// Invalid returns a *ValidationError.
func Invalid(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// ValidateAppName checks an app name: 1 to 128 bytes of letters, digits,
// '_', '.' and '-', starting with a letter or digit (the sidecar's rule).
func ValidateAppName(name string) error {
	if name == "" {
		return Invalid("name", "the app name is empty")
	}
	if len(name) > MaxAppNameLen {
		return Invalid("name", "the app name is longer than %d bytes", MaxAppNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isAlnum(c) && (i == 0 || c != '_' && c != '.' && c != '-') {
			return Invalid("name", "app name %q: only letters, digits, '_', '.' and '-' are allowed, and it must start with a letter or digit", name)
		}
	}
	return nil
}

// ValidateInstanceID checks an instance ID: 1 to 255 bytes of letters,
// digits and "_.:-[]%", so that any host:port (IPv6 included) is one.
func ValidateInstanceID(id string) error {
	if id == "" {
		return Invalid("id", "the instance ID is empty")
	}
	if len(id) > MaxInstanceIDLen {
		return Invalid("id", "the instance ID is longer than %d bytes", MaxInstanceIDLen)
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case isAlnum(c), c == '_', c == '.', c == ':', c == '-', c == '[', c == ']', c == '%':
		default:
			return Invalid("id", "instance ID %q: only letters, digits and _ . : - [ ] %% are allowed", id)
		}
	}
	return nil
}

// ValidateAddr checks a forwarding address: host:port with a non-empty
// host and a port in 1..65535.
func ValidateAddr(addr string) error {
	if addr == "" {
		return Invalid("addr", "the address is empty; expected host:port of the instance's forwarding listener")
	}
	if len(addr) > MaxAddrLen {
		return Invalid("addr", "the address is longer than %d bytes", MaxAddrLen)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		reason := err.Error()
		if ae, ok := errors.AsType[*net.AddrError](err); ok {
			reason = ae.Err
		}
		return Invalid("addr", "%q is not host:port: %s", addr, reason)
	}
	if host == "" {
		return Invalid("addr", "%q has no host", addr)
	}
	for _, r := range host {
		if r <= ' ' || r == 0x7f || r == '/' {
			return Invalid("addr", "%q: the host has a space, control character or '/'", addr)
		}
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return Invalid("addr", "%q: the port must be a number in 1..65535", addr)
	}
	return nil
}

// ValidateWeight checks that w is in 0..100.
func ValidateWeight(w int) error {
	if w < MinWeight || w > MaxWeight {
		return Invalid("weight", "%d is outside %d..%d", w, MinWeight, MaxWeight)
	}
	return nil
}

// ValidateLabels checks at most 64 labels; keys 1 to 63 bytes of letters,
// digits and "_./-" starting with a letter or digit; values at most 256
// bytes of UTF-8 without control characters.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return Invalid("labels", "%d labels; at most %d are allowed", len(labels), MaxLabels)
	}
	for k, v := range labels {
		if k == "" || len(k) > MaxLabelKeyLen {
			return Invalid("labels", "label key %q must be 1 to %d bytes", k, MaxLabelKeyLen)
		}
		for i := 0; i < len(k); i++ {
			c := k[i]
			if !isAlnum(c) && (i == 0 || c != '_' && c != '.' && c != '-' && c != '/') {
				return Invalid("labels", "label key %q: only letters, digits, '_', '.', '-' and '/' are allowed, and it must start with a letter or digit", k)
			}
		}
		if len(v) > MaxLabelValueLen {
			return Invalid("labels."+k, "the value is longer than %d bytes", MaxLabelValueLen)
		}
		if !utf8.ValidString(v) {
			return Invalid("labels."+k, "the value is not UTF-8")
		}
		for _, r := range v {
			if unicode.IsControl(r) {
				return Invalid("labels."+k, "the value has a control character")
			}
		}
	}
	return nil
}

// Validate checks the spec and fills ID from Addr when it is empty.
func (s *InstanceSpec) Validate() error {
	if err := ValidateAddr(s.Addr); err != nil {
		return err
	}
	if s.ID == "" {
		s.ID = s.Addr
	}
	if err := ValidateInstanceID(s.ID); err != nil {
		return err
	}
	if s.Weight != nil {
		if err := ValidateWeight(*s.Weight); err != nil {
			return err
		}
	}
	return ValidateLabels(s.Labels)
}

// Validate checks a lease request.
func (r *LeaseRequest) Validate() error {
	if err := ValidateAddr(r.Addr); err != nil {
		return err
	}
	if err := ValidateInstanceID(r.Addr); err != nil {
		return err
	}
	if len(r.SidecarVersion) > MaxVersionLen {
		return Invalid("sidecar_version", "longer than %d bytes", MaxVersionLen)
	}
	for _, c := range r.SidecarVersion {
		if c <= ' ' || c == 0x7f {
			return Invalid("sidecar_version", "%q has a space or control character", r.SidecarVersion)
		}
	}
	if r.Traffic != nil {
		if err := r.Traffic.Validate(); err != nil {
			return err
		}
	}
	return ValidateLabels(r.Labels)
}

// ConstantTimeEqual compares two secrets in time that depends on neither.
func ConstantTimeEqual(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}
