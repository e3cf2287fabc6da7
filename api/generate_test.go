package api

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedCodeIsFresh regenerates the Go code from the .proto files and
// fails if it differs from what is committed.
func TestGeneratedCodeIsFresh(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		if os.Getenv("TRELLIS_REQUIRE_ALL") != "" {
			t.Fatal("protoc not found; `make deps` installs Debian's protobuf-compiler")
		}
		t.Skip("protoc not found; install Debian's protobuf-compiler (make deps) to check generated code")
	}
	out := t.TempDir()
	cmd := exec.Command("../scripts/genproto.sh", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("genproto: %v\n%s", err, b)
	}
	var n int
	err := filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(out, p)
		want, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		got, err := os.ReadFile(rel)
		if err != nil {
			t.Errorf("%s: generated but not committed: %v (run make generate)", rel, err)
			return nil
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: committed code is stale; run make generate and commit", rel)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 4 {
		t.Errorf("generated %d files, want at least 4 (identity and config, messages and grpc)", n)
	}
}
