package controlplane

import (
	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/resource"
)

// Internals the external tests drive directly.
type (
	Workload      = workload
	Policy        = policy
	SnapshotInput = snapshotInput
	MeshView      = meshView
	IdleService   = idleService
	ServiceKey    = serviceKey
)

// BuildSnapshot builds w's snapshot from in, as one push round does.
func BuildSnapshot(in SnapshotInput, w Workload) (*pb.Snapshot, error) {
	v, err := newMeshView(in)
	if err != nil {
		return nil, err
	}
	return buildSnapshot(v, &w)
}

// NewMeshView builds the part of snapshots all proxies share.
func NewMeshView(in SnapshotInput) (*MeshView, error) { return newMeshView(in) }

// BuildFromView builds one proxy's snapshot from a shared view.
func BuildFromView(v *MeshView, w Workload) (*pb.Snapshot, error) { return buildSnapshot(v, &w) }

// Consistent is the check a push round runs on a view before publishing
// any snapshot built from it.
func Consistent(v *MeshView) error { return v.consistent() }

// PolicyFromObject decodes a stored AuthorizationPolicy.
func PolicyFromObject(o *resource.Object) (Policy, error) { return policyFromObject(o) }

// Selects reports whether p selects w.
func Selects(p Policy, w Workload) bool { return selects(&p, &w) }

// SnapshotHash is the protocol's reference definition of Snapshot.hash.
func SnapshotHash(s *pb.Snapshot) (string, error) { return snapshotHash(s) }
