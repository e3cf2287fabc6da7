package controlplane

import (
	"bytes"
	"slices"

	"google.golang.org/protobuf/proto"

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

// onlyServicesDiffer reports whether a and b differ in services alone.
func onlyServicesDiffer(a, b *pb.Snapshot) bool {
	return (a.Mesh == b.Mesh || proto.Equal(a.Mesh, b.Mesh)) &&
		slices.EqualFunc(a.TrustBundle, b.TrustBundle, bytes.Equal) &&
		slices.EqualFunc(a.Policies, b.Policies, bytes.Equal) &&
		a.ReportIntervalSeconds == b.ReportIntervalSeconds && a.Issuer == b.Issuer &&
		slices.EqualFunc(a.Peers, b.Peers, func(x, y *pb.PeerIdentity) bool { return proto.Equal(x, y) })
}
