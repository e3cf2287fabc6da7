package analysis

import (
	"time"

	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/resource"
)

// LintReport is what Lint or LintChanges found.
type LintReport struct {
	// Findings are those reported, in policy.Lint's order.
	Findings []policy.Finding
	// Hidden counts the findings LintChanges left out: those among the
	// mesh's unchanged policies alone.
	Hidden int
	// Linted is the number of policies linted: Changed of the changes
	// and Unchanged of the mesh's.
	Linted, Changed, Unchanged int
}

// Lint lints m's policies with policy.Lint: every finding is reported. The
// no-workload check runs against m's registered proxies and services, and
// is skipped while none is registered.
func Lint(m *Mesh, now time.Time, trustDomain string) LintReport {
	return lint(nil, m, false, now, trustDomain)
}

// LintChanges lints changes (objects of other kinds are skipped) as they
// would be in m: each replaces m's policy of the same namespace and name
// or joins m's policies, so that a change shadowed by a policy of m is
// found. Only findings that involve a change, as the finding's policy or
// as the other one, are reported. With m nil the changes are linted alone,
// without the no-workload check.
func LintChanges(changes []resource.Object, m *Mesh, now time.Time, trustDomain string) LintReport {
	return lint(changes, m, true, now, trustDomain)
}

func lint(changes []resource.Object, m *Mesh, withChanges bool, now time.Time, trustDomain string) LintReport {
	var rep LintReport
	var changed map[string]bool // namespace/name of the changes; nil without
	var policies []resource.Object
	if withChanges {
		changed = map[string]bool{}
	}
	for _, o := range changes {
		if o.Kind != resource.KindAuthorizationPolicy {
			continue
		}
		changed[o.Metadata.Namespace+"/"+o.Metadata.Name] = true
		policies = append(policies, o)
		rep.Changed++
	}
	if m != nil {
		for _, o := range m.Policies {
			if !changed[o.Metadata.Namespace+"/"+o.Metadata.Name] {
				policies = append(policies, o)
				rep.Unchanged++
			}
		}
	}
	rep.Linted = len(policies)
	for _, f := range policy.Lint(policies, knownWorkloads(m), now, trustDomain) {
		if changed == nil || changed[f.Policy] || changed[f.OtherPolicy] {
			rep.Findings = append(rep.Findings, f)
		} else {
			rep.Hidden++
		}
	}
	return rep
}
