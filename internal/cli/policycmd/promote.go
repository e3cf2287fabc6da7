package policycmd

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/cli/exitcode"
	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/policy/analysis"
	"github.com/trellismesh/trellis/internal/resource"
)

const policyPromoteHelp = `Switch an audit-mode policy, or Intent, to enforce: only when, over the
last --window, none of the traffic the mesh has seen would be denied by the
switch (the requests the live policies allow and the switched ones would
deny). --force switches anyway.

NAME is an AuthorizationPolicy, or intent/NAME for an Intent (whose
generated policy then enforces unless every other Intent of the same
server is in audit).`

func newPromoteCmd(env Env) *cobra.Command {
	var namespace, trustDomain string
	var window time.Duration
	var force bool
	cmd := &cobra.Command{
		Use:   "promote NAME|intent/NAME [-n NS] [--window 24h] [--force]",
		Short: "Switch an audit-mode policy or Intent to enforce once it would deny none of the observed traffic",
		Long:  policyPromoteHelp,
		Example: `  trellis policy promote intent/frontend -n shop
  trellis policy promote only-frontend -n shop --window 1h
  trellis policy promote only-frontend -n shop --force`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return exitcode.UserError("%s takes one argument, the policy's name (or intent/NAME), got %q", cmd.CommandPath(), args)
			}
			return nil
		},
		RunE: exitcode.RunE(func(cmd *cobra.Command, args []string) error {
			const op = "policy promote"
			kindName, name, isIntent := resource.KindAuthorizationPolicy, args[0], false
			if k, n, ok := strings.Cut(args[0], "/"); ok {
				info, known := resource.LookupKind(k)
				if !known || (info.Kind != resource.KindIntent && info.Kind != resource.KindAuthorizationPolicy) {
					return exitcode.UserError("%s: %q: write NAME for an AuthorizationPolicy or intent/NAME for an Intent", op, args[0])
				}
				kindName, name, isIntent = info.Kind, n, info.Kind == resource.KindIntent
			}
			if window < 0 {
				return exitcode.UserError("%s: --window %s: want a positive duration such as 24h, or 0 for all that was seen", op, window)
			}
			if namespace == "" {
				namespace = resource.DefaultNamespace
			}
			if !isIntent && resource.IsGeneratedPolicyName(name) {
				return exitcode.UserError("%s: AuthorizationPolicy %s/%s is generated from Intents: promote the Intents instead (trellis policy promote intent/NAME; trellis get authz %s -n %s shows them)", op, namespace, name, name, namespace)
			}
			c, err := env.Client()
			if err != nil {
				return err
			}
			kind, _ := resource.LookupKind(kindName)
			obj, err := c.Get(cmd.Context(), kind, namespace, name)
			if err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			var spec map[string]any
			if err := json.Unmarshal(obj.Spec, &spec); err != nil {
				return fmt.Errorf("%s: %s: %w", op, obj.Ref(), err)
			}
			if spec["enforcement"] == resource.EnforcementEnforce {
				fmt.Fprintf(cmd.OutOrStdout(), "%s is already enforced\n", obj.Ref())
				return nil
			}
			spec["enforcement"] = resource.EnforcementEnforce
			promoted := obj
			if promoted.Spec, err = json.Marshal(spec); err != nil {
				return err
			}

			live, td, err := liveMesh(cmd, c, op, trustDomain)
			if err != nil {
				return err
			}
			cand := *live
			if isIntent {
				intentKind, _ := resource.LookupKind(resource.KindIntent)
				intents, err := c.List(cmd.Context(), intentKind, "")
				if err != nil {
					return fmt.Errorf("%s: %w", op, err)
				}
				for i := range intents {
					if intents[i].Metadata.Namespace == namespace && intents[i].Metadata.Name == name {
						intents[i] = promoted
					}
				}
				cand.Policies = nil
				for _, p := range live.Policies {
					if !resource.IsGenerated(&p) {
						cand.Policies = append(cand.Policies, p)
					}
				}
				cand.Policies = append(cand.Policies, resource.CompileIntents(intents)...)
			} else {
				cand.Policies = make([]resource.Object, len(live.Policies))
				copy(cand.Policies, live.Policies)
				for i := range cand.Policies {
					if cand.Policies[i].Metadata.Namespace == namespace && cand.Policies[i].Metadata.Name == name {
						cand.Policies[i] = promoted
					}
				}
			}
			obs, err := fetchObserved(cmd.Context(), c, live, td, "", window, 1)
			if err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			var denied uint64
			var examples []string
			for _, o := range obs {
				if o.res == nil || o.res.Decision != "ALLOW" {
					continue
				}
				q := &analysis.Query{FromService: o.edge.SourceService, FromNamespace: o.edge.SourceNamespace, ToService: o.edge.Service, ToNamespace: o.edge.Namespace,
					Request: policy.Request{HTTP: true, Method: o.shape.Method, Path: examplePath(o.shape.Template)}}
				res, err := analysis.WhatIf(&cand, q, td)
				if err != nil {
					return fmt.Errorf("%s: with %s enforced: %w", op, obj.Ref(), err)
				}
				if res.Decision == "DENY" {
					allowed := o.shape.Requests - min(o.shape.Denied, o.shape.Requests)
					denied += allowed
					if len(examples) < 10 {
						examples = append(examples, fmt.Sprintf("  %s.%s -> %s.%s %s %s: %d requests", o.edge.SourceService, o.edge.SourceNamespace,
							o.edge.Service, o.edge.Namespace, o.shape.Method, o.shape.Template, allowed))
					}
				}
			}
			if denied > 0 && !force {
				return exitcode.UserError("%s: %s would deny %d observed request(s) allowed now (within --window %s); not promoted:\n%s\nwiden the policy (or the Intents), wait for that traffic to stop, or pass --force",
					op, obj.Ref(), denied, window, strings.Join(examples, "\n"))
			}
			if _, err := c.Apply(cmd.Context(), []resource.Object{promoted}, false); err != nil {
				return fmt.Errorf("%s: %w", op, err)
			}
			if denied > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s now denies %d observed request(s) that were allowed (--force)\n", obj.Ref(), denied)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s promoted to enforce (observed requests it would deny within %s: %d)\n", obj.Ref(), window, denied)
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.StringVarP(&namespace, "namespace", "n", "", "the policy's or Intent's namespace (default \"default\")")
	fl.DurationVar(&window, "window", 24*time.Hour, "how far back observed traffic counts (0: all)")
	fl.BoolVar(&force, "force", false, "promote even if observed traffic would be denied")
	addTrustDomainFlag(cmd, &trustDomain)
	return cmd
}
