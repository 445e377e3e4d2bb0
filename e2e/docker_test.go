//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// run runs a command and returns its combined output; it is killed after
// timeout.
func run(timeout time.Duration, name string, args ...string) (string, error) {
	return runEnv(timeout, nil, name, args...)
}

func runEnv(timeout time.Duration, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: timed out after %s", name, strings.Join(args, " "), timeout)
	} else if err != nil {
		err = fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), err
}

// composeRun runs the compose command with the system's variables.
func (s *system) composeRun(timeout time.Duration, args ...string) (string, error) {
	return runEnv(timeout, s.env, s.compose[0], append(append([]string{}, s.compose[1:]...), args...)...)
}

// containerID is the id of a compose service's container.
func (s *system) containerID(service string) (string, error) {
	out, err := s.composeRun(time.Minute, "ps", "-q", service)
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(out)
	if id == "" || strings.ContainsAny(id, " \n") {
		return "", fmt.Errorf("compose service %s: container id %q", service, id)
	}
	return id, nil
}

// serviceAddr is the host address (127.0.0.1:port) a service's container
// port is published on.
func (s *system) serviceAddr(service string, port int) (string, error) {
	id, err := s.containerID(service)
	if err != nil {
		return "", err
	}
	return hostPort(id, port)
}

func (s *system) serviceURL(service string, port int) (string, error) {
	a, err := s.serviceAddr(service, port)
	return "http://" + a, err
}

// hostPort asks docker where a container port is published.
func hostPort(cid string, port int) (string, error) {
	out, err := run(time.Minute, "docker", "port", cid, fmt.Sprintf("%d/tcp", port))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(out, "\n") {
		if line = strings.TrimSpace(line); strings.HasPrefix(line, "127.0.0.1:") || strings.HasPrefix(line, "0.0.0.0:") {
			return strings.Replace(line, "0.0.0.0:", "127.0.0.1:", 1), nil
		}
	}
	return "", fmt.Errorf("container %s: port %d is not published (docker port said %q)", short(cid), port, strings.TrimSpace(out))
}

// inspect formats a container's state with a Go template.
func inspect(cid, format string) (string, error) {
	out, err := run(time.Minute, "docker", "inspect", "-f", format, cid)
	return strings.TrimSpace(out), err
}

// containerRunning says whether a container runs, and its status if not.
func containerRunning(cid string) (bool, string) {
	st, err := inspect(cid, "{{.State.Status}} exit={{.State.ExitCode}}")
	if err != nil {
		return false, err.Error()
	}
	return strings.HasPrefix(st, "running"), st
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// poll calls cond every 250ms until it reports true, or fails after
// timeout with cond's last status.
func poll(timeout time.Duration, cond func() (bool, string)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, status := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %s: %s", timeout, status)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// saveLogs writes every container's log (compose's and the driver's own)
// to e2e/logs/<container>.log, and a summary of their states to
// e2e/logs/containers.txt; with print, it also prints the summary and the
// end of every log.
func (s *system) saveLogs(print bool) {
	var ids []string
	for _, filter := range []string{"label=com.docker.compose.project=" + project, "label=" + extraLabel} {
		out, err := run(time.Minute, "docker", "ps", "-aq", "--filter", filter)
		if err != nil {
			logf("listing containers: %v", err)
			continue
		}
		ids = append(ids, strings.Fields(out)...)
	}
	var summary strings.Builder
	for _, id := range ids {
		st, err := inspect(id, "{{.Name}}\t{{.Config.Image}}\t{{.State.Status}}\texit={{.State.ExitCode}}\trestarts={{.RestartCount}}\tstarted={{.State.StartedAt}}")
		if err != nil {
			continue
		}
		st = strings.TrimPrefix(st, "/")
		summary.WriteString(st + "\n")
		name, _, _ := strings.Cut(st, "\t")
		logs, _ := run(2*time.Minute, "docker", "logs", "--timestamps", id)
		path := filepath.Join(s.logsDir, name+".log")
		if err := os.WriteFile(path, []byte(logs), 0o644); err != nil {
			logf("saving %s: %v", path, err)
		}
		if print {
			fmt.Fprintf(os.Stderr, "\n===== %s (last 150 lines; all of it in %s) =====\n%s", name, path, tail(logs, 150))
		}
	}
	_ = os.WriteFile(filepath.Join(s.logsDir, "containers.txt"), []byte(summary.String()), 0o644)
	if print {
		fmt.Fprintf(os.Stderr, "\n===== containers =====\n%s\n", summary.String())
	}
	logf("saved the logs of %d containers in %s", len(ids), s.logsDir)
}

func tail(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}
