//go:build e2e

package e2e

import (
	"bytes"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Names of the compose system (docker-compose.yml).
const (
	project       = "msgmesh-e2e"
	networkName   = "msgmesh-e2e"
	operatorToken = "e2e-operator-token-0123456789"
	imageSidecar  = "msgmesh-e2e/msgmesh:e2e"
	imageSidecar2 = "msgmesh-e2e/msgmesh:v2" // the hot-upgrade target (scenario 5)
	extraLabel    = "msgmesh.e2e.extra"      // containers the driver starts outside compose
)

// Topics, one per scenario so that counts never mix (docker-compose.yml
// registers them all).
const (
	topicNATS    = "e2e.nats.orders"
	topicKafka   = "e2e.kafka.orders"
	topicRMQ     = "e2e.rmq.orders"
	topicWeights = "e2e.nats.weights"
	topicChaos   = "e2e.nats.chaos"
	topicUpgrade = "e2e.nats.upgrade"
	topicSchema  = "e2e.nats.schema"
	topicTrace   = "e2e.nats.trace"
	groupOrders  = "g1"
	groupBilling = "billing"
)

// system is the running compose system, shared by every scenario.
type system struct {
	root     string   // the repository root
	compose  []string // the compose command and its global flags
	env      []string // variables for compose (credentials, config choice)
	logsDir  string
	ctrlURL  string
	official bool // the official broker images (E2E_OFFICIAL=1)

	// rocketmq: the msgmesh binary has the RocketMQ adapter, so the
	// sidecars get the config with the rocketmq cluster.
	rocketmq bool
	// otlpFlag is the sidecar's flag naming an OTLP endpoint; "" when
	// msgmesh has none yet.
	otlpFlag  string
	collector *collector

	creds map[string]string // app credentials from the control plane
	pods  map[string]*pod
	order []string // pod names, sorted
}

var sys *system

// TestMain brings the system up, runs the scenarios, saves every
// container's log and tears the system down, whatever happened (unless
// E2E_KEEP is set). A scenario that panics ends the process before the
// deferred teardown: "make e2e" then saves the logs and tears down itself.
func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) (code int) {
	start := time.Now()
	s, err := newSystem()
	if err != nil {
		logf("cannot start: %v", err)
		return 1
	}
	sys = s
	defer func() {
		s.saveLogs(code != 0)
		if os.Getenv("E2E_KEEP") != "" {
			logf("E2E_KEEP is set: the system stays up (%s; credentials in %s); \"make e2e-down\" removes it",
				s.ctrlURL, filepath.Join(s.logsDir, "compose.env"))
		} else {
			s.down()
		}
		if s.collector != nil {
			s.collector.close()
		}
		logf("total %s", time.Since(start).Round(time.Second))
	}()
	if err := s.up(); err != nil {
		logf("bringing the system up failed: %v", err)
		return 1
	}
	logf("system up after %s", time.Since(start).Round(time.Second))
	return m.Run()
}

// logf prints a driver progress line with the time since the start.
var t0 = time.Now()

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "e2e [%6.1fs] %s\n", time.Since(t0).Seconds(), fmt.Sprintf(format, args...))
}

func newSystem() (*system, error) {
	root, err := filepath.Abs("..")
	if err != nil {
		return nil, err
	}
	s := &system{root: root, logsDir: filepath.Join(root, "e2e", "logs"), creds: map[string]string{}, pods: map[string]*pod{}}
	s.official = os.Getenv("E2E_OFFICIAL") != ""
	if c := strings.Fields(os.Getenv("E2E_COMPOSE")); len(c) > 0 {
		s.compose = c
	} else if _, err := run(time.Minute, "docker", "compose", "version"); err == nil {
		s.compose = []string{"docker", "compose"}
	} else {
		s.compose = []string{"docker-compose"}
	}
	composeCmd := strings.Join(s.compose, " ")
	s.compose = append(s.compose, "-p", project, "-f", filepath.Join(root, "docker-compose.yml"))
	if s.official {
		s.compose = append(s.compose, "-f", filepath.Join(root, "e2e", "docker-compose.official.yml"))
	}
	if err := os.RemoveAll(s.logsDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(s.logsDir, 0o755); err != nil {
		return nil, err
	}
	for _, img := range []string{imageSidecar, imageSidecar2, "msgmesh-e2e/ctrlplane:e2e", "msgmesh-e2e/demoapp:e2e",
		"msgmesh-e2e/natsd:e2e", "msgmesh-e2e/kafkad:e2e", "msgmesh-e2e/rmq-testbroker:e2e"} {
		if _, err := run(time.Minute, "docker", "image", "inspect", img); err != nil {
			return nil, fmt.Errorf("image %s is missing: run \"make images\" first", img)
		}
	}
	// What the sidecar binary can do decides the config and flags.
	bin := filepath.Join(root, "e2e", "bin", "msgmesh")
	exe, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("%w (run \"make images\" first)", err)
	}
	s.rocketmq = bytes.Contains(exe, []byte("github.com/msgmesh/msgmesh/broker/rocketmqbroker."))
	help, _ := run(time.Minute, bin, "--help")
	// The flag naming the OTLP endpoint: one with "otlp" in its name,
	// preferably also "endpoint" (go's flag usage lists "  -name type").
	for _, m := range regexp.MustCompile(`(?m)^\s+--?([a-z0-9-]*otlp[a-z0-9-]*)\b`).FindAllStringSubmatch(help, -1) {
		if s.otlpFlag == "" || strings.Contains(m[1], "endpoint") && !strings.Contains(s.otlpFlag, "endpoint") {
			s.otlpFlag = "--" + m[1]
		}
	}
	logf("compose: %s; official broker images: %v; RocketMQ adapter in msgmesh: %v; sidecar OTLP flag: %q", composeCmd, s.official, s.rocketmq, s.otlpFlag)
	return s, nil
}

// up starts the system: control plane and brokers, the apps and their
// instances at the control plane, then the pods with the apps'
// credentials; it returns once every demo app is connected and subscribed
// and every sidecar has its weights.
func (s *system) up() error {
	s.down() // leftovers of an earlier run that could not clean up
	var err error
	if s.collector, err = startCollector(); err != nil {
		return fmt.Errorf("OTLP collector stand-in: %w", err)
	}
	logf("OTLP collector stand-in on %s (containers: %s)", s.collector.listen, s.collector.endpoint)
	config := "msgmesh.yaml"
	if !s.rocketmq {
		config = "msgmesh-norocketmq.yaml"
	}
	extra := ""
	if s.otlpFlag != "" {
		extra = s.otlpFlag + " " + s.collector.endpoint
	}
	s.env = []string{
		"MSGMESH_CTRLPLANE_TOKEN=" + operatorToken,
		"MSGMESH_E2E_CONFIG=" + config,
		"MSGMESH_EXTRA_FLAGS=" + extra,
		"DEMO_OTLP_ENDPOINT=" + s.collector.endpoint,
	}

	infra := []string{"ctrlplane", "nats", "kafka", "rocketmq"}
	if s.official {
		infra = append(infra, "rocketmq-broker")
	}
	if _, err := s.composeRun(3*time.Minute, append([]string{"up", "-d"}, infra...)...); err != nil {
		return err
	}
	cp, err := s.serviceURL("ctrlplane", 7700)
	if err != nil {
		return err
	}
	s.ctrlURL = cp
	if err := poll(60*time.Second, func() (bool, string) { return httpOK(cp + "/healthz") }); err != nil {
		return fmt.Errorf("control plane %s: %w", cp, err)
	}
	if err := s.waitBrokers(); err != nil {
		return err
	}
	logf("control plane and brokers are up")

	// The apps and their instances: an instance's id is its forwarding
	// address, which is what each sidecar advertises.
	for _, app := range []string{"orders", "billing"} {
		var created struct {
			Credential string `json:"credential"`
		}
		if err := s.ctrl("POST", "/v1/apps", map[string]string{"name": app}, &created, 201); err != nil {
			return err
		}
		s.creds[app] = created.Credential
	}
	for _, name := range []string{"orders1", "orders2", "orders3", "billing1"} {
		app := strings.TrimRight(name, "0123456789")
		if err := s.ctrl("POST", "/v1/apps/"+app+"/instances", map[string]any{"addr": name + ":7602", "labels": map[string]string{"pod": name}}, nil, 201); err != nil {
			return err
		}
		s.pods[name] = &pod{name: name, app: app, mesh: name + "-mesh"}
		s.order = append(s.order, name)
	}
	s.env = append(s.env, "ORDERS_CREDENTIAL="+s.creds["orders"], "BILLING_CREDENTIAL="+s.creds["billing"])
	var envFile strings.Builder
	for _, e := range s.env {
		envFile.WriteString(e + "\n")
	}
	if err := os.WriteFile(filepath.Join(s.logsDir, "compose.env"), []byte(envFile.String()), 0o600); err != nil {
		return err
	}

	var svcs []string
	for _, name := range s.order {
		svcs = append(svcs, name, name+"-mesh")
	}
	if _, err := s.composeRun(3*time.Minute, append([]string{"up", "-d"}, svcs...)...); err != nil {
		return err
	}
	for _, name := range s.order {
		p := s.pods[name]
		if p.appCID, err = s.containerID(p.name); err != nil {
			return err
		}
		if p.meshCID, err = s.containerID(p.mesh); err != nil {
			return err
		}
		if err := p.refresh(); err != nil {
			return err
		}
	}
	for _, name := range s.order {
		p := s.pods[name]
		if err := poll(120*time.Second, func() (bool, string) {
			if running, st := containerRunning(p.meshCID); !running {
				return false, "sidecar container " + st
			}
			if ok, st := httpOK(p.sidecarURL + "/healthz"); !ok {
				return false, "sidecar: " + st
			}
			if ok, st := httpOK(p.demoURL + "/healthz"); !ok {
				return false, "demo app: " + st
			}
			st, err := p.stats()
			if err != nil || st.Weight != 100 {
				return false, fmt.Sprintf("sidecar weight %d (%v)", st.Weight, err)
			}
			return true, ""
		}); err != nil {
			return fmt.Errorf("pod %s: %w", name, err)
		}
	}
	logf("pods ready: %s", strings.Join(s.order, ", "))
	return s.warmUp()
}

// waitBrokers waits until every broker accepts connections.
func (s *system) waitBrokers() error {
	if !s.official {
		nats, err := s.serviceURL("nats", 8222)
		if err != nil {
			return err
		}
		if err := poll(60*time.Second, func() (bool, string) { return httpOK(nats + "/healthz?js-enabled-only=true") }); err != nil {
			return fmt.Errorf("nats: %w", err)
		}
	}
	for _, b := range []struct {
		svc  string
		port int
	}{{"kafka", 9092}, {"rocketmq", 9876}} {
		addr, err := s.serviceAddr(b.svc, b.port)
		if err != nil {
			return err
		}
		if err := poll(90*time.Second, func() (bool, string) {
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				return false, err.Error()
			}
			c.Close()
			return true, ""
		}); err != nil {
			return fmt.Errorf("%s: %w", b.svc, err)
		}
	}
	return nil
}

// warmUp publishes to each broker topic, ten messages at a time, until
// every orders pod (group g1) and the billing pod (group billing) consumed
// some: then every upstream consumer runs, and Kafka's and RocketMQ's
// groups have handed a share of the partitions or queues to every member,
// so no rebalance happens during the scenarios.
func (s *system) warmUp() error {
	topics := []string{topicNATS, topicKafka}
	if s.rocketmq {
		topics = append(topics, topicRMQ)
	}
	orders := s.podsOf("orders")
	groups := []struct {
		group string
		pods  []*pod
	}{{groupOrders, orders}, {groupBilling, s.podsOf("billing")}}
	for _, topic := range topics {
		prefix := "warmup-" + topic + "-"
		sent := 0
		status := ""
		deadline := time.Now().Add(120 * time.Second)
		for done := false; !done; {
			if time.Now().After(deadline) {
				return fmt.Errorf("warm-up on %s: after %d messages: %s", topic, sent, status)
			}
			for range 10 {
				id := fmt.Sprintf("%s%03d", prefix, sent)
				sent++
				if ans, err := orders[sent%len(orders)].publish(publishRequest{Topic: topic, ID: id, Key: id, Body: id}); err != nil || !ans.OK {
					return fmt.Errorf("warm-up publish to %s: %v %+v", topic, err, ans)
				}
			}
			_ = poll(2*time.Second, func() (bool, string) {
				done, status = true, ""
				for _, g := range groups {
					for _, p := range g.pods {
						ids, err := p.consumed(g.group, topic, prefix)
						if err != nil {
							return false, err.Error()
						}
						if len(ids) == 0 {
							done = false
							status += fmt.Sprintf("%s has consumed nothing for group %s; ", p.name, g.group)
						}
					}
				}
				return done, status
			})
		}
	}
	logf("warm-up done: every pod of every group consumes %s", strings.Join(topics, ", "))
	return nil
}

// down removes the containers started outside compose, then the compose
// system with its volumes.
func (s *system) down() {
	if ids, _ := run(time.Minute, "docker", "ps", "-aq", "--filter", "label="+extraLabel); strings.TrimSpace(ids) != "" {
		_, _ = run(time.Minute, "docker", append([]string{"rm", "-f", "-v"}, strings.Fields(ids)...)...)
	}
	if out, err := s.composeRun(3*time.Minute, "down", "-v", "-t", "3", "--remove-orphans"); err != nil {
		logf("compose down: %v\n%s", err, out)
	}
}

// podsOf returns the pods of app, sorted by name.
func (s *system) podsOf(app string) []*pod {
	var out []*pod
	for _, name := range s.order {
		if p := s.pods[name]; p.app == app {
			out = append(out, p)
		}
	}
	return out
}
