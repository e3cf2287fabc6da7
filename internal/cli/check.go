package cli

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/resource"
)

// Exit codes of `trellis check` beyond the common ones: the worst finding.
const (
	ExitCheckWarn = 3
	ExitCheckFail = 4
)

// Finding levels, in increasing severity.
const (
	levelOK   = "OK"
	levelWarn = "WARN"
	levelFail = "FAIL"
)

// Thresholds of `trellis check`.
const (
	caWarnBefore   = 30 * 24 * time.Hour
	caFailBefore   = 7 * 24 * time.Hour
	leafWarnBefore = 10 * time.Minute // a renewal should have happened long before
)

// finding is one result of `trellis check`.
type finding struct {
	Level   string `json:"level"`
	Check   string `json:"check"`
	Subject string `json:"subject,omitempty"`
	Message string `json:"message"`
}

// checkReport is `trellis check -o json`.
type checkReport struct {
	Worst    string    `json:"worst"`
	Findings []finding `json:"findings"`
}

func newCheckCmd(g *globals) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check the mesh: control plane, store, CA expiry, proxy sync and certificates, policies that select nothing",
		Long: `Check the mesh and report every finding as OK, WARN or FAIL:

  control-plane  the admin API answers and /readyz (store, CA) is ready
  ca             roots and the signing intermediate: WARN under 30 days left, FAIL under 7
  proxies        every proxy SYNCED; STALE, NACKED, DRIFTED or DISCONNECTED is a FAIL,
                 SYNCING a WARN
  certificates   proxies' workload certificates: FAIL when expired, WARN within 10 minutes
  policies       AuthorizationPolicies that select no registered workload: WARN

Exit code: 0 when all is OK, 3 when the worst finding is a WARN, 4 for a FAIL
(2 when the control plane cannot be reached). -o json for scripts.`,
		Args: cobra.NoArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return userError("-o %q: want table or json", output)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			rep, err := runChecks(cmd.Context(), c, time.Now())
			if err != nil {
				return err
			}
			if err := printCheckReport(cmd.OutOrStdout(), rep, output); err != nil {
				return err
			}
			switch rep.Worst {
			case levelFail:
				return &exitError{code: ExitCheckFail, err: errors.New("check: failures found (see above)")}
			case levelWarn:
				return &exitError{code: ExitCheckWarn, err: errors.New("check: warnings found (see above)")}
			}
			return nil
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

// runChecks gathers every finding. An unreachable control plane is an
// error (exit 2); anything the control plane answers becomes findings.
func runChecks(ctx context.Context, c *adminapi.Client, now time.Time) (checkReport, error) {
	var fs []finding
	add := func(level, check, subject, format string, args ...any) {
		fs = append(fs, finding{Level: level, Check: check, Subject: subject, Message: fmt.Sprintf(format, args...)})
	}

	if err := c.Ready(ctx); err != nil {
		if errors.Is(err, adminapi.ErrUnreachable) {
			return checkReport{}, err
		}
		add(levelFail, "control-plane", c.BaseURL, "not ready: %v", err)
	} else {
		add(levelOK, "control-plane", c.BaseURL, "ready (store and CA)")
	}

	if ca, err := c.CAStatus(ctx); err != nil {
		add(levelFail, "ca", "", "cannot read the CA status: %v", err)
	} else {
		expiry := func(what string, notAfter time.Time) {
			left := notAfter.Sub(now)
			switch {
			case left < caFailBefore:
				add(levelFail, "ca", what, "expires %s (%s left); rotate now: trellis ca rotate", notAfter.UTC().Format(time.RFC3339), humanDuration(left))
			case left < caWarnBefore:
				add(levelWarn, "ca", what, "expires %s (%s left); plan a rotation: trellis ca rotate", notAfter.UTC().Format(time.RFC3339), humanDuration(left))
			default:
				add(levelOK, "ca", what, "valid until %s", notAfter.UTC().Format(time.RFC3339))
			}
		}
		expiry("intermediate "+ca.Issuer.Subject, ca.Issuer.NotAfter)
		for _, r := range ca.Roots {
			expiry("root "+r.Subject, r.NotAfter)
		}
		if ca.Rotating {
			add(levelWarn, "ca", "rotation", "a rotation is in progress (%d roots); %d of %d connected proxies done; finish with trellis ca retire-old",
				len(ca.Roots), ca.Proxies.Done, ca.Proxies.Connected)
		}
	}

	proxies, err := c.ListProxies(ctx, "")
	if err != nil {
		add(levelFail, "proxies", "", "cannot list proxies: %v", err)
	} else {
		checkProxies(proxies, now, add)
	}

	pols, err := listPolicies(ctx, c)
	if err != nil {
		add(levelFail, "policies", "", "cannot list policies: %v", err)
	} else if proxies != nil {
		checkPolicies(pols, proxies, add)
	}

	slices.SortStableFunc(fs, func(a, b finding) int { return cmp.Compare(severity(b.Level), severity(a.Level)) })
	rep := checkReport{Worst: levelOK, Findings: fs}
	for _, f := range fs {
		if severity(f.Level) > severity(rep.Worst) {
			rep.Worst = f.Level
		}
	}
	return rep, nil
}

func checkProxies(proxies []adminapi.ProxyInfo, now time.Time, add func(level, check, subject, format string, args ...any)) {
	synced := 0
	for _, p := range proxies {
		subject := p.Service + "." + p.Namespace + "/" + p.Instance
		switch p.State {
		case adminapi.ProxySynced:
			synced++
		case adminapi.ProxySyncing:
			add(levelWarn, "proxies", subject, "SYNCING: a new config was sent and is not acknowledged yet")
		case adminapi.ProxyNacked:
			add(levelFail, "proxies", subject, "NACKED: the proxy rejected its config: %s", p.Error)
		case adminapi.ProxyRestored:
			add(levelWarn, "proxies", subject, "RESTORED: known from before the control plane restarted, awaiting its proxy's reconnect (proxies retry every few seconds; one that does not return leaves after the restore grace period)")
		default:
			msg := p.State
			if p.Since != nil {
				msg += " since " + p.Since.UTC().Format(time.RFC3339)
			}
			add(levelFail, "proxies", subject, "%s; see trellis status %s", msg, p.Instance)
		}
		if p.CertExpiry != nil {
			switch left := p.CertExpiry.Sub(now); {
			case left <= 0:
				add(levelFail, "certificates", subject, "workload certificate expired %s ago; the proxy cannot renew: is the control plane reachable from it?", humanDuration(-left))
			case left < leafWarnBefore:
				add(levelWarn, "certificates", subject, "workload certificate expires in %s and was not renewed", humanDuration(left))
			}
		}
	}
	add(levelOK, "proxies", "", "%d of %d proxies SYNCED", synced, len(proxies))
}

func checkPolicies(pols []resource.Object, proxies []adminapi.ProxyInfo, add func(level, check, subject, format string, args ...any)) {
	idle := 0
	for _, o := range pols {
		spec, err := resource.AuthorizationPolicySpecOf(&o)
		if err != nil {
			add(levelFail, "policies", o.Ref(), "unreadable: %v", err)
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
			add(levelWarn, "policies", o.Ref(), "selects no registered workload (a typo in selector.service or matchLabels, or the workload is not running)")
		}
	}
	if idle == 0 {
		add(levelOK, "policies", "", "all %d policies select a workload", len(pols))
	}
}

func listPolicies(ctx context.Context, c *adminapi.Client) ([]resource.Object, error) {
	kind, ok := resource.LookupKind(resource.KindAuthorizationPolicy)
	if !ok {
		return nil, fmt.Errorf("unknown kind %s", resource.KindAuthorizationPolicy)
	}
	return c.List(ctx, kind, "")
}

func severity(level string) int {
	switch level {
	case levelFail:
		return 2
	case levelWarn:
		return 1
	}
	return 0
}

func printCheckReport(out io.Writer, rep checkReport, output string) error {
	if output == "json" {
		data, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(out, "%s\n", data)
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "LEVEL\tCHECK\tSUBJECT\tMESSAGE")
	for _, f := range rep.Findings {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Level, f.Check, orDash(f.Subject), f.Message)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(out, "\nWorst: %s\n", rep.Worst)
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
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
