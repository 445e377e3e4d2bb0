package msgmesh

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/msgmesh/msgmesh/codecs/mesh"
	"github.com/msgmesh/msgmesh/msgmesh/registry"
)

// TestGRPCErrorTable: docs/grpc.md's error table is grpcError's mapping:
// every mesh code is in exactly one row, and each row's gRPC code is what
// grpcCode (or grpcError, for NOT_FOUND and LIMIT_EXCEEDED) gives.
func TestGRPCErrorTable(t *testing.T) {
	doc, err := os.ReadFile("../docs/grpc.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(doc), "| mesh code (reason) | gRPC code |")
	if !ok {
		t.Fatal("docs/grpc.md: no error table")
	}
	grpcByName := map[string]codes.Code{}
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		grpcByName[strings.ToUpper(toSnake(c.String()))] = c
	}
	// Reasons grpcError gives besides the mesh codes, with an error that
	// has them.
	extra := map[string]error{
		"NOT_FOUND":      fmt.Errorf("x: %w", registry.ErrNotFound),
		"LIMIT_EXCEEDED": fmt.Errorf("x: %w", ErrLimit),
	}
	documented := map[string]codes.Code{}
	for _, line := range strings.Split(table, "\n")[2:] {
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(line, "|")
		want, ok := grpcByName[strings.Trim(strings.TrimSpace(cells[2]), "`")]
		if !ok {
			t.Fatalf("docs/grpc.md: unknown gRPC code in %q", line)
		}
		for _, f := range strings.Split(cells[1], "`")[1:] {
			if name := strings.TrimSpace(f); name != "" && name == strings.ToUpper(name) && !strings.ContainsAny(name, ", ()") {
				documented[name] = want
			}
		}
	}
	for c := mesh.Code(1); c.String() != fmt.Sprintf("CODE(%d)", c); c++ {
		want, ok := documented[c.String()]
		if !ok {
			t.Errorf("mesh code %s is not in docs/grpc.md's error table", c)
			continue
		}
		if got := grpcCode(c); got != want {
			t.Errorf("%s: grpcCode gives %s, docs/grpc.md says %s", c, got, want)
		}
	}
	for name, err := range extra {
		st := grpcError(err)
		if r := errorReason(st); r != name {
			t.Errorf("%s: reason %q", name, r)
		}
		if got, ok := documented[name]; !ok || got != status.Code(st) {
			t.Errorf("%s: grpcError gives %v, docs/grpc.md says %v", name, st, got)
		}
	}
	if r := errorReason(grpcError(errors.New("anything"))); r != "BROKER_ERROR" {
		t.Errorf("an unknown error's reason: %q", r)
	}
}

// toSnake turns "InvalidArgument" into "Invalid_Argument".
func toSnake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return b.String()
}
