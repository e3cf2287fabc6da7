package controlplane

import (
	"errors"
	"net/netip"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/controlplane/registry"
	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
	"github.com/trellismesh/trellis/internal/names"
)

// maxDiscoverEntries bounds one Discover message.
const maxDiscoverEntries = 64

// wantedKeys parses "name.namespace" entries (Hello.services_wanted,
// Discover.services) into sorted, distinct keys; field names the message
// field in errors.
func wantedKeys(field string, entries []string) ([]snapshot.ServiceKey, error) {
	if len(entries) > registry.MaxWants {
		return nil, status.Errorf(codes.InvalidArgument, "%s: %d entries, more than the %d allowed", field, len(entries), registry.MaxWants)
	}
	keys := make([]snapshot.ServiceKey, 0, len(entries))
	for _, e := range entries {
		name, ns, ok := strings.Cut(e, ".")
		if !ok || !names.IsDNSLabel(name) || !names.IsDNSLabel(ns) {
			return nil, status.Errorf(codes.InvalidArgument, "%s: %q is not SERVICE.NAMESPACE", field, e)
		}
		keys = append(keys, snapshot.ServiceKey{Namespace: ns, Name: name})
	}
	slices.SortFunc(keys, snapshot.CompareKeys)
	return slices.Compact(keys), nil
}

// discover adds what a Discover asks for to the proxy's scope and, when
// something is new, pushes its snapshot at once.
func (s *configServer) discover(instance string, ps *proxyStream, d *pb.Discover) error {
	if n := len(d.GetServices()) + len(d.GetVirtualIps()); n > maxDiscoverEntries {
		return status.Errorf(codes.InvalidArgument, "discover: %d entries, more than the %d allowed per message", n, maxDiscoverEntries)
	}
	keys, err := wantedKeys("discover.services", d.GetServices())
	if err != nil {
		return err
	}
	for _, v := range d.GetVirtualIps() {
		ip, err := netip.ParseAddr(v)
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "discover.virtual_ips: %q is not an IP address", v)
		}
		if k, ok := s.push.serviceByVIP(ip.Unmap().String()); ok {
			keys = append(keys, k)
		}
	}
	added, err := s.push.reg.Want(instance, ps, keys)
	if errors.Is(err, registry.ErrTooManyWants) {
		return status.Errorf(codes.ResourceExhausted, "discover: %v", err)
	}
	if added {
		s.metrics.discovered.Add(float64(len(keys)))
		s.push.kickWanted(instance)
	}
	return nil
}
