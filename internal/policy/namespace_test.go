package policy_test

import (
	"testing"

	"github.com/trellismesh/trellis/internal/identity"
	"github.com/trellismesh/trellis/internal/policy"
)

// MeshNamespace is a copy, so that policy need not import identity.
func TestMeshNamespaceIsControlPlaneNamespace(t *testing.T) {
	if got, want := policy.MeshNamespace, identity.ControlPlaneNamespace; got != want {
		t.Errorf("policy.MeshNamespace = %q, want identity.ControlPlaneNamespace %q", got, want)
	}
}
