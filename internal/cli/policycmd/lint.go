package policycmd

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/cli/exitcode"
	"github.com/trellismesh/trellis/internal/policy"
	"github.com/trellismesh/trellis/internal/policy/analysis"
	"github.com/trellismesh/trellis/internal/resource"
)

const policyLintHelp = `Find authorization policies that cannot do what their author meant: rules
shadowed by broader ALLOW rules, DENY rules made dead by broader DENY rules,
ALLOW rules a DENY fully covers, selectors that match no registered workload,
principals outside the mesh's trust domain, policies in audit mode for more
than a week, and policies that do not compile. Each finding names the policy
and rule, and the other policy and rule involved.

Without -f, lints the live policies. With -f, lints the policies in the files
in the context of the live mesh: the live policies the files do not replace
(same namespace and name) take part, so a file rule shadowed by a live one is
found; only findings that involve a policy of the files are shown. When no
control plane is configured (no token) or reachable, or with --local, the
files are linted alone.

The no-workload check needs registered workloads: it is skipped offline and
while no proxy has registered.

Exit status: 0 when there is no finding; 1 when there are findings or the
input is bad; 2 when the control plane cannot be reached or fails (with -f,
an unreachable control plane only means the files are linted alone).`

func newLintCmd(env Env) *cobra.Command {
	var (
		files      []string
		local      bool
		td, output string
	)
	cmd := &cobra.Command{
		Use:   "lint [-f FILE|DIR|-]... [--local] [-o text|json]",
		Short: "Find shadowed, dead and conflicting policy rules; exit 1 when there are findings",
		Long:  policyLintHelp,
		Example: `  trellis policy lint
  trellis policy lint -f policies/
  trellis policy lint -f new-policy.yaml --local -o json`,
		Args: exitcode.NoArgs,
		RunE: exitcode.RunE(func(cmd *cobra.Command, _ []string) error {
			const op = "policy lint"
			if output != "text" && output != "json" {
				return exitcode.UserError("%s: -o %q: use text or json", op, output)
			}
			if local && len(files) == 0 {
				return exitcode.UserError("%s: --local lints files: add -f FILE", op)
			}
			var fromFiles []resource.Object
			if len(files) > 0 {
				var err error
				if fromFiles, err = readPolicyFiles(env, files); err != nil {
					return err
				}
			}
			stderr := cmd.ErrOrStderr()
			var live *analysis.Mesh
			switch {
			case local:
			case len(files) > 0 && !env.TokenConfigured():
				fmt.Fprintln(stderr, "note: no admin token configured; linting the files alone (pass --token-file to lint them against the live mesh)")
			default:
				c, err := env.Client()
				if err != nil {
					return err
				}
				live, err = fetchLive(cmd.Context(), c, true)
				if len(files) > 0 && errors.Is(err, adminapi.ErrUnreachable) {
					fmt.Fprintf(stderr, "note: linting the files alone: %v\n", err)
					live, err = nil, nil
				}
				if err != nil {
					return fmt.Errorf("%s: %w", op, err)
				}
			}
			trust, err := TrustDomain(op, spiffeIDs(live), td, cmd.Flags().Changed("trust-domain"))
			if err != nil {
				return err
			}

			rep := analysis.Lint(live, time.Now(), trust)
			if len(files) > 0 {
				rep = analysis.LintChanges(fromFiles, live, time.Now(), trust)
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				err = printFindingsJSON(out, rep.Findings)
			} else {
				err = printFindings(out, rep, len(files) > 0, live == nil)
			}
			if err != nil {
				return err
			}
			if n := len(rep.Findings); n > 0 {
				return exitcode.UserError("%s: %s", op, plural(n, "finding"))
			}
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringArrayVarP(&files, "filename", "f", nil, "file, directory or - (stdin) of policies to lint; repeatable")
	f.BoolVar(&local, "local", false, "lint the -f files alone, without reading the live mesh")
	f.StringVarP(&output, "output", "o", "text", "output format: text or json (the findings array)")
	addTrustDomainFlag(cmd, &td)
	return cmd
}

// readPolicyFiles decodes and validates the objects of files, as apply
// would store them.
func readPolicyFiles(env Env, files []string) ([]resource.Object, error) {
	objs, err := env.ReadObjects(files, env.Stdin)
	if err != nil {
		return nil, exitcode.UserError("policy lint: %s", strings.TrimPrefix(err.Error(), "apply: "))
	}
	var problems []string
	for i := range objs {
		if err := resource.Validate(&objs[i]); err != nil {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		return nil, exitcode.UserError("policy lint: the files are not valid:\n%s", strings.Join(problems, "\n"))
	}
	return objs, nil
}

// findingLine is KIND: POLICY [rule N]: MESSAGE [(other: POLICY2 [rule M])].
func findingLine(f policy.Finding) string {
	var b strings.Builder
	b.WriteString(f.Kind + ": " + ruleRef(f.Policy, f.Rule) + ": " + f.Message)
	if f.OtherPolicy != "" {
		b.WriteString(" (other: " + ruleRef(f.OtherPolicy, f.OtherRule) + ")")
	}
	return b.String()
}

func ruleRef(policy string, rule int) string {
	if rule < 0 {
		return policy
	}
	return fmt.Sprintf("%s rule %d", policy, rule)
}

// printFindings writes rep's findings and a summary of the run: withFiles
// is lint -f, offline without the live mesh.
func printFindings(w io.Writer, rep analysis.LintReport, withFiles, offline bool) error {
	var b strings.Builder
	for _, f := range rep.Findings {
		b.WriteString(findingLine(f) + "\n")
	}
	summary := "no findings"
	if len(rep.Findings) > 0 {
		summary = plural(len(rep.Findings), "finding")
	}
	summary += " in " + plural(rep.Linted, "policy")
	switch {
	case withFiles && offline:
		summary += " (the files alone)"
	case withFiles:
		summary += fmt.Sprintf(" (%d from files, %d live)", rep.Changed, rep.Unchanged)
	}
	if rep.Hidden > 0 {
		summary += fmt.Sprintf("; %s among live policies alone not shown (trellis policy lint shows them)", plural(rep.Hidden, "finding"))
	}
	b.WriteString(summary + "\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// findingJSON is one finding in -o json.
type findingJSON struct {
	Kind        string `json:"kind"`
	Policy      string `json:"policy"`
	Rule        int    `json:"rule"`
	OtherPolicy string `json:"otherPolicy"`
	OtherRule   int    `json:"otherRule"`
	Message     string `json:"message"`
}

func printFindingsJSON(w io.Writer, shown []policy.Finding) error {
	out := make([]findingJSON, 0, len(shown))
	for _, f := range shown {
		other := f.OtherRule
		if f.OtherPolicy == "" {
			other = -1
		}
		out = append(out, findingJSON{Kind: f.Kind, Policy: f.Policy, Rule: f.Rule, OtherPolicy: f.OtherPolicy, OtherRule: other, Message: f.Message})
	}
	return writeJSON(w, out)
}

func plural(n int, noun string) string {
	switch {
	case n == 1:
		return "1 " + noun
	case strings.HasSuffix(noun, "y"):
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(noun, "y"))
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
