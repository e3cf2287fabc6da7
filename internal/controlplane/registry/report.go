package registry

import (
	"fmt"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
)

// Bounds on what a Report may carry: the registry keeps the last one per
// proxy, so one proxy must not be able to make it hold megabytes.
const (
	maxReportField = 128 // running_version, running_hash, cert_issuer, each trust root
	maxTrustRoots  = 32
)

// CheckReport validates a Report against the bounds above, before Report
// records it.
func CheckReport(r *pb.Report) error {
	for _, f := range []struct{ name, v string }{
		{"running_version", r.GetRunningVersion()}, {"running_hash", r.GetRunningHash()}, {"cert_issuer", r.GetCertIssuer()},
	} {
		if len(f.v) > maxReportField {
			return fmt.Errorf("%s is %d bytes; at most %d", f.name, len(f.v), maxReportField)
		}
	}
	if n := len(r.GetTrustRoots()); n > maxTrustRoots {
		return fmt.Errorf("trust_roots has %d entries; at most %d", n, maxTrustRoots)
	}
	for i, root := range r.GetTrustRoots() {
		if len(root) > maxReportField {
			return fmt.Errorf("trust_roots[%d] is %d bytes; at most %d (hex SHA-256)", i, len(root), maxReportField)
		}
	}
	if ts := r.GetCertNotAfter(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return fmt.Errorf("cert_not_after: %w", err)
		}
	}
	return nil
}
