package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Errors a caller can act on; the messages say what to do.
var (
	ErrNotInstalled = errors.New("install iptables (Debian/Ubuntu: apt-get install iptables)")
	ErrPermission   = errors.New("needs CAP_NET_ADMIN (and CAP_NET_RAW for iptables-legacy): run `trellis iptables apply` as root in the pod's network namespace")
)

// waitSecs is how long a command waits for the xtables lock another
// iptables user holds.
const waitSecs = "5"

// Apply installs the rules for cfg in the network namespace (the current
// one, or cfg.Netns). It is idempotent: our chains are created when
// missing, flushed and refilled in one iptables-restore --noflush, and the
// jumps from OUTPUT and PREROUTING are added only when `iptables -C` does
// not find them. Concurrent Apply calls on one namespace may add a jump
// twice; run one at a time (Remove deletes every copy).
func Apply(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("iptables apply: %w", err)
	}
	cfg = cfg.withDefaults()
	if err := apply(ctx, cfg, ipv4); err != nil {
		return fmt.Errorf("iptables apply: %w", err)
	}
	if !cfg.IPv6 {
		return nil
	}
	if reason := ipv6Unsupported(ctx, cfg); reason != "" {
		cfg.Logger.Warn("iptables: skipping IPv6 capture", "reason", reason)
		return nil
	}
	if err := apply(ctx, cfg, ipv6); err != nil {
		return fmt.Errorf("iptables apply: %w", err)
	}
	return nil
}

func apply(ctx context.Context, cfg Config, f family) error {
	t, err := newTool(ctx, cfg, f)
	if err != nil {
		return err
	}
	var missing []jump
	for _, j := range jumps {
		args := append([]string{"-w", waitSecs, "-t", "nat", "-C", j.chain}, j.spec...)
		_, err := t.run(ctx, "", t.cmd, args...)
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.Is(err, ErrPermission):
			return err
		case errors.As(err, &ee) && (ee.ExitCode() == 1 || ee.ExitCode() == 2):
			// 1: no such rule; 2: our chain does not exist yet.
			missing = append(missing, j)
		default:
			return err
		}
	}
	if _, err := t.run(ctx, restoreInput(cfg, f, missing), t.restore, "-w", waitSecs, "--noflush"); err != nil {
		return err
	}
	cfg.Logger.Info("iptables: capture rules installed", "family", f, "iptables", t.version, "netns", cfg.Netns, "jumps_added", len(missing))
	return nil
}

// Remove deletes the jumps to our chains and our chains, for IPv4 and,
// where ip6tables works, IPv6. Nothing installed is not an error. Only
// Backend, Netns and Logger of cfg matter.
func Remove(ctx context.Context, cfg Config) error {
	cfg = cfg.withDefaults()
	if err := remove(ctx, cfg, ipv4); err != nil {
		return fmt.Errorf("iptables remove: %w", err)
	}
	if reason := ipv6Unsupported(ctx, cfg); reason != "" {
		cfg.Logger.Debug("iptables: no IPv6 rules to remove", "reason", reason)
		return nil
	}
	if err := remove(ctx, cfg, ipv6); err != nil {
		return fmt.Errorf("iptables remove: %w", err)
	}
	return nil
}

func remove(ctx context.Context, cfg Config, f family) error {
	t, err := newTool(ctx, cfg, f)
	if err != nil {
		return err
	}
	saved, err := t.run(ctx, "", t.save, "-t", "nat")
	if err != nil {
		return err
	}
	input := removeInput(saved)
	if input == "" {
		return nil
	}
	if _, err := t.run(ctx, input, t.restore, "-w", waitSecs, "--noflush"); err != nil {
		return err
	}
	cfg.Logger.Info("iptables: capture rules removed", "family", f, "iptables", t.version, "netns", cfg.Netns)
	return nil
}

// removeInput turns iptables-save output into the iptables-restore input
// deleting every rule that jumps to our chains from another chain, then
// flushing and deleting our chains; "" when none of ours is there.
func removeInput(saved string) string {
	var dels, chains []string
	for _, line := range strings.Split(saved, "\n") {
		line = strings.TrimSpace(line)
		if name, ok := strings.CutPrefix(line, ":"); ok {
			name, _, _ = strings.Cut(name, " ")
			if isOurChain(name) {
				chains = append(chains, name)
			}
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[0] != "-A" || isOurChain(fields[1]) {
			continue
		}
		for i, fl := range fields {
			if (fl == "-j" || fl == "-g") && i+1 < len(fields) && isOurChain(fields[i+1]) {
				dels = append(dels, "-D"+strings.TrimPrefix(line, "-A"))
				break
			}
		}
	}
	if len(dels) == 0 && len(chains) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("*nat\n")
	for _, d := range dels {
		b.WriteString(d + "\n")
	}
	// Flush all before deleting any: our chains jump to each other.
	for _, c := range chains {
		b.WriteString("-F " + c + "\n")
	}
	for _, c := range chains {
		b.WriteString("-X " + c + "\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// ipv6Unsupported says why IPv6 rules cannot be installed, or "".
func ipv6Unsupported(ctx context.Context, cfg Config) string {
	t, err := newTool(ctx, cfg, ipv6)
	if err != nil {
		return err.Error()
	}
	if _, err := t.run(ctx, "", t.cmd, "-w", waitSecs, "-t", "nat", "-S", "OUTPUT"); err != nil {
		return err.Error()
	}
	return ""
}

// tool is one family's set of iptables binaries.
type tool struct {
	cmd, save, restore string
	version            string // `iptables -V`, e.g. "iptables v1.8.9 (nf_tables)"
	netns              string
}

func newTool(ctx context.Context, cfg Config, f family) (*tool, error) {
	base := "iptables"
	if f == ipv6 {
		base = "ip6tables"
	}
	suffix := ""
	if cfg.Backend != BackendAuto {
		suffix = "-" + string(cfg.Backend)
	}
	t := &tool{cmd: base + suffix, save: base + suffix + "-save", restore: base + suffix + "-restore", netns: cfg.Netns}
	for _, bin := range []string{t.cmd, t.save, t.restore} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%s not found in PATH: %w", bin, ErrNotInstalled)
		}
	}
	if t.netns != "" {
		if _, err := exec.LookPath("ip"); err != nil {
			return nil, fmt.Errorf("ip not found in PATH (needed for netns %s): install iproute2", t.netns)
		}
	}
	out, err := exec.CommandContext(ctx, t.cmd, "-V").Output()
	if err != nil {
		return nil, fmt.Errorf("%s -V: %w", t.cmd, err)
	}
	t.version = strings.TrimSpace(string(out))
	return t, nil
}

// run runs bin with args (and stdin) in t's namespace and returns its
// stdout. Errors name the command, the iptables variant and the fix.
func (t *tool) run(ctx context.Context, stdin, bin string, args ...string) (string, error) {
	argv := append([]string{bin}, args...)
	if t.netns != "" {
		argv = append([]string{"ip", "netns", "exec", t.netns}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil {
		return stdout.String(), nil
	}
	where := ""
	if t.netns != "" {
		where = " in netns " + t.netns
	}
	msg := strings.TrimSpace(stderr.String())
	if msg == "" {
		msg = err.Error()
	}
	prefix := fmt.Sprintf("%s %s [%s]%s", bin, strings.Join(args, " "), t.version, where)
	switch {
	case strings.Contains(msg, "Permission denied") || strings.Contains(msg, "Operation not permitted") || strings.Contains(msg, "you must be root"):
		return "", fmt.Errorf("%s: %s (%w): %w", prefix, msg, err, ErrPermission)
	case strings.Contains(msg, "Table does not exist") || strings.Contains(msg, "do you need to insmod"):
		return "", fmt.Errorf("%s: %s: the kernel lacks the nat table or REDIRECT target: load them (modprobe iptable_nat xt_REDIRECT) or try the other backend (legacy or nft): %w", prefix, msg, err)
	}
	return "", fmt.Errorf("%s: %s: %w", prefix, msg, err)
}
