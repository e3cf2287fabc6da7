package cli

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/adminapi"
)

func newStatusCmd(g *globals) *cobra.Command {
	var namespace, output string
	var all bool
	cmd := &cobra.Command{
		Use:   "status [PROXY] [-n NS | -A] [-o table|json]",
		Short: "Show every proxy's config sync state, or one proxy's with its config diff",
		Long: `Show what the control plane knows of each proxy: its state, the snapshot
version it should run (DESIRED), the last one it acknowledged (ACKED), what it
reports running (RUNNING), and when its certificate expires.

States: SYNCED (runs what it should), SYNCING (a snapshot is on its way),
STALE (a snapshot went unanswered past the control plane's ack timeout),
NACKED (the proxy rejected the snapshot and keeps its last good config),
DRIFTED (it acknowledged a snapshot but reports running something else; the
control plane re-sends it), DISCONNECTED (its stream is down; it stays an
endpoint for the grace period), RESTORED (known from before the control
plane restarted and awaiting its proxy's reconnect; it stays an endpoint
meanwhile, for at most the restore grace period).

PROXY is an instance ID (or a unique prefix of one), or SERVICE.NAMESPACE when
that service has one instance: status then shows the proxy in detail with the
diff between the config it acknowledged and the one it should run.

Without -n, proxies of every namespace are listed. status exits 0 whatever
the proxies' states; ` + "`trellis check`" + ` judges them.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return userError("status: want at most one PROXY (an instance ID, a prefix of one, or SERVICE.NAMESPACE), got %d arguments", len(args))
			}
			return nil
		},
		RunE: runE(func(cmd *cobra.Command, args []string) error {
			if output != "table" && output != "json" {
				return userError("status: -o %q: use table or json", output)
			}
			if all && cmd.Flags().Changed("namespace") {
				return userError("status: -n and -A exclude each other")
			}
			ns := ""
			if cmd.Flags().Changed("namespace") {
				ns = namespace
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			list, err := c.ListProxies(cmd.Context(), ns)
			if err != nil {
				return fmt.Errorf("status: %w", err)
			}
			out := cmd.OutOrStdout()
			if len(args) == 0 {
				return printProxyList(out, cmd.ErrOrStderr(), list, output, ns)
			}
			instance, err := pickProxy(list, args[0], ns)
			if err != nil {
				return err
			}
			st, err := c.GetProxy(cmd.Context(), instance)
			if err != nil {
				return fmt.Errorf("status: %w", err)
			}
			if output == "json" {
				return writeIndentedJSON(out, st)
			}
			return printProxyStatus(out, st)
		}),
	}
	f := cmd.Flags()
	f.StringVarP(&namespace, "namespace", "n", "", "only proxies of this namespace (default: all)")
	f.BoolVarP(&all, "all-namespaces", "A", false, "proxies of every namespace (the default)")
	f.StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// pickProxy resolves PROXY against the listed proxies: an exact instance
// ID, else SERVICE.NAMESPACE with exactly one instance, else a unique
// instance prefix.
func pickProxy(list []adminapi.ProxyInfo, arg, namespace string) (string, error) {
	for _, p := range list {
		if p.Instance == arg {
			return p.Instance, nil
		}
	}
	if svc, ns, ok := strings.Cut(arg, "."); ok {
		var ids []string
		for _, p := range list {
			if p.Service == svc && p.Namespace == ns {
				ids = append(ids, p.Instance)
			}
		}
		switch {
		case len(ids) == 1:
			return ids[0], nil
		case len(ids) > 1:
			return "", userError("status: %s has %d instances (%s); name one", arg, len(ids), strings.Join(ids, ", "))
		}
	}
	var ids []string
	for _, p := range list {
		if strings.HasPrefix(p.Instance, arg) {
			ids = append(ids, p.Instance)
		}
	}
	switch {
	case len(ids) == 1:
		return ids[0], nil
	case len(ids) > 1:
		return "", userError("status: %q is a prefix of %d instances (%s); give more of the ID", arg, len(ids), strings.Join(ids, ", "))
	case namespace != "":
		return "", userError("status: no proxy in namespace %s matches %q (an instance ID, a prefix of one, or SERVICE.NAMESPACE); `trellis status -n %s` lists them", namespace, arg, namespace)
	default:
		return "", userError("status: no proxy matches %q (an instance ID, a prefix of one, or SERVICE.NAMESPACE); `trellis status` lists them", arg)
	}
}

func printProxyList(out, errOut io.Writer, list []adminapi.ProxyInfo, output, namespace string) error {
	if output == "json" {
		if list == nil {
			list = []adminapi.ProxyInfo{}
		}
		return writeIndentedJSON(out, adminapi.ProxyListResponse{Items: list})
	}
	if len(list) == 0 {
		if namespace != "" {
			fmt.Fprintf(errOut, "No proxies registered in namespace %s.\n", namespace)
		} else {
			fmt.Fprintln(errOut, "No proxies registered.")
		}
		return nil
	}
	now := time.Now()
	tw := tabwriter.NewWriter(out, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tSERVICE\tINSTANCE\tADDRESS\tSTATE\tDESIRED\tACKED\tRUNNING\tCERT-EXPIRES\tAGE")
	for _, p := range list {
		fmt.Fprintln(tw, strings.Join([]string{p.Namespace, p.Service, p.Instance, orNone(p.AdvertiseAddr), stateCell(p, now),
			versionOf(p.Desired), versionOf(p.Acked), versionOf(p.Running), expiresCell(p.CertExpiry, now), age(&p.ConnectedAt)}, "\t"))
	}
	return tw.Flush()
}

// maxErrorCell bounds a NACK error in the table; the detail view and JSON
// show it whole.
const maxErrorCell = 60

// stateCell is the STATE column: the NACK error, or how long a state other
// than SYNCED has held.
func stateCell(p adminapi.ProxyInfo, now time.Time) string {
	switch {
	case p.State == adminapi.ProxyNacked:
		e := strings.Join(strings.Fields(p.Error), " ")
		if r := []rune(e); len(r) > maxErrorCell {
			e = string(r[:maxErrorCell-1]) + "…"
		}
		return p.State + ": " + e
	case p.State == adminapi.ProxySynced || p.Since == nil:
		return p.State
	default:
		return p.State + " for " + shortDuration(now.Sub(*p.Since))
	}
}

// expiresCell is the CERT-EXPIRES column.
func expiresCell(t *time.Time, now time.Time) string {
	switch {
	case t == nil:
		return "-"
	case t.After(now):
		return "in " + shortDuration(t.Sub(now))
	default:
		return "expired " + shortDuration(now.Sub(*t)) + " ago"
	}
}

// shortDuration renders d in one unit, rounded down, as AGE columns do.
func shortDuration(d time.Duration) string {
	d = max(d, 0)
	switch {
	case d < 2*time.Minute:
		return strconv.Itoa(int(d.Seconds())) + "s"
	case d < 2*time.Hour:
		return strconv.Itoa(int(d.Minutes())) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d.Hours())) + "h"
	default:
		return strconv.Itoa(int(d.Hours()/24)) + "d"
	}
}

// printProxyStatus prints one proxy in detail, then its config diff.
func printProxyStatus(out io.Writer, st adminapi.ProxyStatus) error {
	now := time.Now()
	p := st.ProxyInfo
	when := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		rel := shortDuration(now.Sub(t)) + " ago"
		if t.After(now) {
			rel = "in " + shortDuration(t.Sub(now))
		}
		return t.UTC().Format(time.RFC3339) + " (" + rel + ")"
	}
	version := func(v *adminapi.ConfigVersion, verb string) string {
		if v == nil {
			return "-"
		}
		return fmt.Sprintf("%s (hash %s, %s %s)", v.Version, shortHash(v.Hash), verb, when(v.At))
	}
	var b strings.Builder
	row := func(k, v string) { fmt.Fprintf(&b, "%-15s %s\n", k+":", v) }
	row("Instance", p.Instance)
	row("Service", p.Service+"."+p.Namespace)
	row("Identity", p.SPIFFEID)
	row("Address", orNone(p.AdvertiseAddr))
	row("Protocol", p.Protocol)
	if len(p.Labels) > 0 {
		var ls []string
		for _, k := range slices.Sorted(maps.Keys(p.Labels)) {
			ls = append(ls, k+"="+p.Labels[k])
		}
		row("Labels", strings.Join(ls, ","))
	}
	row("Proxy version", cmp.Or(p.ProxyVersion, "-"))
	switch {
	case p.Connected:
		row("Connected", "since "+when(p.ConnectedAt))
	case p.State == adminapi.ProxyRestored:
		row("Connected", "no, awaiting reconnect (restored "+when(derefTime(p.DisconnectedAt))+" from before the control plane restarted)")
	default:
		row("Connected", "no, stream down since "+when(derefTime(p.DisconnectedAt)))
	}
	state := p.State
	if p.Since != nil {
		state += " since " + when(*p.Since)
	}
	row("State", state)
	if p.State == adminapi.ProxyNacked {
		row("Error", p.Error)
	}
	row("Desired", version(p.Desired, "sent"))
	row("Acked", version(p.Acked, "acknowledged"))
	row("Running", version(p.Running, "reported"))
	if n := p.LastNack; n != nil {
		row("Last NACK", fmt.Sprintf("version %s at %s: %s", n.Version, when(n.At), n.Error))
	}
	cert := "not reported yet"
	if p.CertExpiry != nil {
		cert = "expires " + when(*p.CertExpiry) + ", issuer " + cmp.Or(shortHash(p.CertIssuer), "-")
	}
	row("Certificate", cert)
	roots := "-"
	if len(p.TrustRoots) > 0 {
		var rs []string
		for _, r := range p.TrustRoots {
			rs = append(rs, shortHash(r))
		}
		roots = strings.Join(rs, ", ")
	}
	row("Trust roots", roots)
	repairs := strconv.Itoa(p.DriftRepairs)
	if p.LastDriftRepair != nil {
		repairs += ", last " + when(*p.LastDriftRepair)
	}
	row("Drift repairs", repairs)
	b.WriteString("\n")
	switch {
	case st.Diff != "":
		b.WriteString("Config diff (acknowledged -> desired):\n")
		b.WriteString(st.Diff)
	case st.Note != "":
		b.WriteString("Config: " + st.Note + ".\n")
	default:
		b.WriteString(fmt.Sprintf("Config: the acknowledged config is the desired one (hash %s).\n", shortHash(p.Desired.Hash)))
	}
	_, err := io.WriteString(out, b.String())
	return err
}

func derefTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// shortHash abbreviates a hex digest for people, as git does.
func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func writeIndentedJSON(out io.Writer, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%s\n", data)
	return err
}
