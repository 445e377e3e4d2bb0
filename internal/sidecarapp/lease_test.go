package sidecarapp

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/broker/brokertest"
	"github.com/msgmesh/msgmesh/ctrlplane"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlclient"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlplanetest"
)

const cpToken = "sidecarapp-test-operator-token"

// TestSidecarRegistersItself: a sidecar started with --ctrlplane appears
// at the control plane by itself, under its --forward-advertise address,
// with its --instance-label labels and its version; an operator's weight
// is applied; once it stops its lease lapses and it is offline, keeping
// the weight; restarted, it is online again with that weight, also after
// its credential was rotated while it was down.
func TestSidecarRegistersItself(t *testing.T) {
	cpURL := ctrlplanetest.Start(t, ctrlplane.Options{Token: cpToken, LeaseTTL: 2 * time.Second})
	ctx := t.Context()
	op, err := ctrlclient.New(cpURL, cpToken)
	if err != nil {
		t.Fatal(err)
	}
	created, err := op.CreateApp(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("MSGMESH_APP_CREDENTIAL", created.Credential)
	fwd := brokertest.FreeAddr(t)
	dir := t.TempDir()
	args := []string{"--ctrlplane", cpURL, "--app", "orders", "--forward-listen", "127.0.0.1:0", "--forward-advertise", fwd,
		"--instance-label", "zone=a", "--instance-label", "version=v7"}
	instance := func() (api.Instance, bool) {
		ins, err := op.Instances(ctx, "orders")
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range ins {
			if in.Addr == fwd {
				return in, true
			}
		}
		return api.Instance{}, false
	}

	s := startSidecar(t, dir, args...)
	waitCond(t, "the sidecar to register itself", func() bool { _, ok := instance(); return ok })
	in, _ := instance()
	if in.ID != fwd || in.State() != api.StateOnline || in.Weight != api.DefaultWeight ||
		in.Labels["zone"] != "a" || in.Labels["version"] != "v7" || in.SidecarVersion == "" || in.LastSeen.IsZero() {
		t.Fatalf("self-registered instance: %+v", in)
	}
	if _, err := op.SetWeight(ctx, "orders", fwd, 40); err != nil {
		t.Fatal(err)
	}
	waitCond(t, "the sidecar to apply weight 40", func() bool { return s.stats()["weight"] == 40 })

	s.stop()
	waitCond(t, "the stopped sidecar to go offline", func() bool { in, _ := instance(); return in.Offline })
	if in, _ := instance(); in.Weight != 40 {
		t.Fatalf("offline instance: weight %d, want 40", in.Weight)
	}

	s = startSidecar(t, dir, args...)
	waitCond(t, "the restarted sidecar to be online", func() bool { in, _ := instance(); return in.State() == api.StateOnline })
	if in, _ := instance(); in.Weight != 40 {
		t.Fatalf("re-registered instance: weight %d, want the operator's 40", in.Weight)
	}
	waitCond(t, "the restarted sidecar to apply weight 40", func() bool { return s.stats()["weight"] == 40 })

	// The credential is revoked (rotated with no grace) while the sidecar
	// is down; restarted with the new one, it renews with it although
	// its saved config holds the old one.
	s.stop()
	waitCond(t, "the stopped sidecar to go offline again", func() bool { in, _ := instance(); return in.Offline })
	rotated, err := op.RotateCredential(ctx, "orders", api.RotateCredentialRequest{Grace: "0s"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("MSGMESH_APP_CREDENTIAL", rotated.Credential)
	startSidecar(t, dir, args...)
	waitCond(t, "the sidecar with the new credential to be online", func() bool { in, _ := instance(); return in.State() == api.StateOnline })
}

// stats returns the sidecar's GET /v1/stats counters (nil if it does not
// answer).
func (s *sidecar) stats() map[string]int {
	resp, err := http.Get("http://" + s.http + "/v1/stats")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var m map[string]int
	if json.NewDecoder(resp.Body).Decode(&m) != nil {
		return nil
	}
	return m
}
