package api

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// TokenEnv is the environment variable the control plane and meshctl read
// the operator token from when neither --token nor --token-file is given.
const TokenEnv = "MSGMESH_CTRLPLANE_TOKEN"

// LoadToken returns the token a command was given: the --token flag's
// value (flagValue), the first line of the file --token-file names (file),
// or else $TokenEnv; "" when none. Both flags at once is an error. A token
// on the command line is visible to every local user (ps,
// /proc/PID/cmdline), and a token file others may read leaks it as well:
// warnings says so, for the command to log.
func LoadToken(flagValue, file string) (token string, warnings []string, err error) {
	switch {
	case flagValue != "" && file != "":
		return "", nil, errors.New("--token and --token-file both give the token; use one")
	case flagValue != "":
		return strings.TrimSpace(flagValue), []string{"the token was given as --token, which every local user can read (ps, /proc/PID/cmdline); use $" + TokenEnv + " or --token-file instead"}, nil
	case file != "":
		fi, err := os.Stat(file)
		if err != nil {
			return "", nil, fmt.Errorf("--token-file: %w", err)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return "", nil, fmt.Errorf("--token-file: %w", err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		if token = strings.TrimSpace(line); token == "" {
			return "", nil, fmt.Errorf("--token-file %s: the file's first line is empty", file)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			warnings = append(warnings, fmt.Sprintf("--token-file %s is readable by other users (mode %#o); chmod 600 it", file, perm))
		}
		return token, warnings, nil
	}
	return strings.TrimSpace(os.Getenv(TokenEnv)), nil, nil
}
