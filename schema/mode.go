package schema

import (
	"fmt"
	"strings"
)

// Mode is a subject's (or the registry's) mode, Confluent's: whether
// schemas may be registered and deleted.
type Mode string

// The modes. IMPORT (registering with given ids and versions) is not
// supported: ParseMode refuses it.
const (
	// ModeReadWrite: schemas may be registered and deleted. The default.
	ModeReadWrite Mode = "READWRITE"
	// ModeReadOnly: registering and deleting are refused (ErrReadOnly);
	// levels and modes may still be changed.
	ModeReadOnly Mode = "READONLY"
	// ModeReadOnlyOverride is READONLY that a subject's own mode cannot
	// lift: set globally, it applies to every subject whatever its mode.
	ModeReadOnlyOverride Mode = "READONLY_OVERRIDE"
)

// DefaultMode is the mode of a registry nobody set one on.
const DefaultMode = ModeReadWrite

// ParseMode reads a mode, in any case, or fails with ErrInvalidMode.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToUpper(strings.TrimSpace(s))); m {
	case ModeReadWrite, ModeReadOnly, ModeReadOnlyOverride:
		return m, nil
	case "IMPORT":
		return "", fmt.Errorf("%w: IMPORT is not supported (this registry assigns ids and versions itself)", ErrInvalidMode)
	}
	return "", fmt.Errorf("%w: %q; use READWRITE, READONLY or READONLY_OVERRIDE", ErrInvalidMode, s)
}

func (m Mode) readOnly() bool { return m == ModeReadOnly || m == ModeReadOnlyOverride }
