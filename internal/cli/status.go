package cli

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/adminapi"
	"github.com/trellismesh/trellis/internal/adminview"
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
				return writeJSON(out, st)
			}
			return adminview.WriteProxy(out, st, time.Now())
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
		return writeJSON(out, adminapi.ProxyListResponse{Items: list})
	}
	if len(list) == 0 {
		if namespace != "" {
			fmt.Fprintf(errOut, "No proxies registered in namespace %s.\n", namespace)
		} else {
			fmt.Fprintln(errOut, "No proxies registered.")
		}
		return nil
	}
	return adminview.WriteProxies(out, list, time.Now())
}
