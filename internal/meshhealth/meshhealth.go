package meshhealth

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/resource"
)

// Level is how bad a finding is.
type Level string

// Levels, in increasing severity.
const (
	OK   Level = "OK"
	Warn Level = "WARN"
	Fail Level = "FAIL"
)

func (l Level) severity() int {
	switch l {
	case Fail:
		return 2
	case Warn:
		return 1
	}
	return 0
}

// Thresholds of the findings.
const (
	CAWarnBefore   = 30 * 24 * time.Hour // a root or the intermediate expiring sooner is a WARN
	CAFailBefore   = 7 * 24 * time.Hour  // and sooner still a FAIL
	LeafWarnBefore = 10 * time.Minute    // a renewal should have happened long before
)

// Finding is one result of a check. Its JSON form is part of `trellis
// check -o json`.
type Finding struct {
	Level   Level  `json:"level"`
	Check   string `json:"check"` // control-plane, ca, proxies, certificates or policies; with --kubernetes: kubernetes, crds, webhooks, rbac, replicas
	Subject string `json:"subject,omitempty"`
	Message string `json:"message"`
}

// Report is every finding, worst first, and the worst level. Its JSON form
// is the output of `trellis check -o json`.
type Report struct {
	Worst    Level     `json:"worst"`
	Findings []Finding `json:"findings"`
}

// Source is what Run reads: a control plane's admin API, as
// *adminapi.Client serves it. An unreachable control plane is an error
// that matches adminapi.ErrUnreachable.
type Source interface {
	Ready(ctx context.Context) error
	CAStatus(ctx context.Context) (adminapi.CAStatus, error)
	ListProxies(ctx context.Context, namespace string) ([]adminapi.ProxyInfo, error)
	List(ctx context.Context, kind resource.KindInfo, namespace string) ([]resource.Object, error)
}

// Run gathers every finding about the mesh behind src at now; api, the
// control plane's address, is the subject of its findings. A control plane
// that cannot be reached is an error; anything it answers, failures
// included, becomes findings.
func Run(ctx context.Context, src Source, api string, now time.Time) (Report, error) {
	var fs []Finding
	add := func(level Level, check, subject, format string, args ...any) {
		fs = append(fs, Finding{Level: level, Check: check, Subject: subject, Message: fmt.Sprintf(format, args...)})
	}

	if err := src.Ready(ctx); err != nil {
		if errors.Is(err, adminapi.ErrUnreachable) {
			return Report{}, err
		}
		add(Fail, "control-plane", api, "not ready: %v", err)
	} else {
		add(OK, "control-plane", api, "ready (store and CA)")
	}

	if ca, err := src.CAStatus(ctx); err != nil {
		add(Fail, "ca", "", "cannot read the CA status: %v", err)
	} else {
		expiry := func(what string, notAfter time.Time) {
			left := notAfter.Sub(now)
			switch {
			case left < CAFailBefore:
				add(Fail, "ca", what, "expires %s (%s left); rotate now: trellis ca rotate", notAfter.UTC().Format(time.RFC3339), humanDuration(left))
			case left < CAWarnBefore:
				add(Warn, "ca", what, "expires %s (%s left); plan a rotation: trellis ca rotate", notAfter.UTC().Format(time.RFC3339), humanDuration(left))
			default:
				add(OK, "ca", what, "valid until %s", notAfter.UTC().Format(time.RFC3339))
			}
		}
		expiry("intermediate "+ca.Issuer.Subject, ca.Issuer.NotAfter)
		for _, r := range ca.Roots {
			expiry("root "+r.Subject, r.NotAfter)
		}
		if ca.Rotating {
			add(Warn, "ca", "rotation", "a rotation is in progress (%d roots); %d of %d connected proxies done; finish with trellis ca retire-old",
				len(ca.Roots), ca.Proxies.Done, ca.Proxies.Connected)
		}
	}

	proxies, err := src.ListProxies(ctx, "")
	if err != nil {
		add(Fail, "proxies", "", "cannot list proxies: %v", err)
	} else {
		checkProxies(proxies, now, add)
	}

	pols, err := listPolicies(ctx, src)
	if err != nil {
		add(Fail, "policies", "", "cannot list policies: %v", err)
	} else if proxies != nil {
		checkPolicies(pols, proxies, add)
	}

	return NewReport(fs), nil
}

// NewReport orders findings worst first (stable) and names the worst
// level; other checks (trellis check --kubernetes) report through it too.
func NewReport(fs []Finding) Report {
	slices.SortStableFunc(fs, func(a, b Finding) int { return cmp.Compare(b.Level.severity(), a.Level.severity()) })
	rep := Report{Worst: OK, Findings: fs}
	for _, f := range fs {
		if f.Level.severity() > rep.Worst.severity() {
			rep.Worst = f.Level
		}
	}
	return rep
}

// addFunc records one finding.
type addFunc func(level Level, check, subject, format string, args ...any)

func checkProxies(proxies []adminapi.ProxyInfo, now time.Time, add addFunc) {
	synced := 0
	for _, p := range proxies {
		subject := p.Service + "." + p.Namespace + "/" + p.Instance
		switch p.State {
		case adminapi.ProxySynced:
			synced++
		case adminapi.ProxySyncing:
			add(Warn, "proxies", subject, "SYNCING: a new config was sent and is not acknowledged yet")
		case adminapi.ProxyNacked:
			add(Fail, "proxies", subject, "NACKED: the proxy rejected its config: %s", p.Error)
		case adminapi.ProxyRestored:
			add(Warn, "proxies", subject, "RESTORED: known from before the control plane restarted, awaiting its proxy's reconnect (proxies retry every few seconds; one that does not return leaves after the restore grace period)")
		default:
			msg := p.State
			if p.Since != nil {
				msg += " since " + p.Since.UTC().Format(time.RFC3339)
			}
			add(Fail, "proxies", subject, "%s; see trellis status %s", msg, p.Instance)
		}
		if p.CertExpiry != nil {
			switch left := p.CertExpiry.Sub(now); {
			case left <= 0:
				add(Fail, "certificates", subject, "workload certificate expired %s ago; the proxy cannot renew: is the control plane reachable from it?", humanDuration(-left))
			case left < LeafWarnBefore:
				add(Warn, "certificates", subject, "workload certificate expires in %s and was not renewed", humanDuration(left))
			}
		}
	}
	add(OK, "proxies", "", "%d of %d proxies SYNCED", synced, len(proxies))
}

func checkPolicies(pols []resource.Object, proxies []adminapi.ProxyInfo, add addFunc) {
	idle := 0
	for _, o := range pols {
		spec, err := resource.AuthorizationPolicySpecOf(&o)
		if err != nil {
			add(Fail, "policies", o.Ref(), "unreadable: %v", err)
			continue
		}
		selected := false
		for _, p := range proxies {
			if policy.Selects(o.Metadata.Namespace, spec.Selector, &policy.Workload{Namespace: p.Namespace, Service: p.Service, Labels: p.Labels}) {
				selected = true
				break
			}
		}
		if !selected {
			idle++
			add(Warn, "policies", o.Ref(), "selects no registered workload (a typo in selector.service or matchLabels, or the workload is not running)")
		}
	}
	if idle == 0 {
		add(OK, "policies", "", "all %d policies select a workload", len(pols))
	}
}

func listPolicies(ctx context.Context, src Source) ([]resource.Object, error) {
	kind, ok := resource.LookupKind(resource.KindAuthorizationPolicy)
	if !ok {
		return nil, fmt.Errorf("unknown kind %s", resource.KindAuthorizationPolicy)
	}
	return src.List(ctx, kind, "")
}

// humanDuration is d rounded for people: 3d4h, 5h2m, 42s.
func humanDuration(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		days := d / (24 * time.Hour)
		return fmt.Sprintf("%dd%dh", days, (d-days*24*time.Hour)/time.Hour)
	case d >= time.Hour:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	default:
		return d.Round(time.Second).String()
	}
}
