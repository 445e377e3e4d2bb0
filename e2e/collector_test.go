//go:build e2e

package e2e

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/msgmesh/msgmesh/internal/otlptest"
)

// collector is the stand-in for an OpenTelemetry collector: an OTLP/gRPC
// trace receiver in the driver (otlptest) that keeps every span it is
// sent. Containers reach it as host.docker.internal (docker-compose.yml
// maps that name to the host's docker bridge address).
type collector struct {
	*otlptest.Collector
	listen   string // where it listens on the host
	endpoint string // the URL containers export to
}

// startCollector listens on the docker bridge's gateway address (what
// host-gateway resolves to in the containers: the IPAM gateway of the
// default bridge network, else docker0's address), or on every interface
// if that address cannot be had.
func startCollector() (*collector, error) {
	host := "0.0.0.0"
	if gw, err := run(time.Minute, "docker", "network", "inspect", "bridge", "-f", "{{range .IPAM.Config}}{{.Gateway}}{{end}}"); err == nil && net.ParseIP(strings.TrimSpace(gw)) != nil {
		host = strings.TrimSpace(gw)
	} else if ip := interfaceIPv4("docker0"); ip != "" {
		host = ip
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil && host != "0.0.0.0" {
		ln, err = net.Listen("tcp", "0.0.0.0:0")
	}
	if err != nil {
		return nil, err
	}
	c := &collector{Collector: otlptest.Serve(ln), listen: ln.Addr().String()}
	c.endpoint = fmt.Sprintf("http://host.docker.internal:%d", ln.Addr().(*net.TCPAddr).Port)
	return c, nil
}

func (c *collector) close() { c.Close() }

// interfaceIPv4 is the first IPv4 address of a network interface, "" if
// it has none.
func interfaceIPv4(name string) string {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return ""
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return ""
}
