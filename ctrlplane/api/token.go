package api

import (
	"fmt"
	"os"
	"strings"
)

// TokenEnv is the environment variable the control plane and meshctl read
// the operator token from when neither --token nor --token-file is given.
const TokenEnv = "MSGMESH_CTRLPLANE_TOKEN"

// LoadToken returns the token a command was given: the --token flag's
// value (flagValue), the first line of the file --token-file names (file),
// or else $TokenEnv; "" when none (see LoadSecret).
func LoadToken(flagValue, file string) (token string, warnings []string, err error) {
	return LoadSecret(Secret{Flag: "--token", Value: flagValue, FileFlag: "--token-file", File: file, Env: TokenEnv})
}

// Secret says where a command may be given a secret.
type Secret struct {
	Flag, Value    string // a flag that holds the secret itself, and its value; Flag "" if none
	FileFlag, File string // a flag that names a file holding it, and its value
	Env            string // the environment variable read when neither flag is given
}

// LoadSecret returns a secret a command was given: the flag's value, the
// first line of the file, or else the environment variable; "" when none.
// Both flags at once is an error. A secret on the command line is visible
// to every local user (ps, /proc/PID/cmdline), and a file others may read
// leaks it as well: warnings says so, for the command to log.
func LoadSecret(src Secret) (secret string, warnings []string, err error) {
	switch {
	case src.Value != "" && src.File != "":
		return "", nil, fmt.Errorf("%s and %s both give the %s; use one", src.Flag, src.FileFlag, strings.TrimPrefix(src.Flag, "--"))
	case src.Value != "":
		return strings.TrimSpace(src.Value), []string{"the " + strings.TrimPrefix(src.Flag, "--") + " was given as " + src.Flag + ", which every local user can read (ps, /proc/PID/cmdline); use $" + src.Env + " or " + src.FileFlag + " instead"}, nil
	case src.File != "":
		fi, err := os.Stat(src.File)
		if err != nil {
			return "", nil, fmt.Errorf("%s: %w", src.FileFlag, err)
		}
		b, err := os.ReadFile(src.File)
		if err != nil {
			return "", nil, fmt.Errorf("%s: %w", src.FileFlag, err)
		}
		line, _, _ := strings.Cut(string(b), "\n")
		if secret = strings.TrimSpace(line); secret == "" {
			return "", nil, fmt.Errorf("%s %s: the file's first line is empty", src.FileFlag, src.File)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			warnings = append(warnings, fmt.Sprintf("%s %s is readable by other users (mode %#o); chmod 600 it", src.FileFlag, src.File, perm))
		}
		return secret, warnings, nil
	}
	return strings.TrimSpace(os.Getenv(src.Env)), nil, nil
}
