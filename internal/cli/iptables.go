package cli

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/iptables"
	"github.com/trellismesh/trellis/internal/logging"
)

func newIPTablesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "iptables",
		Short: "Install or remove the transparent-mode capture rules in this network namespace",
		Long: `Install or remove the nat-table rules that redirect a workload's traffic to
its proxy (chains TRELLIS_OUTPUT, TRELLIS_REDIRECT, TRELLIS_PREROUTING,
TRELLIS_INBOUND). Run it as an init step holding CAP_NET_ADMIN in the pod's
network namespace, so that the proxy itself can run without it.`,
	}
	subcommandsOnly(cmd, "use apply or remove")
	cmd.AddCommand(newIPTablesApplyCmd(), newIPTablesRemoveCmd())
	return cmd
}

// ipTablesFlags are the flags of apply; remove uses backend and netns.
type ipTablesFlags struct {
	outboundPort, inboundPort, dnsPort uint16
	proxyUID, proxyGID                 string
	inboundPorts, excludeInboundPorts  []string
	excludeOutboundPorts, excludeCIDRs []string
	ipv6, dryRun                       bool
	backend, netns                     string
}

func (f *ipTablesFlags) registerTarget(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.backend, "backend", "auto", "iptables binaries: auto (whatever iptables is), legacy or nft")
	cmd.Flags().StringVar(&f.netns, "netns", "", "run in this named network namespace (ip netns) instead of the current one")
}

// flagOf maps iptables.Config fields to the flags that set them.
var flagOf = map[string]string{
	"OutboundPort":         "--outbound-port",
	"InboundPort":          "--inbound-port",
	"DNSPort":              "--dns-port",
	"ProxyUID":             "--proxy-uid",
	"ProxyGID":             "--proxy-gid",
	"InboundPorts":         "--inbound-ports",
	"ExcludeInboundPorts":  "--exclude-inbound-ports",
	"ExcludeOutboundPorts": "--exclude-outbound-ports",
	"ExcludeOutboundCIDRs": "--exclude-outbound-cidrs",
	"Backend":              "--backend",
}

// config turns the flags into a valid iptables.Config; errors name the flag.
func (f *ipTablesFlags) config() (iptables.Config, error) {
	cfg := iptables.Config{
		OutboundPort: f.outboundPort,
		InboundPort:  f.inboundPort,
		DNSPort:      f.dnsPort,
		IPv6:         f.ipv6,
		Netns:        f.netns,
	}
	if f.outboundPort == 0 {
		return cfg, userError("--outbound-port 0: want 1-65535")
	}
	if f.inboundPort == 0 {
		return cfg, userError("--inbound-port 0: want 1-65535")
	}
	var err error
	if cfg.Backend, err = parseBackend(f.backend); err != nil {
		return cfg, err
	}
	if cfg.ProxyUID, err = parseID("--proxy-uid", f.proxyUID); err != nil {
		return cfg, err
	}
	if cfg.ProxyGID, err = parseID("--proxy-gid", f.proxyGID); err != nil {
		return cfg, err
	}
	for _, p := range []struct {
		flag string
		in   []string
		out  *[]uint16
	}{
		{"--inbound-ports", f.inboundPorts, &cfg.InboundPorts},
		{"--exclude-inbound-ports", f.excludeInboundPorts, &cfg.ExcludeInboundPorts},
		{"--exclude-outbound-ports", f.excludeOutboundPorts, &cfg.ExcludeOutboundPorts},
	} {
		if *p.out, err = parsePorts(p.flag, p.in); err != nil {
			return cfg, err
		}
	}
	for _, s := range f.excludeCIDRs {
		pfx, err := parsePrefix(s)
		if err != nil {
			return cfg, userError("--exclude-outbound-cidrs %q: want an address or CIDR such as 10.0.0.1 or 10.0.0.0/24", s)
		}
		cfg.ExcludeOutboundCIDRs = append(cfg.ExcludeOutboundCIDRs, pfx)
	}
	var fe *iptables.FieldError
	if err := cfg.Validate(); errors.As(err, &fe) {
		return cfg, userError("%s %v: %s", flagOf[fe.Field], fe.Value, fe.Reason)
	} else if err != nil {
		return cfg, userError("%v", err)
	}
	return cfg, nil
}

func parseBackend(s string) (iptables.Backend, error) {
	switch s {
	case "auto", "":
		return iptables.BackendAuto, nil
	case "legacy":
		return iptables.BackendLegacy, nil
	case "nft":
		return iptables.BackendNFT, nil
	}
	return "", userError("--backend %q: want auto, legacy or nft", s)
}

func parseID(flag, s string) (*int, error) {
	if s == "" {
		return nil, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return nil, userError("%s %q: want a numeric id, 0 or more", flag, s)
	}
	return &n, nil
}

func parsePorts(flag string, in []string) ([]uint16, error) {
	var out []uint16
	for _, s := range in {
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
		if err != nil || n == 0 {
			return nil, userError("%s %q: want ports 1-65535, comma separated", flag, s)
		}
		out = append(out, uint16(n))
	}
	return out, nil
}

// parsePrefix accepts a CIDR or a bare address (a single host).
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ipTablesError makes a missing binary or missing privilege the user's to fix.
func ipTablesError(err error) error {
	if errors.Is(err, iptables.ErrPermission) || errors.Is(err, iptables.ErrNotInstalled) {
		return userError("%v", err)
	}
	return err
}

func newIPTablesApplyCmd() *cobra.Command {
	var f ipTablesFlags
	var lf logFlags
	cmd := &cobra.Command{
		Use:   "apply [flags]",
		Short: "Install (or refresh) the capture rules; safe to run again",
		Args:  noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config()
			if err != nil {
				return err
			}
			if f.dryRun {
				v4, v6, err := iptables.Rules(cfg)
				if err != nil {
					return userError("%v", err)
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "# IPv4: iptables-restore --noflush\n%s", v4)
				if v6 != "" {
					fmt.Fprintf(out, "# IPv6: ip6tables-restore --noflush\n%s", v6)
				}
				return nil
			}
			if cfg.Logger, err = logging.New(cmd.ErrOrStderr(), lf.level, lf.format); err != nil {
				return userError("%v", err)
			}
			return ipTablesError(iptables.Apply(cmd.Context(), cfg))
		}),
	}
	fl := cmd.Flags()
	fl.Uint16Var(&f.outboundPort, "outbound-port", iptables.DefaultOutboundPort, "the proxy's outbound capture port")
	fl.Uint16Var(&f.inboundPort, "inbound-port", iptables.DefaultInboundPort, "the proxy's inbound (mTLS) port")
	fl.Uint16Var(&f.dnsPort, "dns-port", iptables.DefaultDNSPort, "the proxy's DNS port for captured port-53 queries; 0 disables DNS capture")
	fl.StringVar(&f.proxyUID, "proxy-uid", "", "also never capture sockets of this user id (the proxy's, when it runs as its own user)")
	fl.StringVar(&f.proxyGID, "proxy-gid", "", "also never capture sockets of this group id")
	fl.StringSliceVar(&f.inboundPorts, "inbound-ports", nil, "application ports to capture inbound, e.g. 8080,9090 (default: all TCP but the excluded ports)")
	fl.StringSliceVar(&f.excludeInboundPorts, "exclude-inbound-ports", nil, "ports never captured inbound, e.g. 22 (15000-15099 always are)")
	fl.StringSliceVar(&f.excludeOutboundPorts, "exclude-outbound-ports", nil, "destination ports never captured outbound (53 also turns DNS capture off)")
	fl.StringSliceVar(&f.excludeCIDRs, "exclude-outbound-cidrs", nil, "destinations never captured, e.g. the control plane: 10.0.0.1/32,10.1.0.0/16")
	fl.BoolVar(&f.ipv6, "ipv6", false, "also install the rules with ip6tables (skipped with a warning where the kernel lacks IPv6 nat)")
	fl.BoolVar(&f.dryRun, "dry-run", false, "print the iptables-restore input instead of installing it")
	f.registerTarget(cmd)
	lf.register(cmd)
	return cmd
}

func newIPTablesRemoveCmd() *cobra.Command {
	var f ipTablesFlags
	var lf logFlags
	cmd := &cobra.Command{
		Use:   "remove",
		Short: "Delete the capture rules (IPv4 and IPv6); nothing installed is fine",
		Args:  noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			backend, err := parseBackend(f.backend)
			if err != nil {
				return err
			}
			log, err := logging.New(cmd.ErrOrStderr(), lf.level, lf.format)
			if err != nil {
				return userError("%v", err)
			}
			cfg := iptables.Config{Backend: backend, Netns: f.netns, Logger: log}
			return ipTablesError(iptables.Remove(cmd.Context(), cfg))
		}),
	}
	f.registerTarget(cmd)
	lf.register(cmd)
	return cmd
}
