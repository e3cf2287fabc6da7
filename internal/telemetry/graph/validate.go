package graph

import (
	"errors"
	"fmt"
	"math"
	"strings"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
)

// Limits on one report.
const (
	maxEdges   = 4096
	maxBounds  = 64
	maxNameLen = 63
	// maxBound (seconds, about 11 days) keeps latencies in milliseconds
	// and histogram sums finite.
	maxBound = 1e6
)

// unknownSource is the source service of callers the proxy cannot name;
// their namespace may be empty.
const unknownSource = "unknown"

// ErrInvalidStats is wrapped by Record's error for a report that breaks
// the rules of TrafficStats: a buggy or hostile proxy.
var ErrInvalidStats = errors.New("invalid traffic stats")

// validate checks st whole, before anything of it is stored.
func validate(st *pb.TrafficStats) error {
	if st == nil {
		return fmt.Errorf("%w: no stats", ErrInvalidStats)
	}
	if err := checkName("service", st.GetService()); err != nil {
		return err
	}
	if err := checkName("namespace", st.GetNamespace()); err != nil {
		return err
	}
	if cs := st.GetCountersSince(); cs != nil {
		if err := cs.CheckValid(); err != nil {
			return fmt.Errorf("%w: counters_since: %w", ErrInvalidStats, err)
		}
	}
	bounds := st.GetLatencyBoundsSeconds()
	if len(bounds) > maxBounds {
		return fmt.Errorf("%w: %d latency bounds; at most %d allowed", ErrInvalidStats, len(bounds), maxBounds)
	}
	for i, b := range bounds {
		if math.IsNaN(b) || b <= 0 || b > maxBound {
			return fmt.Errorf("%w: latency bound %d is %v; bounds must be above 0 and at most %g seconds", ErrInvalidStats, i, b, float64(maxBound))
		}
		if i > 0 && b <= bounds[i-1] {
			return fmt.Errorf("%w: latency bound %d (%v) does not exceed the one before (%v); bounds must ascend strictly", ErrInvalidStats, i, b, bounds[i-1])
		}
	}
	edges := st.GetEdges()
	if len(edges) > maxEdges {
		return fmt.Errorf("%w: %d edges; at most %d allowed per report", ErrInvalidStats, len(edges), maxEdges)
	}
	seen := make(map[edgeKey]struct{}, len(edges))
	for i, e := range edges {
		if err := checkEdge(e, len(bounds)); err != nil {
			return fmt.Errorf("%w: edge %d: %w", ErrInvalidStats, i, err)
		}
		k := keyOf(e)
		if _, dup := seen[k]; dup {
			return fmt.Errorf("%w: edge %d: %s appears twice", ErrInvalidStats, i, k)
		}
		seen[k] = struct{}{}
	}
	return nil
}

func checkEdge(e *pb.EdgeStats, bounds int) error {
	if e == nil {
		return errors.New("empty")
	}
	if err := checkEdgeName("source_service", e.GetSourceService()); err != nil {
		return err
	}
	if e.GetSourceService() != unknownSource || e.GetSourceNamespace() != "" {
		if err := checkEdgeName("source_namespace", e.GetSourceNamespace()); err != nil {
			return err
		}
	}
	if err := checkEdgeName("destination_service", e.GetDestinationService()); err != nil {
		return err
	}
	if err := checkEdgeName("destination_namespace", e.GetDestinationNamespace()); err != nil {
		return err
	}
	req := e.GetRequests()
	for _, c := range []struct {
		name string
		n    uint64
	}{{"failures", e.GetFailures()}, {"mtls_requests", e.GetMtlsRequests()}, {"denied", e.GetDenied()}} {
		if c.n > req {
			return fmt.Errorf("%s %d exceed requests %d", c.name, c.n, req)
		}
	}
	lat := e.GetLatencyCounts()
	if len(lat) != 0 && len(lat) != bounds+1 {
		return fmt.Errorf("%d latency counts for %d bounds; want %d (one per bound, then +Inf) or none", len(lat), bounds, bounds+1)
	}
	var sum uint64
	for _, n := range lat {
		if n > req-sum {
			return fmt.Errorf("latency counts add up to more than requests %d", req)
		}
		sum += n
	}
	return nil
}

func checkName(field, s string) error {
	if err := nameError(s); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalidStats, field, err)
	}
	return nil
}

func checkEdgeName(field, s string) error {
	if err := nameError(s); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	return nil
}

func nameError(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > maxNameLen {
		return fmt.Errorf("%d bytes; at most %d allowed", len(s), maxNameLen)
	}
	// Services and namespaces are DNS labels (the control plane issues
	// nothing else), which also keeps look-alike or reordering characters
	// out of `trellis top`.
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(s)-1
		if !ok {
			return fmt.Errorf("%q is not a DNS label (lowercase letters, digits and inner '-')", s)
		}
	}
	return nil
}

// CheckBinding keeps a proxy to its own traffic: the report's namespace
// is the one in the reporter's SPIFFE ID (spiffe://TD/ns/NS/sa/SA), and
// every edge ends at the report's service. Without it an authenticated
// proxy could invent traffic for any namespace. Within its namespace the
// service name is the proxy's word: the certificate names a service
// account, not a service, so a compromised workload can misreport its
// neighbours' traffic (never another namespace's, and never events). The
// collector calls it before Record; Record itself takes any reporter.
func CheckBinding(reporter string, st *pb.TrafficStats) error {
	ns := ""
	if rest, ok := strings.CutPrefix(reporter, "spiffe://"); ok {
		if _, path, ok := strings.Cut(rest, "/"); ok {
			if n, ok := strings.CutPrefix(path, "ns/"); ok {
				ns, _, _ = strings.Cut(n, "/")
			}
		}
	}
	if ns == "" {
		return fmt.Errorf("%w: reporter %q names no namespace (spiffe://TD/ns/NS/sa/SA); only workloads report traffic", ErrInvalidStats, reporter)
	}
	if ns != st.GetNamespace() {
		return fmt.Errorf("%w: namespace %q is not the reporter's namespace %q", ErrInvalidStats, st.GetNamespace(), ns)
	}
	for i, e := range st.GetEdges() {
		if e.GetDestinationService() != st.GetService() || e.GetDestinationNamespace() != st.GetNamespace() {
			return fmt.Errorf("%w: edge %d ends at %s.%s, not at the reporting service %s.%s", ErrInvalidStats, i,
				e.GetDestinationService(), e.GetDestinationNamespace(), st.GetService(), st.GetNamespace())
		}
	}
	return nil
}
