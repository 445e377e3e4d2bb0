package ctrlplane_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/msgmesh/msgmesh/ctrlplane"
	"github.com/msgmesh/msgmesh/ctrlplane/api"
	"github.com/msgmesh/msgmesh/ctrlplane/ctrlclient"
	"github.com/msgmesh/msgmesh/ctrlplane/store"
)

// storedApps returns every value under apps/ as text.
func storedApps(t *testing.T, st store.Store) string {
	t.Helper()
	es, err := st.List(context.Background(), "apps/")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range es {
		b.Write(e.Value)
		b.WriteByte('\n')
	}
	return b.String()
}

func sha256b64(s string) string {
	h := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// TestCredentialsAtRest: the store holds no app credential, through
// creation and a rotation with a grace period, only their hashes; the
// credentials still work as before: the current one reads its config, the
// previous one too until it expires and receives the new one in it, and
// the operator's read of the config carries none.
func TestCredentialsAtRest(t *testing.T) {
	clk := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	c := startBolt(t, func(o *ctrlplane.Options) { o.Now = clk.Now })
	op := client(t, c.url, testToken)
	old := mustCreate(t, op, "orders", "10.0.0.1:7610")
	rot, err := op.RotateCredential(t.Context(), "orders", api.RotateCredentialRequest{Grace: "1m"})
	if err != nil {
		t.Fatal(err)
	}
	raw := storedApps(t, c.store)
	for name, cred := range map[string]string{"previous": old, "current": rot.Credential} {
		secret := cred[strings.LastIndexByte(cred, '.')+1:]
		if strings.Contains(raw, secret) {
			t.Fatalf("the store holds the %s credential in clear:\n%s", name, raw)
		}
		if !strings.Contains(raw, sha256b64(cred)) {
			t.Fatalf("the store does not hold the %s credential's SHA-256:\n%s", name, raw)
		}
	}

	cfg, err := client(t, c.url, old).Config(t.Context(), "orders")
	if err != nil || cfg.Credential != rot.Credential || cfg.PreviousCredential != old {
		t.Fatalf("config read with the previous credential: %+v, %v; want the new credential in it", cfg, err)
	}
	cfg, err = client(t, c.url, rot.Credential).Config(t.Context(), "orders")
	if err != nil || cfg.Credential != rot.Credential || cfg.PreviousCredential != "" || !cfg.PreviousCredentialExpires.Equal(clk.Now().Add(time.Minute)) {
		t.Fatalf("config read with the current credential: %+v, %v", cfg, err)
	}
	cfg, err = op.Config(t.Context(), "orders")
	if err != nil || cfg.Credential != "" || cfg.PreviousCredential != "" {
		t.Fatalf("config read with the operator token: %+v, %v; want no credential (the control plane has only hashes)", cfg, err)
	}
	for _, bad := range []string{old + "x", strings.Replace(old, "orders", "billing", 1), "mmc1.orders.", rot.Credential[:len(rot.Credential)-1]} {
		if _, err := client(t, c.url, bad).Config(t.Context(), "orders"); !errors.Is(err, ctrlclient.ErrUnauthorized) && !errors.Is(err, ctrlclient.ErrForbidden) {
			t.Errorf("credential %q: %v, want 401 or 403", bad, err)
		}
	}
	clk.Add(2 * time.Minute)
	if _, err := client(t, c.url, old).Config(t.Context(), "orders"); !errors.Is(err, ctrlclient.ErrUnauthorized) {
		t.Fatalf("previous credential after its grace: %v, want 401", err)
	}
}

// TestCredentialMigration: records an older control plane wrote, with
// clear-text credentials, are rewritten as hashes when a Server starts on
// the store; both credentials keep working as they did (the previous one
// until it expires, and it receives the current one).
func TestCredentialMigration(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const (
		cur  = "mmc1.orders.CURRENTcurrentCURRENTcurrentCURRENTcurrent123"
		prev = "mmc1.orders.PREVIOUSpreviousPREVIOUSpreviousPREVIOUSprevi"
		bil  = "mmc1.billing.BILLINGbillingBILLINGbillingBILLINGbillingBIL"
	)
	st := openBolt(t, t.TempDir())
	putOldApps(t, st, now, cur, prev, bil)

	c := startCP(t, st, "", func(o *ctrlplane.Options) { o.Now = func() time.Time { return now } })
	raw := storedApps(t, st)
	for _, cred := range []string{cur, prev, bil} {
		if strings.Contains(raw, cred[strings.LastIndexByte(cred, '.')+1:]) {
			t.Fatalf("after migration the store still holds %q:\n%s", cred, raw)
		}
	}
	cfg, err := client(t, c.url, prev).Config(t.Context(), "orders")
	if err != nil || cfg.Credential != cur {
		t.Fatalf("previous credential after migration: %+v, %v; want the current one in the config", cfg, err)
	}
	for app, cred := range map[string]string{"orders": cur, "billing": bil} {
		if cfg, err := client(t, c.url, cred).Config(t.Context(), app); err != nil || cfg.Credential != cred {
			t.Fatalf("%s's credential after migration: %+v, %v", app, cfg, err)
		}
	}
}

// putOldApps writes app records as a control plane before credential
// hashing did: orders with a current credential and a previous one valid
// for another hour, billing with one credential.
func putOldApps(t *testing.T, st store.Store, now time.Time, cur, prev, bil string) {
	t.Helper()
	for key, rec := range map[string]map[string]any{
		"apps/orders": {"name": "orders", "created_at": now.Add(-time.Hour), "credential": cur, "previous_credential": prev,
			"previous_expires": now.Add(time.Hour), "rotated_at": now.Add(-time.Minute),
			"instances": []map[string]any{{"id": "10.0.0.1:7610", "addr": "10.0.0.1:7610", "weight": 100}}},
		"apps/billing": {"name": "billing", "created_at": now.Add(-time.Hour), "credential": bil, "instances": []any{}},
	} {
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Put(context.Background(), key, b, 0); err != nil {
			t.Fatal(err)
		}
	}
}
