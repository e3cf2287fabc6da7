package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/telemetry/eventlog"
)

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:                        "audit",
		Short:                      "Check the collector's audit event log",
		SuggestionsMinimumDistance: 2,
		// As for policy: without a RunE a mistyped subcommand would print
		// help and exit 0.
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			hint := "use verify"
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				hint = fmt.Sprintf("did you mean %q?", s[0])
			}
			return userError("audit: unknown subcommand %q; %s", args[0], hint)
		},
	}
	cmd.AddCommand(newAuditVerifyCmd())
	return cmd
}

const auditVerifyHelp = `Check the hash chain of the event log that the collector keeps under
DATA_DIR/` + eventlog.DirName + `: every record's checksum, its index (no record dropped,
duplicated or reordered, no segment file missing) and its hash over the
record before it (no record edited). It reads the files directly, so it
works with the collector stopped or running.

A record cut short at the very end of the log is a write a crash
interrupted, never acknowledged; it is noted, not reported as tampering.
Records removed from the end of the log cannot be detected from the log
alone: compare the record count and last hash with what the audit sinks
received.

Exit status: 0 when the log is intact; 1 when it is not (the first bad
record is named on stderr), when there is no log in --data-dir or you may
not read it; 2 on any other read error.`

func newAuditVerifyCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:     "verify --data-dir DIR",
		Short:   "Check the audit event log's hash chain; exit 1 naming the first bad record",
		Long:    auditVerifyHelp,
		Example: `  trellis audit verify --data-dir /var/lib/trellis`,
		Args:    noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			const op = "audit verify"
			if dataDir == "" {
				return userError("%s: --data-dir is required: the data dir of the process that runs the collector", op)
			}
			dir := filepath.Join(dataDir, eventlog.DirName)
			rep, err := eventlog.Verify(dir)
			if te, ok := errors.AsType[*eventlog.TamperError](err); ok {
				fmt.Fprintf(cmd.ErrOrStderr(), "tampered: %v\n", te)
				return userError("%s: %s is not as written from record %d on; keep a copy of it as evidence and compare it with what the audit sinks received", op, dir, te.Index)
			}
			switch {
			case errors.Is(err, fs.ErrNotExist):
				return userError("%s: no event log in %s: --data-dir must be the data dir of the process that runs the collector", op, dir)
			case errors.Is(err, fs.ErrPermission):
				return userError("%s: %v: run as the user that owns the data dir", op, err)
			case err != nil:
				return fmt.Errorf("%s: %w", op, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: %s in %s, last hash %s\n",
				plural(int(rep.Records), "record"), plural(rep.Segments, "segment"), rep.LastHashHex())
			if rep.TornBytes > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: the log ends with %d bytes of a record whose write was interrupted (never acknowledged); the collector drops them when it starts\n", rep.TornBytes)
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "data dir of the process that runs the collector (trellis control or trellis collector); the log is in its "+eventlog.DirName+"/ (required)")
	return cmd
}
