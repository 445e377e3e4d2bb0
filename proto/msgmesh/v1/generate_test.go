package msgmeshv1

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedCode regenerates the Go code from msgmesh.proto with the
// pinned plugins (generate.sh) and fails unless it is what is committed:
// an edit of the .proto must come with its generated code.
func TestGeneratedCode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the protoc plugins")
	}
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Skip("protoc not found: install Debian's protobuf-compiler to check the generated code")
	}
	out := t.TempDir()
	cmd := exec.Command("sh", "../../generate.sh", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("generate.sh: %v\n%s", err, b)
	}
	for _, name := range []string{"msgmesh.pb.go", "msgmesh_grpc.pb.go"} {
		want, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what msgmesh.proto generates: run go generate ./proto/... and commit the result", name)
		}
	}
}
