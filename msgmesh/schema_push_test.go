package msgmesh_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/client"
	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/internal/sidecartest"
)

// TestSchemaPush: the msgmesh binary, joined to a real control plane,
// validates publishes against the schemas registered there. A schema, a
// new version and a policy change each reach the running sidecar through
// the config push, without a restart; a sidecar restarted while the
// control plane is down validates with the schemas of its saved config
// from its first publish on.
func TestSchemaPush(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the msgmesh binary")
	}
	bin, err := sidecartest.Build()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cpURL, stopCP := controlPlaneAt(t, t.TempDir(), "127.0.0.1:0")
	op, created, cfgPath := ordersAt(t, cpURL)
	meshAddr, httpAddr, fwdAddr := freePort(t), freePort(t), freePort(t)
	if _, _, err := op.PutInstance(ctx, "orders", api.InstanceSpec{Addr: fwdAddr}); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	start := func() *sidecartest.Proc {
		p := sidecartest.StartProcEnv(t, []string{"MSGMESH_APP_CREDENTIAL=" + created.Credential}, bin,
			"--data-dir", dataDir, "--listen", meshAddr, "--http", httpAddr, "--config", cfgPath,
			"--ctrlplane", cpURL, "--app", "orders", "--forward-listen", fwdAddr, "--log-level", "warn")
		sidecartest.WaitHealthy(t, p, httpAddr)
		return p
	}
	p := start()
	if status, body := sidecartest.Register(t, httpAddr, "orders", []string{"p1:" + topic}, []string{"g1:" + topic}); status != http.StatusCreated {
		t.Fatalf("register: %d %s", status, body)
	}
	got := sidecartest.NewTally()
	subscribe(t, sidecartest.Dial(t, meshAddr), "g1", "app", got)
	pub := sidecartest.Dial(t, meshAddr)

	// bad is a JSON body whose status is not a symbol of the enum; each
	// probe has its own id, so the consumer can tell them apart.
	probes := 0
	bad := func(prefix string) *client.Message {
		probes++
		return &client.Message{Topic: topic, Headers: jsonCT,
			Body: fmt.Appendf(nil, `{"id":"%s-%d","status":"LOST","items":[]}`, prefix, probes)}
	}
	// within polls cond with publishes until it holds, and reports how long
	// the push took.
	within := func(what string, cond func() bool) {
		t.Helper()
		began := time.Now()
		sidecartest.WaitFor(t, 10*time.Second, what, cond)
		d := time.Since(began)
		t.Logf("%s after %v", what, d.Round(time.Millisecond))
		if d > sidecartest.Scaled(time.Second) {
			t.Errorf("%s took %v, want under %v", what, d, sidecartest.Scaled(time.Second))
		}
	}

	// A schema registered at the control plane: the running sidecar
	// refuses a body that does not match, and says where.
	v1, err := op.RegisterSchema(ctx, topic, orderV1)
	if err != nil {
		t.Fatal(err)
	}
	var refusal error
	within("version 1 enforced", func() bool {
		_, refusal = pub.Publish(ctx, bad("before"))
		return refusal != nil
	})
	if client.CodeOf(refusal) != mesh.CodeSchemaInvalid || !strings.Contains(refusal.Error(), "status") || !strings.Contains(refusal.Error(), `"LOST"`) {
		t.Fatalf("invalid body: %v, want SCHEMA_INVALID naming the field status", refusal)
	}
	body1 := confluent(t, v1.ID, orderV1, order{ID: "good-1", Status: "NEW", Items: []item{{SKU: "a", Qty: 1}}})
	if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Body: body1}); err != nil {
		t.Fatalf("a valid body of version 1: %v", err)
	}

	// A new compatible version: the running sidecar takes bodies written
	// with it, without a restart.
	v2, err := op.RegisterSchema(ctx, topic, orderV2)
	if err != nil || v2.Version != 2 {
		t.Fatalf("register version 2: %+v, %v", v2, err)
	}
	body2 := confluent(t, v2.ID, orderV2, map[string]any{"id": "good-2", "status": "PAID", "items": []any{}, "note": "v2"})
	within("version 2 accepted", func() bool {
		_, err := pub.Publish(ctx, &client.Message{Topic: topic, Body: body2})
		if err != nil && client.CodeOf(err) != mesh.CodeSchemaInvalid {
			t.Fatalf("publish a body of version 2: %v", err)
		}
		return err == nil
	})
	select {
	case <-p.Done:
		t.Fatal("the sidecar exited")
	default:
	}

	// Policy warn: a body that does not match is published anyway.
	if _, err := op.SetSchemaPolicy(ctx, topic, api.PolicyWarn); err != nil {
		t.Fatal(err)
	}
	within("policy warn applied", func() bool {
		_, err := pub.Publish(ctx, bad("warn"))
		if err != nil && client.CodeOf(err) != mesh.CodeSchemaInvalid {
			t.Fatalf("publish under warn: %v", err)
		}
		return err == nil
	})
	sidecartest.WaitFor(t, 10*time.Second, "the consumer to get the valid bodies and the one published under warn", func() bool {
		warned := false
		for body := range got.Bodies() {
			warned = warned || strings.Contains(body, `"warn-`)
		}
		return warned && got.Times(string(body1)) > 0 && got.Times(string(body2)) > 0
	})

	// Back to enforce; then the control plane goes away and the sidecar
	// restarts: its saved config applies before it serves, so the first
	// publish is validated.
	if _, err := op.SetSchemaPolicy(ctx, topic, api.PolicyEnforce); err != nil {
		t.Fatal(err)
	}
	within("policy enforce applied again", func() bool {
		_, err := pub.Publish(ctx, bad("enforce"))
		return err != nil
	})
	stopCP()
	_ = p.Cmd.Process.Kill()
	<-p.Done
	start()
	pub = sidecartest.Dial(t, meshAddr)
	if _, err := pub.Publish(ctx, bad("restarted")); client.CodeOf(err) != mesh.CodeSchemaInvalid {
		t.Fatalf("first publish after a restart without the control plane: %v, want SCHEMA_INVALID", err)
	}
	if _, err := pub.Publish(ctx, &client.Message{Topic: topic, Body: body2}); err != nil {
		t.Fatalf("a valid body of version 2 after the restart: %v", err)
	}
}
