package controlclient

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
)

// applyDelta builds the whole snapshot a SnapshotDelta describes on top of
// base (the snapshot the proxy runs), or says why it cannot: another base
// version, or a result whose hash is not the delta's. The control plane
// answers the NACK with the whole snapshot.
func applyDelta(base *pb.Snapshot, d *pb.SnapshotDelta) (*pb.Snapshot, error) {
	if base == nil {
		return nil, fmt.Errorf("delta %s on version %s, but no config is running; send the whole snapshot", d.GetVersion(), d.GetBaseVersion())
	}
	if base.GetVersion() != d.GetBaseVersion() {
		return nil, fmt.Errorf("delta %s on version %s, but version %s is running; send the whole snapshot", d.GetVersion(), d.GetBaseVersion(), base.GetVersion())
	}
	byKey := make(map[string]*pb.Service, len(base.GetServices())+len(d.GetServices()))
	for _, s := range base.GetServices() {
		byKey[s.GetName()+"."+s.GetNamespace()] = s
	}
	for _, k := range d.GetRemovedServices() {
		delete(byKey, k)
	}
	for _, s := range d.GetServices() {
		byKey[s.GetName()+"."+s.GetNamespace()] = s
	}
	// Every field but the services comes from base (by reflection, so a
	// field added to Snapshot is carried too).
	out := &pb.Snapshot{}
	or := out.ProtoReflect()
	base.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch fd.Name() {
		case "services", "version", "hash":
		default:
			or.Set(fd, v)
		}
		return true
	})
	out.Version, out.Hash = d.GetVersion(), d.GetHash()
	for _, s := range byKey {
		out.Services = append(out.Services, s)
	}
	slices.SortFunc(out.Services, func(a, b *pb.Service) int {
		return cmp.Or(cmp.Compare(a.GetNamespace(), b.GetNamespace()), cmp.Compare(a.GetName(), b.GetName()))
	})
	if h, err := contentHash(out); err != nil || h != d.GetHash() {
		return nil, fmt.Errorf("delta %s on version %s gives content with hash %.12s, not %.12s; send the whole snapshot", d.GetVersion(), d.GetBaseVersion(), h, d.GetHash())
	}
	return out, nil
}

// contentHash is Snapshot.hash as the protocol defines it: hex SHA-256 of
// the deterministic marshaling without version and hash.
func contentHash(s *pb.Snapshot) (string, error) {
	c := proto.CloneOf(s)
	c.Version, c.Hash = "", ""
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}
