package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/cli"
	"github.com/trellismesh/trellis/internal/controlplane"
	"github.com/trellismesh/trellis/internal/resource"
	"github.com/trellismesh/trellis/internal/testutil/cptest"
)

// envVars are the variables the CLI reads. Tests clear them so that a
// developer's shell cannot change the outcome.
var envVars = []string{"TRELLIS_API", "TRELLIS_TOKEN", "TRELLIS_TOKEN_FILE", "TRELLIS_CA_FILE"}

func clearEnv(t *testing.T) {
	t.Helper()
	for _, k := range envVars {
		t.Setenv(k, "")
	}
}

// result is what one run of the CLI did.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs the CLI in-process with exactly args.
func run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := cli.Main(t.Context(), args, strings.NewReader(stdin), &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// mesh is a real control plane on loopback and an admin API client for
// checking what the CLI stored.
type mesh struct {
	*cptest.ControlPlane
	client *adminapi.Client
}

// startMesh clears the CLI's environment and starts a control plane.
func startMesh(t *testing.T) *mesh {
	t.Helper()
	clearEnv(t)
	cp := cptest.StartControlPlane(t, controlplane.Config{})
	return &mesh{ControlPlane: cp, client: cp.Client(t)}
}

func (m *mesh) tokenFile() string { return filepath.Join(m.DataDir, controlplane.AdminTokenFile) }

// run runs the CLI against m: --api and --token-file, then args.
func (m *mesh) run(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	return run(t, stdin, append([]string{"--api", m.APIURL(), "--token-file", m.tokenFile()}, args...)...)
}

// mustRun is run for commands that must succeed; it returns stdout.
func (m *mesh) mustRun(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	r := m.run(t, stdin, args...)
	if r.code != cli.ExitOK {
		t.Fatalf("trellis %s: %v", strings.Join(args, " "), r)
	}
	return r.stdout
}

// mustApply applies files and fails the test unless that works.
func (m *mesh) mustApply(t *testing.T, files ...string) {
	t.Helper()
	args := []string{"apply"}
	for _, f := range files {
		args = append(args, "-f", f)
	}
	m.mustRun(t, "", args...)
}

func mustKind(t *testing.T, name string) resource.KindInfo {
	t.Helper()
	k, ok := resource.LookupKind(name)
	if !ok {
		t.Fatalf("kind %q not known", name)
	}
	return k
}

// list lists a kind's stored objects in every namespace.
func (m *mesh) list(t *testing.T, kind string) []resource.Object {
	t.Helper()
	items, err := m.client.List(context.Background(), mustKind(t, kind), "")
	if err != nil {
		t.Fatalf("list %s: %v", kind, err)
	}
	return items
}

// get fetches one stored object; ok is false if the server says 404.
func (m *mesh) get(t *testing.T, kind, namespace, name string) (o resource.Object, ok bool) {
	t.Helper()
	o, err := m.client.Get(context.Background(), mustKind(t, kind), namespace, name)
	var se *adminapi.StatusError
	if errors.As(err, &se) && se.Status == 404 {
		return resource.Object{}, false
	}
	if err != nil {
		t.Fatalf("get %s %s/%s: %v", kind, namespace, name, err)
	}
	return o, true
}

// storedMesh returns the stored Mesh and its spec.
func (m *mesh) storedMesh(t *testing.T) (resource.Object, resource.MeshSpec) {
	t.Helper()
	o, ok := m.get(t, "mesh", "", "default")
	if !ok {
		t.Fatal("the default Mesh does not exist")
	}
	spec, err := resource.MeshSpecOf(&o)
	if err != nil {
		t.Fatal(err)
	}
	return o, spec
}

// lines joins lines with a newline after each, as the CLI prints them.
func lines(ls ...string) string {
	if len(ls) == 0 {
		return ""
	}
	return strings.Join(ls, "\n") + "\n"
}

// ageCell matches the AGE column, the last of every table row.
var ageCell = regexp.MustCompile(`(?m)   \d+[smhd]$`)

// normalizeAge replaces ages, which depend on when the test runs, so that
// tables can be compared with golden files.
func normalizeAge(table string) string {
	return ageCell.ReplaceAllString(table, "   <age>")
}

// generic is v as encoding/json's generic values, so that objects can be
// compared regardless of key order and indentation.
func generic(t *testing.T, v any) any {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func sameObjects(t *testing.T, got, want any) bool {
	t.Helper()
	return reflect.DeepEqual(generic(t, got), generic(t, want))
}
