package proxy

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"sync/atomic"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
	"github.com/trellismesh/trellis/internal/meshconfig"
)

// reporter builds the Reports a proxy sends on its config stream: what it
// runs (the applied snapshot's version and hash), its certificate (expiry,
// and the issuing CA certificate's fingerprint) and the trust anchors it
// verifies peers with. Safe for concurrent use.
type reporter struct {
	snapshot func() *meshconfig.Snapshot
	cert     func() *tls.Certificate
	// bundle gives the roots from the certificate response, used until a
	// snapshot brings the mesh's trust bundle.
	bundle func() []*x509.Certificate
	// tamper, when set (tests only, see export_test), rewrites the running
	// hash reported, to simulate a proxy drifting from what it acked.
	tamper atomic.Pointer[func(string) string]
}

// report returns the proxy's current Report.
func (r *reporter) report() *pb.Report {
	rep := &pb.Report{}
	roots := r.bundle()
	if s := r.snapshot(); s != nil {
		rep.RunningVersion, rep.RunningHash = s.Version, s.Hash
		roots = s.Roots
	}
	if f := r.tamper.Load(); f != nil {
		rep.RunningHash = (*f)(rep.RunningHash)
	}
	if c := r.cert(); c != nil {
		if c.Leaf != nil {
			rep.CertNotAfter = timestamppb.New(c.Leaf.NotAfter)
		}
		rep.CertIssuer = reportIssuer(c)
	}
	for _, root := range roots {
		rep.TrustRoots = append(rep.TrustRoots, reportDigest(root.Raw))
	}
	return rep
}

// reportIssuer is the hex SHA-256 of the DER of the CA certificate that
// issued c: the first intermediate of its chain (what Certify returns), or
// "" when the chain holds only the leaf.
func reportIssuer(c *tls.Certificate) string {
	if len(c.Certificate) < 2 {
		return ""
	}
	return reportDigest(c.Certificate[1])
}

// reportDigest is the hex SHA-256 of DER bytes, the form Reports and
// Snapshot.issuer use.
func reportDigest(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}
