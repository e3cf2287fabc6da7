package controlplane

import (
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/controlplane/snapshot"
	"github.com/trellismesh/trellis/internal/names"
	"github.com/trellismesh/trellis/internal/resource"
)

// Bounds on Hello fields: a registry entry must stay small (DESIGN.md:
// at most 0.5 MB of control plane memory per proxy).
const (
	maxInstanceLen     = 128
	maxProxyVersionLen = 128
	maxLabels          = 64
	maxLabelKeyLen     = 317 // a 253-byte DNS prefix, '/', a 63-byte name
	maxLabelValueLen   = 63
)

// workload is one proxy's workload as the registry and the snapshot
// builder see it (snapshot.Workload).
type workload = snapshot.Workload

// Application protocols a Hello may declare.
var protocols = []string{"http", "http2", "grpc", "tcp"}

// checkHello validates a Hello from a caller whose certificate names
// spiffeID in namespace certNS, and returns the workload it registers.
// Errors are gRPC statuses: InvalidArgument for a malformed Hello,
// PermissionDenied for a namespace the certificate does not name.
func checkHello(h *pb.Hello, spiffeID, certNS string) (workload, error) {
	bad := func(format string, args ...any) (workload, error) {
		return workload{}, status.Errorf(codes.InvalidArgument, "hello: "+format, args...)
	}
	if h.GetInstance() == "" {
		return bad("instance is required: a random value the proxy keeps until it exits")
	}
	if len(h.GetInstance()) > maxInstanceLen || hasSpaceOrControl(h.GetInstance()) {
		return bad("instance must be at most %d printable characters without spaces", maxInstanceLen)
	}
	if !names.IsDNSLabel(h.GetService()) {
		return bad("service %q %s", h.GetService(), names.DNSLabelRule)
	}
	ns := h.GetNamespace()
	if ns == "" {
		ns = resource.DefaultNamespace
	}
	if ns != certNS {
		return workload{}, status.Errorf(codes.PermissionDenied, "hello: namespace %q is not the namespace of the client certificate (%s); register in %q or get a certificate for %q", ns, spiffeID, certNS, ns)
	}
	proto := h.GetProtocol()
	if proto == "" {
		proto = "http"
	}
	if !slices.Contains(protocols, proto) {
		return bad("protocol %q must be one of %s", proto, strings.Join(protocols, ", "))
	}
	if a := h.GetAdvertiseAddr(); a != "" {
		if err := checkAdvertiseAddr(a); err != nil {
			return bad("advertise_addr %q: %v", a, err)
		}
	}
	if len(h.GetLabels()) > maxLabels {
		return bad("%d labels, more than the %d allowed", len(h.GetLabels()), maxLabels)
	}
	for k, v := range h.GetLabels() {
		if k == "" || len(k) > maxLabelKeyLen || hasSpaceOrControl(k) {
			return bad("label key %q must be 1 to %d printable characters without spaces", k, maxLabelKeyLen)
		}
		if len(v) > maxLabelValueLen || hasSpaceOrControl(v) {
			return bad("label %q: value must be at most %d printable characters without spaces", k, maxLabelValueLen)
		}
	}
	if len(h.GetProxyVersion()) > maxProxyVersionLen {
		return bad("proxy_version is longer than %d bytes", maxProxyVersionLen)
	}
	wants, err := wantedKeys("hello.services_wanted", h.GetServicesWanted())
	if err != nil {
		return workload{}, err
	}
	return workload{
		Wants:         wants,
		Instance:      h.GetInstance(),
		SPIFFEID:      spiffeID,
		Service:       h.GetService(),
		Namespace:     ns,
		AdvertiseAddr: h.GetAdvertiseAddr(),
		Protocol:      proto,
		Labels:        h.GetLabels(),
	}, nil
}

// checkAdvertiseAddr accepts a HOST:PORT other proxies can dial.
func checkAdvertiseAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("want HOST:PORT: %w", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q must be a number from 1 to 65535", port)
	}
	if host == "" {
		return fmt.Errorf("host is empty; advertise an address other proxies can dial")
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%s is not dialable; advertise this machine's address", host)
	}
	return nil
}

func hasSpaceOrControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) || r == unicode.ReplacementChar })
}
