package adminview

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
)

// WriteCAStatus writes the view of `trellis ca status`: the roots, the
// issuer, the proxies' rotation progress and those still pending, and what
// to do next.
func WriteCAStatus(w io.Writer, st adminapi.CAStatus) {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "ROOT\tACTIVE\tNOT-AFTER\tSUBJECT")
	for _, r := range st.Roots {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ShortID(r.ID), yesNo(r.Active), r.NotAfter.UTC().Format(time.RFC3339), r.Subject)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nissuer: %s (%s, expires %s)\n", ShortID(st.Issuer.ID), st.Issuer.Subject, st.Issuer.NotAfter.UTC().Format(time.RFC3339))
	p := st.Proxies
	switch {
	case st.External:
		fmt.Fprintln(w, "the CA is external (--ca-cert/--ca-key): rotate it in your PKI, then restart the control plane with the new intermediate")
	case st.Rotating:
		fmt.Fprintf(w, "rotation in progress: %d/%d connected proxies have a certificate from the active intermediate and trust every root\n", p.Done, p.Connected)
	default:
		fmt.Fprintf(w, "no rotation in progress: %d/%d connected proxies have a certificate from the active intermediate and trust the root\n", p.Done, p.Connected)
	}
	if len(p.Pending) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, "PROXY\tINSTANCE\tCONNECTED\tBLOCKS-RETIRE\tLACKS")
		for _, px := range p.Pending {
			fmt.Fprintf(tw, "%s.%s\t%s\t%s\t%s\t%s\n", px.Service, px.Namespace, px.Instance, yesNo(px.Connected), yesNo(px.BlocksRetire), strings.Join(px.Lacks, "; "))
		}
		tw.Flush()
		if more := p.PendingTotal - len(p.Pending); more > 0 {
			fmt.Fprintf(w, "... and %d more\n", more)
		}
	}
	switch {
	case st.CanRetire:
		fmt.Fprintln(w, "\nevery proxy is done: `trellis ca retire-old` drops the old root")
	case st.Rotating:
		fmt.Fprintf(w, "\nretire-old is refused while %d proxies block it (BLOCKS-RETIRE yes): wait until they are done or gone\n", p.Blocking)
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
