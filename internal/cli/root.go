package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/cli/exitcode"
	"github.com/trellismesh/trellis/internal/cli/policycmd"
)

// Exit codes.
const (
	ExitOK       = exitcode.OK
	ExitUser     = exitcode.User     // bad input; the message says what to fix
	ExitInternal = exitcode.Internal // server unreachable or internal error
)

// userError, runE and noArgs are internal/cli/exitcode's UserError, RunE
// and NoArgs (errors that carry exit codes, shared with the commands in
// packages of their own) under the names this package's commands use.

func userError(format string, args ...any) error { return exitcode.UserError(format, args...) }

func runE(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return exitcode.RunE(fn)
}

func noArgs(cmd *cobra.Command, args []string) error { return exitcode.NoArgs(cmd, args) }

// globals are the flags every API-using command shares.
type globals struct {
	api       string
	tokenFile string
	token     string
	caFile    string
	stdin     io.Reader
}

// Main runs the CLI and returns the process exit code.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot(stdin)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if ee, ok := errors.AsType[*exitcode.Error](err); err != nil && !(ok && ee.Quiet) {
		fmt.Fprintln(stderr, "error:", err)
	}
	return exitcode.Of(err)
}

func newRoot(stdin io.Reader) *cobra.Command {
	g := &globals{stdin: stdin}
	root := &cobra.Command{
		Use:           "trellis",
		Short:         "Trellis: a zero-trust service mesh",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// Flag errors are user errors.
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitcode.Error{Code: ExitUser, Err: fmt.Errorf("%w (see %s --help)", err, c.CommandPath())}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&g.api, "api", envOr("TRELLIS_API", "http://127.0.0.1:15014"), "control plane admin API URL (env TRELLIS_API)")
	// The token flags take no default from the environment: --help would
	// print the token, and a --token given on the command line must beat a
	// TRELLIS_TOKEN_FILE set in the shell. client() reads the environment.
	pf.StringVar(&g.tokenFile, "token-file", "", "file holding the admin token, e.g. DATA_DIR/admin.token (env TRELLIS_TOKEN_FILE)")
	pf.StringVar(&g.token, "token", "", "admin token (env TRELLIS_TOKEN); prefer --token-file")
	pf.StringVar(&g.caFile, "ca-file", os.Getenv("TRELLIS_CA_FILE"), "PEM roots to trust for an https --api, e.g. DATA_DIR/ca.crt (env TRELLIS_CA_FILE)")

	root.AddCommand(
		newControlCmd(),
		newCollectorCmd(),
		newUpCmd(),
		newProxyCmd(),
		newGatewayCmd(),
		newIPTablesCmd(),
		newApplyCmd(g),
		newImportCmd(g),
		newDiffCmd(g),
		newGetCmd(g),
		newDeleteCmd(g),
		newTokenCmd(g),
		newAdminTokenCmd(g),
		newCACmd(g),
		policycmd.New(policycmd.Env{
			Stdin: g.stdin, Client: g.client, TokenConfigured: g.tokenConfigured, ReadObjects: readObjects,
		}),
		newRouteCmd(g),
		newAuditCmd(g),
		newTopCmd(g),
		newAlertsCmd(g),
		newCheckCmd(g),
		newStatusCmd(g),
		newVersionCmd(),
	)
	root.AddCommand(newKubeCmds(g)...)
	return root
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// client builds an admin API client from the global flags. The token comes
// from the flags if either is given, else from the environment; within one
// source a token file wins over a token.
func (g *globals) client() (*adminapi.Client, error) {
	tokenFile, tok := g.tokenFile, g.token
	if tokenFile == "" && tok == "" {
		tokenFile, tok = os.Getenv("TRELLIS_TOKEN_FILE"), os.Getenv("TRELLIS_TOKEN")
	}
	if tokenFile != "" {
		data, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, userError("--token-file: %v", err)
		}
		tok = string(data)
	}
	tok = strings.TrimSpace(tok) // a token pasted or decoded with its newline
	if tok == "" {
		return nil, userError("no admin token: pass --token-file DATA_DIR/admin.token (or set TRELLIS_TOKEN_FILE)")
	}
	c, err := adminapi.NewClient(g.api, tok, g.caFile)
	if err != nil {
		return nil, userError("%v", err)
	}
	return c, nil
}

// tokenConfigured reports whether client() has a token to send, so that
// policy lint -f and import istio can run offline where no control plane is
// configured.
func (g *globals) tokenConfigured() bool {
	return g.tokenFile != "" || g.token != "" || os.Getenv("TRELLIS_TOKEN_FILE") != "" || os.Getenv("TRELLIS_TOKEN") != ""
}

// writeJSON writes v as indented JSON and a newline, the -o json of the
// commands.
func writeJSON(w io.Writer, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", data)
	return err
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
