package console

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/trellismesh/trellis/internal/adminapi"
)

func sqrt(f float64) float64 { return math.Sqrt(f) }

// Layout sizes, in SVG user units.
const (
	nodeW, nodeH = 170, 54
	colGap       = 290 // room for an edge's label
	rowGap       = 40
	margin       = 30
)

// nodeView is a service placed on the graph.
type nodeView struct {
	adminapi.GraphNode
	ID   string
	X, Y int
}

// layout places nodes in columns by call depth (a service's column is
// one more than its deepest caller's, calls that close a cycle left
// out), rows sorted by name, and routes each edge as a
// curve from its source's right side to its destination's left side. It
// is deterministic: the same graph draws the same picture.
func layout(nodes []adminapi.GraphNode, edges []edgeView) ([]nodeView, int, int) {
	ids := map[string]adminapi.GraphNode{}
	for _, n := range nodes {
		ids[refString(n.ServiceRef)] = n
	}
	// Edges may name a caller that is not a node (unknown).
	for _, e := range edges {
		for _, r := range []adminapi.ServiceRef{e.Source, e.Destination} {
			if _, ok := ids[refString(r)]; !ok {
				ids[refString(r)] = adminapi.GraphNode{ServiceRef: r}
			}
		}
	}
	depth := depths(ids, edges)
	order := make([]string, 0, len(ids))
	for id := range ids {
		order = append(order, id)
	}
	slices.SortFunc(order, func(a, b string) int { return cmp.Or(cmp.Compare(depth[a], depth[b]), cmp.Compare(a, b)) })
	rows := map[int]int{}
	pos := map[string]nodeView{}
	var out []nodeView
	maxCol, maxRow := 0, 0
	for _, id := range order {
		col := depth[id]
		row := rows[col]
		rows[col]++
		nv := nodeView{GraphNode: ids[id], ID: id, X: margin + col*(nodeW+colGap), Y: margin + row*(nodeH+rowGap)}
		pos[id] = nv
		out = append(out, nv)
		maxCol, maxRow = max(maxCol, col), max(maxRow, row)
	}
	// Each node's outgoing edges leave from, and its incoming edges
	// arrive at, points spread down its side, in the edges' order.
	outs, ins := map[string][]int{}, map[string][]int{}
	for i, e := range edges {
		outs[refString(e.Source)] = append(outs[refString(e.Source)], i)
		ins[refString(e.Destination)] = append(ins[refString(e.Destination)], i)
	}
	slot := func(list []int, i int) float64 {
		k := slices.Index(list, i)
		return float64(nodeH) * float64(k+1) / float64(len(list)+1)
	}
	for i := range edges {
		e := &edges[i]
		sk, dk := refString(e.Source), refString(e.Destination)
		s, d := pos[sk], pos[dk]
		x1, y1 := float64(s.X+nodeW), float64(s.Y)+slot(outs[sk], i)
		x2, y2 := float64(d.X), float64(d.Y)+slot(ins[dk], i)
		if d.X <= s.X { // a call back to an earlier column: loop under
			x2 = float64(d.X + nodeW/2)
			y2 = float64(d.Y + nodeH)
		}
		mx := (x1 + x2) / 2
		e.Path = fmt.Sprintf("M %.0f %.0f C %.0f %.0f, %.0f %.0f, %.0f %.0f", x1, y1, mx, y1, mx, y2, x2-8, y2)
		// The label sits above the edge's last stretch, by its
		// destination, where no other edge's label is.
		e.LabelX, e.LabelY = x2-14, y2-5
	}
	w := 2*margin + (maxCol+1)*nodeW + maxCol*colGap
	h := 2*margin + (maxRow+1)*nodeH + maxRow*rowGap
	return out, w, h
}

// depths is each node's column: the longest chain of calls leading to
// it, without the calls that close a cycle (back edges of a depth-first
// walk from the uncalled services, in name order), so the result does
// not depend on the order of nodes or edges.
func depths(ids map[string]adminapi.GraphNode, edges []edgeView) map[string]int {
	adj := map[string][]string{}
	called := map[string]bool{}
	for _, e := range edges {
		s, d := refString(e.Source), refString(e.Destination)
		if s != d {
			adj[s] = append(adj[s], d)
			called[d] = true
		}
	}
	for k := range adj {
		slices.Sort(adj[k])
		adj[k] = slices.Compact(adj[k])
	}
	names := make([]string, 0, len(ids))
	for id := range ids {
		names = append(names, id)
	}
	slices.SortFunc(names, func(a, b string) int {
		// Uncalled services first: they start the walk.
		ca, cb := 0, 0
		if called[a] {
			ca = 1
		}
		if called[b] {
			cb = 1
		}
		return cmp.Or(cmp.Compare(ca, cb), cmp.Compare(a, b))
	})
	const (
		onStack = 1
		done    = 2
	)
	state := map[string]int{}
	back := map[[2]string]bool{}
	var post []string
	var visit func(v string)
	visit = func(v string) {
		state[v] = onStack
		for _, w := range adj[v] {
			switch state[w] {
			case 0:
				visit(w)
			case onStack:
				back[[2]string{v, w}] = true
			}
		}
		state[v] = done
		post = append(post, v)
	}
	for _, v := range names {
		if state[v] == 0 {
			visit(v)
		}
	}
	// Reverse post-order is a topological order once back edges are out.
	depth := map[string]int{}
	for i := len(post) - 1; i >= 0; i-- {
		v := post[i]
		for _, w := range adj[v] {
			if !back[[2]string{v, w}] && depth[w] < depth[v]+1 {
				depth[w] = depth[v] + 1
			}
		}
	}
	return depth
}
