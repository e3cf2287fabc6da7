package policycmd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/pathtemplate"
	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/policy/analysis"
)

// observed is one learned request shape of an edge with what the live
// policies decide for it: the basis of policy suggest, coverage and
// promote.
type observed struct {
	edge  adminapi.EdgeShapes
	shape adminapi.PathShape
	res   *analysis.Result // nil for a caller without a known service
}

// unknownSource is the source service of calls from callers whose
// identity serves no single known service, as the proxies count them.
const unknownSource = "unknown"

// wouldDeny reports whether an audit-mode policy would deny o.
func (o *observed) wouldDeny() bool {
	if o.res == nil {
		return false
	}
	for _, a := range o.res.Audit {
		if a.Decision == "DENY" {
			return true
		}
	}
	return false
}

// examplePath is a path the template stands for: {id} as 1.
func examplePath(tmpl string) string {
	p := strings.ReplaceAll(tmpl, pathtemplate.ID, "1")
	return strings.ReplaceAll(p, pathtemplate.Rest, "x")
}

// fetchObserved reads the learned shapes of edges whose caller is in
// namespace ("" for all), seen since since (0: any time) at least
// minCount times, and decides each against live.
func fetchObserved(ctx context.Context, c *adminapi.Client, live *analysis.Mesh, td, namespace string, since time.Duration, minCount uint64) ([]observed, error) {
	list, err := c.Shapes(ctx, namespace)
	if err != nil {
		var se *adminapi.StatusError
		if errors.As(err, &se) && se.Status == 404 {
			return nil, fmt.Errorf("this admin API has no learned request shapes: %w", err)
		}
		return nil, err
	}
	cutoff := time.Time{}
	if since > 0 {
		cutoff = time.Now().Add(-since)
	}
	var out []observed
	for _, e := range list.Edges {
		if namespace != "" && e.SourceNamespace != namespace {
			continue
		}
		for _, sh := range e.Shapes {
			if sh.Requests < minCount || sh.LastSeen.Before(cutoff) {
				continue
			}
			o := observed{edge: e, shape: sh}
			if e.SourceService != unknownSource {
				q := &analysis.Query{FromService: e.SourceService, FromNamespace: e.SourceNamespace, ToService: e.Service, ToNamespace: e.Namespace,
					Request: policy.Request{HTTP: true, Method: sh.Method, Path: examplePath(sh.Template)}}
				res, err := analysis.WhatIf(live, q, td)
				var ce *analysis.CompileError
				switch {
				case errors.As(err, &ce):
					return nil, fmt.Errorf("the live policies do not compile: %w", ce.Err)
				case err == nil:
					o.res = res
				}
				// A template whose example the proxy would refuse (400)
				// is kept without a decision.
			}
			out = append(out, o)
		}
	}
	return out, nil
}

// liveMesh reads the live mesh and its trust domain for the command op
// (the --trust-domain flag given as td, used only without proxies).
func liveMesh(cmd *cobra.Command, c *adminapi.Client, op, td string) (*analysis.Mesh, string, error) {
	live, err := fetchLive(cmd.Context(), c, false)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", op, err)
	}
	td, err = TrustDomain(op, spiffeIDs(live), td, cmd.Flags().Changed("trust-domain"))
	if err != nil {
		return nil, "", err
	}
	return live, td, nil
}
