package api

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// LabelFlag is a repeatable KEY=VALUE command-line flag (a flag.Value)
// collecting instance labels: meshctl's --label and the sidecar's
// --instance-label. Make it with LabelFlag{}; the values are checked by
// ValidateLabels where they are used.
type LabelFlag map[string]string

// String is the labels as KEY=VALUE, sorted, comma-separated.
func (l LabelFlag) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}

// Set adds one KEY=VALUE.
func (l LabelFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("label %q: expected KEY=VALUE", v)
	}
	l[k] = val
	return nil
}
