package controlplane

import (
	"slices"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
)

// maxDeltaVersions bounds the versions a stream remembers having sent as
// deltas (a NACK of one is answered with the whole snapshot).
const maxDeltaVersions = 8

// deltaSender decides, for one stream, whether a snapshot goes whole or as
// a SnapshotDelta on the one sent before it: a delta when the proxy
// accepts them and only services changed. Owned by the stream's send loop.
type deltaSender struct {
	enabled bool
	last    *pb.Snapshot // the last snapshot sent, whole or as a delta
	deltas  []string     // versions sent as deltas, newest last
}

// message returns what to send for snap.
func (d *deltaSender) message(snap *pb.Snapshot) *pb.ControlMessage {
	base := d.last
	d.last = snap
	if !d.enabled || base == nil || base.GetVersion() == snap.GetVersion() || !onlyServicesDiffer(base, snap) {
		return &pb.ControlMessage{Message: &pb.ControlMessage_Snapshot{Snapshot: snap}}
	}
	delta := &pb.SnapshotDelta{Version: snap.GetVersion(), Hash: snap.GetHash(), BaseVersion: base.GetVersion()}
	old := make(map[string]*pb.Service, len(base.GetServices()))
	for _, s := range base.GetServices() {
		old[s.GetName()+"."+s.GetNamespace()] = s
	}
	for _, s := range snap.GetServices() {
		k := s.GetName() + "." + s.GetNamespace()
		if o, ok := old[k]; !ok || (o != s && !proto.Equal(o, s)) {
			delta.Services = append(delta.Services, s)
		}
		delete(old, k)
	}
	for k := range old {
		delta.RemovedServices = append(delta.RemovedServices, k)
	}
	slices.Sort(delta.RemovedServices)
	d.deltas = append(d.deltas, snap.GetVersion())
	if len(d.deltas) > maxDeltaVersions {
		d.deltas = d.deltas[1:]
	}
	return &pb.ControlMessage{Message: &pb.ControlMessage_Delta{Delta: delta}}
}

// resync returns the whole snapshot to send after the proxy NACKed
// version: the last one sent, when that is the version and it went as a
// delta (the proxy could not apply it on what it runs). Nil otherwise: a
// NACK of a whole snapshot is the proxy refusing its content.
func (d *deltaSender) resync(version string) *pb.Snapshot {
	if d.last == nil || d.last.GetVersion() != version || !slices.Contains(d.deltas, version) {
		return nil
	}
	d.deltas = slices.DeleteFunc(d.deltas, func(v string) bool { return v == version })
	return d.last
}

// onlyServicesDiffer reports whether a and b differ in services alone:
// every other field of the snapshot (the mesh, trust, policies, and each
// per-workload list added since) compares equal. Fields are found by
// reflection, so a field added to Snapshot is never left out of deltas.
func onlyServicesDiffer(a, b *pb.Snapshot) bool {
	if a.Mesh != b.Mesh && !proto.Equal(a.Mesh, b.Mesh) {
		return false
	}
	ar, br := a.ProtoReflect(), b.ProtoReflect()
	fields := ar.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if !carried(fd) || fd.Name() == "mesh" {
			continue
		}
		if ar.Has(fd) != br.Has(fd) || ar.Has(fd) && !ar.Get(fd).Equal(br.Get(fd)) {
			return false
		}
	}
	return true
}

// carried reports whether a delta leaves the Snapshot field fd as the
// proxy runs it: everything but the services and the version and hash.
func carried(fd protoreflect.FieldDescriptor) bool {
	switch fd.Name() {
	case "services", "version", "hash":
		return false
	}
	return true
}
