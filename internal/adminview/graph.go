package adminview

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
)

// FilterGraph keeps the nodes in namespace ns and the edges with an end in
// it.
func FilterGraph(g adminapi.Graph, ns string) adminapi.Graph {
	nodes, edges := g.Nodes[:0:0], g.Edges[:0:0]
	for _, n := range g.Nodes {
		if n.Namespace == ns {
			nodes = append(nodes, n)
		}
	}
	for _, e := range g.Edges {
		if e.Source.Namespace == ns || e.Destination.Namespace == ns {
			edges = append(edges, e)
		}
	}
	g.Nodes, g.Edges = nodes, edges
	return g
}

// WriteGraph writes the tables of `trellis top`: traffic per service, then
// per edge.
func WriteGraph(w io.Writer, g adminapi.Graph) error {
	fmt.Fprintf(w, "Traffic over the last %s from %d proxies (at %s)\n\n", g.Window, g.Proxies, g.GeneratedAt.Local().Format(time.TimeOnly))
	if len(g.Nodes) == 0 {
		fmt.Fprintln(w, "No services have reported yet.")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tPROXIES\t"+trafficHeader)
	for _, n := range g.Nodes {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", ref(n.ServiceRef), n.Proxies, trafficCells(n.Traffic))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	if len(g.Edges) == 0 {
		fmt.Fprintln(w, "No traffic between services in the window.")
		return nil
	}
	tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tDESTINATION\t"+trafficHeader)
	for _, e := range g.Edges {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", ref(e.Source), ref(e.Destination), trafficCells(e.Traffic))
	}
	return tw.Flush()
}

const trafficHeader = "RPS\tSUCCESS\tDENIED\tP50\tP99\tMTLS\tREQUESTS"

func trafficCells(t adminapi.Traffic) string {
	denied := percent(t.DenialRate)
	if t.Denied > 0 && denied == "0.0%" {
		denied = "<0.1%" // a rare denial is still worth seeing
	}
	return strings.Join([]string{
		strconv.FormatFloat(t.RequestRate, 'f', 1, 64),
		percent(t.SuccessRate),
		denied,
		millis(t.LatencyP50Ms),
		millis(t.LatencyP99Ms),
		percent(t.MTLSShare),
		strconv.FormatUint(t.Requests, 10),
	}, "\t")
}

func ref(r adminapi.ServiceRef) string {
	if r.Namespace == "" {
		return r.Service
	}
	return r.Service + "." + r.Namespace
}

func percent(p *float64) string {
	if p == nil {
		return "-"
	}
	return strconv.FormatFloat(*p*100, 'f', 1, 64) + "%"
}

func millis(p *float64) string {
	if p == nil {
		return "-"
	}
	if *p < 10 {
		return strconv.FormatFloat(*p, 'f', 2, 64) + "ms"
	}
	return strconv.FormatFloat(*p, 'f', 0, 64) + "ms"
}
