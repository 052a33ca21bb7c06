package main

import (
	"fmt"
	"time"

	"github.com/pgkeep/pgkeep/internal/restore"
	"github.com/pgkeep/pgkeep/internal/units"
	"github.com/pgkeep/pgkeep/internal/verify"
	"github.com/pgkeep/pgkeep/internal/wal"
	"github.com/spf13/cobra"
)

func (a *app) newVerifyCmd() *cobra.Command {
	var (
		backupID, targetTime, targetLSN, binDir string
		drill, asJSON, quiet, keep              bool
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Re-read and check backups and the WAL chain; --restore rehearses a real restore",
		Long: `Re-read every object of every complete backup (or --backup ID) and every
archived WAL file, checking checksums and decompression, each file piece
against the manifest, and that the WAL chain has no gap from each backup's
start to the end of the archive. Each damaged or missing object is named.
Exits 0 only when everything checks out (4 when damage was found).

With --restore it also runs a real drill: restore the backup into a
temporary directory, start PostgreSQL on a free port, replay to the end of
the archive (or the target), run pg_amcheck on every database, report the
restore time and the LSN and time recovered to, and clean up.

The drill runs the server programs of the backup's PostgreSQL major
version: from --pg-bindir, else from where packages install them
(/usr/lib/postgresql/N/bin, /usr/pgsql-N/bin), pg_config or PATH. pg_amcheck
(PostgreSQL 14 or later) checks heap and indexes; on PostgreSQL 12 and 13,
whose amcheck has no heap check, bt_index_check checks every B-tree index
against its table.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, cfg, err := a.openRepo(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			rep, err := verify.Run(ctx, r, verify.Options{BackupID: backupID, Workers: cfg.Workers, Progress: a.progress(quiet || asJSON)})
			if err != nil {
				return err
			}
			out := struct {
				*verify.Report
				Drill *verify.DrillReport `json:"restore_drill,omitempty"`
			}{Report: rep}
			if drill {
				t, err := buildTarget(targetTime, targetLSN)
				if err != nil {
					return &usageError{err}
				}
				d, err := verify.Drill(ctx, r, verify.DrillOptions{BackupID: backupID, Target: t, Workers: cfg.Workers, BinDir: binDir,
					RestoreCommand: restoreCommand(cfg), RecoveryEndCommand: recoveryEndCommand(), Keep: keep, Progress: a.progress(quiet || asJSON)})
				if err != nil {
					return err
				}
				out.Drill = d
			}
			if asJSON {
				if err := a.printJSON(out); err != nil {
					return err
				}
			} else {
				for _, b := range rep.Backups {
					state := "ok"
					if len(b.Problems) > 0 {
						state = fmt.Sprintf("%d problems", len(b.Problems))
					}
					fmt.Fprintf(a.stdout, "backup %s: %d objects, %s: %s; WAL %s..%s\n", b.ID, b.Objects, units.Bytes(b.Bytes), state, b.WALFrom, b.WALTo)
				}
				fmt.Fprintf(a.stdout, "WAL: %d files read back\n", rep.WALChecked)
				if !rep.ContentChecked {
					fmt.Fprintf(a.stdout, "no identity: the stored bytes of every object were checked, their encrypted content was not (give --age-identity for that)\n")
				}
				if rep.FramingOnly > 0 {
					fmt.Fprintf(a.stdout, "%d objects written by an older pgkeep carry no stored checksum: without the identity only their framing was checked\n", rep.FramingOnly)
				}
				for _, p := range rep.Problems() {
					fmt.Fprintf(a.stdout, "PROBLEM %s\n", p)
				}
				if d := out.Drill; d != nil {
					if d.OK {
						fmt.Fprintf(a.stdout, "restore drill of %s: ok: restored in %.1fs, recovered in %.1fs to LSN %s", d.Backup, d.RestoreSeconds, d.RecoverySeconds, d.RecoveredLSN)
						if d.RecoveredTo != nil {
							fmt.Fprintf(a.stdout, " (last commit %s)", d.RecoveredTo.UTC().Format(time.RFC3339))
						}
						fmt.Fprintf(a.stdout, "; %s passed on %d databases (PostgreSQL %d)\n", d.Check, d.Databases, d.PGMajor)
					} else {
						fmt.Fprintf(a.stdout, "restore drill of %s FAILED: %s\n", d.Backup, d.Failure)
					}
				}
			}
			if !rep.OK {
				return &exitError{code: exitCorrupt, err: fmt.Errorf("verification found %d problems", len(rep.Problems()))}
			}
			if out.Drill != nil && !out.Drill.OK {
				return fmt.Errorf("restore drill failed: %s", out.Drill.Failure)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&backupID, "backup", "", "verify only this backup (the WAL is always checked)")
	f.BoolVar(&drill, "restore", false, "also rehearse a real restore and check it with pg_amcheck")
	f.StringVar(&targetTime, "target-time", "", "with --restore: recover to this moment")
	f.StringVar(&targetLSN, "target-lsn", "", "with --restore: recover to this LSN")
	f.BoolVar(&keep, "keep", false, "with --restore: keep the restored directory (stopped)")
	f.StringVar(&binDir, "pg-bindir", "", "with --restore: directory of the server programs (postgres, pg_ctl) of the backup's PostgreSQL major version (default: where packages install them)")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.BoolVarP(&quiet, "quiet", "q", false, "no progress output")
	return cmd
}

// buildTarget parses the time and LSN target flags.
func buildTarget(targetTime, targetLSN string) (restore.Target, error) {
	var t restore.Target
	if targetTime != "" {
		tm, err := parseTime(targetTime)
		if err != nil {
			return t, fmt.Errorf("--target-time: %w", err)
		}
		t.Time = &tm
	}
	if targetLSN != "" {
		l, err := wal.ParseLSN(targetLSN)
		if err != nil {
			return t, fmt.Errorf("--target-lsn: %w", err)
		}
		t.LSN = &l
	}
	return t, t.Validate()
}
