package controlplane

import (
	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
	"github.com/trellismesh/trellis/internal/resource"
)

// Internals the external tests drive directly.
type (
	Workload      = workload
	Policy        = snapshot.Policy
	SnapshotInput = snapshot.Input
	MeshView      = snapshot.View
	IdleService   = idleService
	ServiceKey    = serviceKey
)

// BuildSnapshot builds w's snapshot from in, as one push round does.
func BuildSnapshot(in SnapshotInput, w Workload) (*pb.Snapshot, error) {
	v, err := snapshot.NewView(in)
	if err != nil {
		return nil, err
	}
	return snapshot.Build(v, &w)
}

// NewMeshView builds the part of snapshots all proxies share.
func NewMeshView(in SnapshotInput) (*MeshView, error) { return snapshot.NewView(in) }

// BuildFromView builds one proxy's snapshot from a shared view.
func BuildFromView(v *MeshView, w Workload) (*pb.Snapshot, error) { return snapshot.Build(v, &w) }

// Consistent is the check a push round runs on a view before publishing
// any snapshot built from it.
func Consistent(v *MeshView) error { return v.Consistent() }

// PolicyFromObject decodes a stored AuthorizationPolicy.
func PolicyFromObject(o *resource.Object) (Policy, error) { return snapshot.PolicyFromObject(o) }

// Selects reports whether p selects w.
func Selects(p Policy, w Workload) bool { return snapshot.Selects(&p, &w) }

// SnapshotHash is the protocol's reference definition of Snapshot.hash.
func SnapshotHash(s *pb.Snapshot) (string, error) { return snapshot.Hash(s) }
