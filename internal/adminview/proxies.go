package adminview

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
)

// WriteProxies writes the table of `trellis status`: one row per proxy with
// its state, config versions, certificate expiry and age at now.
func WriteProxies(w io.Writer, list []adminapi.ProxyInfo, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tSERVICE\tINSTANCE\tADDRESS\tSTATE\tDESIRED\tACKED\tRUNNING\tCERT-EXPIRES\tAGE")
	for _, p := range list {
		fmt.Fprintln(tw, strings.Join([]string{p.Namespace, p.Service, p.Instance, orNone(p.AdvertiseAddr), stateCell(p, now),
			versionOf(p.Desired), versionOf(p.Acked), versionOf(p.Running), expiresCell(p.CertExpiry, now), age(&p.ConnectedAt, now)}, "\t"))
	}
	return tw.Flush()
}

// WriteWorkloads writes the table of `trellis get workloads`.
func WriteWorkloads(w io.Writer, list []adminapi.ProxyInfo, now time.Time) error {
	var rows [][]string
	for _, p := range list {
		state := p.State
		if p.Error != "" {
			state += ": " + p.Error
		}
		rows = append(rows, []string{p.Namespace, p.Service, p.Instance, orNone(p.AdvertiseAddr), state, versionOf(p.Desired), versionOf(p.Acked), age(&p.ConnectedAt, now)})
	}
	return writeRegistry(w, "workloads", []string{"NAMESPACE", "SERVICE", "INSTANCE", "ADDRESS", "STATE", "DESIRED", "ACKED", "AGE"}, rows)
}

// WriteServices writes the table of `trellis get services`.
func WriteServices(w io.Writer, list []adminapi.ServiceInfo) error {
	var rows [][]string
	for _, s := range list {
		rows = append(rows, []string{s.Namespace, s.Name, s.Protocol, orNone(s.VirtualIP), strconv.Itoa(s.Endpoints), strconv.Itoa(s.Instances), strconv.Itoa(s.Connected)})
	}
	return writeRegistry(w, "services", []string{"NAMESPACE", "NAME", "PROTOCOL", "VIRTUAL-IP", "ENDPOINTS", "INSTANCES", "CONNECTED"}, rows)
}

func writeRegistry(w io.Writer, kind string, header []string, rows [][]string) error {
	if len(rows) == 0 {
		_, err := fmt.Fprintf(w, "No %s found.\n", kind)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
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

// WriteProxy writes one proxy in detail at now, then its config diff: the
// view of `trellis status PROXY`.
func WriteProxy(w io.Writer, st adminapi.ProxyStatus, now time.Time) error {
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
		return fmt.Sprintf("%s (hash %s, %s %s)", v.Version, ShortID(v.Hash), verb, when(v.At))
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
		cert = "expires " + when(*p.CertExpiry) + ", issuer " + cmp.Or(ShortID(p.CertIssuer), "-")
	}
	row("Certificate", cert)
	roots := "-"
	if len(p.TrustRoots) > 0 {
		var rs []string
		for _, r := range p.TrustRoots {
			rs = append(rs, ShortID(r))
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
		b.WriteString(fmt.Sprintf("Config: the acknowledged config is the desired one (hash %s).\n", ShortID(p.Desired.Hash)))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func derefTime(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

func versionOf(v *adminapi.ConfigVersion) string {
	if v == nil || v.Version == "" {
		return "-"
	}
	return v.Version
}
