package snapshot

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/trellismesh/trellis/api/trellis/v1alpha1"
)

// renderSnapshot renders a snapshot as indented JSON for people: protojson
// field names, policies as the JSON objects they are (not base64), and
// trust anchors by SHA-256 (as proxies report them), subject and expiry
// instead of DER. Keys are sorted, so equal content renders equally and a
// line diff of two renderings shows what changed.
func Render(s *pb.Snapshot) (json.RawMessage, error) {
	// A new message sharing s's fields (never modified): policies and the
	// trust bundle are rendered separately.
	rest := &pb.Snapshot{
		Version:               s.GetVersion(),
		Hash:                  s.GetHash(),
		Mesh:                  s.GetMesh(),
		Services:              s.GetServices(),
		ReportIntervalSeconds: s.GetReportIntervalSeconds(),
		Issuer:                s.GetIssuer(),
	}
	b, err := protojson.Marshal(rest)
	if err != nil {
		return nil, fmt.Errorf("render snapshot %s: %w", s.GetVersion(), err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("render snapshot %s: %w", s.GetVersion(), err)
	}
	type anchor struct {
		SHA256   string    `json:"sha256"`
		Subject  string    `json:"subject,omitempty"`
		NotAfter time.Time `json:"notAfter,omitzero"`
		Error    string    `json:"error,omitempty"`
	}
	roots := make([]anchor, 0, len(s.GetTrustBundle()))
	for _, der := range s.GetTrustBundle() {
		sum := sha256.Sum256(der)
		a := anchor{SHA256: hex.EncodeToString(sum[:])}
		if c, err := x509.ParseCertificate(der); err != nil {
			a.Error = err.Error()
		} else {
			a.Subject, a.NotAfter = c.Subject.String(), c.NotAfter.UTC()
		}
		roots = append(roots, a)
	}
	m["trustBundle"] = roots
	policies := make([]any, 0, len(s.GetPolicies()))
	for _, p := range s.GetPolicies() {
		if json.Valid(p) {
			policies = append(policies, json.RawMessage(p))
		} else {
			policies = append(policies, string(p))
		}
	}
	m["policies"] = policies
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render snapshot %s: %w", s.GetVersion(), err)
	}
	return out, nil
}
