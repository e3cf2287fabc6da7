package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/trellismesh/trellis/internal/telemetry/eventlog"
)

func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Check the collector's audit event log",
	}
	subcommandsOnly(cmd, "use verify")
	cmd.AddCommand(newAuditVerifyCmd(g))
	return cmd
}

const auditVerifyHelp = `Check the hash chain of the event log that the collector keeps under
DATA_DIR/` + eventlog.DirName + `: every record's checksum, its index (no record dropped,
duplicated or reordered, no segment file missing) and its hash over the
record before it (no record edited).

By default the server that runs the collector checks its log and answers
through the admin API, so it works from any host that can reach the API:
--api (env TRELLIS_API) and --token-file (env TRELLIS_TOKEN_FILE) as for the
other commands. That is the control plane, or with an external collector
(trellis control --collector-addr) the collector: point --api at its
--api-addr and --token-file at its DATA_DIR/admin.token. The server checks
through the last record it made durable, so it also catches records cut
off the end of the log while it runs.

With --data-dir the files are read directly on this host, with the
collector stopped or running. A record cut short at the very end of the log
is then a write a crash interrupted, never acknowledged; it is noted, not
reported as tampering. Records removed from the end of the log cannot be
detected from the files alone: compare the record count and last hash with
what the audit sinks received.

Exit status: 0 when the log is intact; 1 when it is not (the first bad
record is named on stderr), for bad flags, when the server refuses (no or
wrong token, no event log there), or with --data-dir when there is no log
in it or you may not read it; 2 when the server cannot be reached and on
any other error.`

func newAuditVerifyCmd(g *globals) *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "verify [--data-dir DIR]",
		Short: "Check the audit event log's hash chain; exit 1 naming the first bad record",
		Long:  auditVerifyHelp,
		Example: `  trellis audit verify                            # the server at TRELLIS_API checks its log
  trellis audit verify --api http://10.0.0.7:15024 --token-file collector-admin.token
  trellis audit verify --data-dir /var/lib/trellis   # on the collector's host, from the files`,
		Args: noArgs,
		RunE: runE(func(cmd *cobra.Command, _ []string) error {
			if dataDir == "" {
				return auditVerifyRemote(cmd, g)
			}
			if f := cmd.Flag("api"); f != nil && f.Changed {
				return userError("audit verify: --data-dir reads the log on this host and --api asks a server to check its own; give one of them")
			}
			return auditVerifyDir(cmd, dataDir)
		}),
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "read the log from the files under this data dir instead of asking the server: the data dir of the process that runs the collector (trellis control or trellis collector); the log is in its "+eventlog.DirName+"/")
	return cmd
}

// auditVerifyRemote has the server that runs the collector check its log.
func auditVerifyRemote(cmd *cobra.Command, g *globals) error {
	const op = "audit verify"
	c, err := g.client()
	if err != nil {
		return userError("%s: %w; or, on the collector's host, --data-dir DATA_DIR reads the log from its files", op, err)
	}
	res, err := c.AuditVerify(cmd.Context())
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if te := res.Tampered; te != nil || !res.Intact {
		if te == nil {
			return fmt.Errorf("%s: the server at %s answered neither intact nor a bad record; check its version and logs", op, c.BaseURL)
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "tampered: %v\n", &eventlog.TamperError{Index: te.Index, Segment: te.Segment, Offset: te.Offset, Reason: te.Reason})
		return userError("%s: the event log of the server at %s is not as written from record %d on; keep a copy of its DATA_DIR/%s as evidence and compare it with what the audit sinks received", op, c.BaseURL, te.Index, eventlog.DirName)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "ok: %s in %s, last hash %s\n",
		plural(int(res.Records), "record"), plural(res.Segments, "segment"), res.LastHash)
	return nil
}

// auditVerifyDir checks the log's files under dataDir.
func auditVerifyDir(cmd *cobra.Command, dataDir string) error {
	const op = "audit verify"
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
}
