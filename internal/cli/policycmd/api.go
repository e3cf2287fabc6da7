package policycmd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/cli/exitcode"
	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/policy/analysis"
	"github.com/trellismesh/trellis/internal/resource"
)

// The functions below are the commands' work without their flags and
// output, for other front ends (the web console): the same code decides,
// so the console and the CLI cannot disagree.

// CheckInput is a `trellis policy check` request: From is --from (a
// SPIFFE ID, SERVICE.NAMESPACE or plaintext), To is --to, and the rest
// the flags of the same names ("" and 0 for a flag not given).
type CheckInput struct {
	From, To, Method, Path string
	Port                   int
	TCP                    bool
}

// Check is `trellis policy check -o json` for in, against the live mesh
// c reads. A 4xx error (bad input) is an exitcode.UserError.
func Check(ctx context.Context, c *adminapi.Client, in CheckInput) (*analysis.Result, error) {
	f := checkFlags{from: in.From, to: in.To, method: in.Method, path: in.Path, port: in.Port, tcp: in.TCP, output: "json"}
	changed := func(name string) bool {
		switch name {
		case "from":
			return in.From != ""
		case "to":
			return in.To != ""
		case "method":
			return in.Method != ""
		case "path":
			return in.Path != ""
		case "port":
			return in.Port != 0
		case "tcp":
			return in.TCP
		}
		return false
	}
	q, err := parseCheck(&f, changed)
	if err != nil {
		return nil, err
	}
	live, err := fetchLive(ctx, c, false)
	if err != nil {
		return nil, fmt.Errorf("policy check: %w", err)
	}
	td, err := TrustDomain("policy check", spiffeIDs(live), "", false)
	if err != nil {
		return nil, err
	}
	return decide(live, q, td)
}

// decide is the evaluation behind policy check, with its errors.
func decide(live *analysis.Mesh, q *analysis.Query, td string) (*analysis.Result, error) {
	res, err := analysis.WhatIf(live, q, td)
	var pe *policy.PathError
	var ce *analysis.CompileError
	switch {
	case errors.As(err, &pe):
		return nil, exitcode.UserError("policy check: --path %q: the proxy answers 400 before any policy: %v", q.Request.Path, pe)
	case errors.As(err, &ce):
		return nil, fmt.Errorf("policy check: the live policies do not compile: %w", ce.Err)
	}
	return res, err
}

// Coverage is `trellis policy coverage -o json`: each edge seen since
// since (0: all) with its observed requests by what the live policies
// decide for them now; namespace "" for every edge.
func Coverage(ctx context.Context, c *adminapi.Client, namespace string, since time.Duration) ([]EdgeCoverage, error) {
	const op = "policy coverage"
	live, td, err := liveMeshOf(ctx, c, op)
	if err != nil {
		return nil, err
	}
	obs, err := fetchObserved(ctx, c, live, td, "", since, 1)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return coverage(obs, namespace), nil
}

// Suggest is `trellis policy suggest -o yaml`: one Intent per calling
// service in namespace ("" for all), in enforcement: audit, covering
// the traffic seen since since.
func Suggest(ctx context.Context, c *adminapi.Client, namespace string, since time.Duration) ([]resource.Object, error) {
	const op = "policy suggest"
	live, td, err := liveMeshOf(ctx, c, op)
	if err != nil {
		return nil, err
	}
	obs, err := fetchObserved(ctx, c, live, td, namespace, since, 1)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return suggest(obs).intents, nil
}

func liveMeshOf(ctx context.Context, c *adminapi.Client, op string) (*analysis.Mesh, string, error) {
	live, err := fetchLive(ctx, c, false)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", op, err)
	}
	td, err := TrustDomain(op, spiffeIDs(live), "", false)
	if err != nil {
		return nil, "", err
	}
	return live, td, nil
}
