package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/pgstat"
	"github.com/pgkeep/pgkeep/internal/restore"
	"github.com/pgkeep/pgkeep/internal/retention"
	"github.com/pgkeep/pgkeep/internal/status"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/verify"
	"github.com/pgkeep/pgkeep/internal/wal"
)

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (a *app) newExpireCmd() *cobra.Command {
	var (
		policy         retention.Policy
		keepWithin     string
		dryRun, asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "expire",
		Short: "Apply retention: remove old backups and the WAL nothing needs",
		Long: `Remove backups outside the retention policy, the WAL that no kept backup
needs any more (timeline by timeline; history files always stay), and what
interrupted backups left behind.

  --keep N             keep the newest N complete backups
  --keep-within 14d    keep every moment of the last 14 days restorable

Both may be given; a backup kept by either stays. The newest complete backup
and pinned backups (pgkeep pin) are never removed. WAL that a backup still
running needs is never removed. expire only deletes, never rewrites, and an
interrupted run is finished by the next one. --dry-run prints the plan.`,
		Example: `  pgkeep expire --keep 7 --keep-within 14d --dry-run`,
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keepWithin != "" {
				d, err := parseDays(keepWithin)
				if err != nil {
					return &usageError{fmt.Errorf("--keep-within: %w", err)}
				}
				policy.KeepWithin = d
			}
			if policy.KeepCount <= 0 && policy.KeepWithin <= 0 {
				return &usageError{errors.New("expire needs a policy: --keep N and/or --keep-within DURATION (e.g. 14d)")}
			}
			r, _, err := a.openRepo(cmd)
			if err != nil {
				return err
			}
			in, err := retention.Gather(cmd.Context(), r, time.Now())
			if err != nil {
				return err
			}
			plan, err := retention.MakePlan(in, policy)
			if err != nil {
				return &usageError{err}
			}
			if asJSON && dryRun {
				return a.printJSON(plan)
			}
			if dryRun {
				fmt.Fprint(a.stdout, plan.String())
				return nil
			}
			log := func(format string, args ...any) {
				if !asJSON {
					fmt.Fprintf(a.stdout, format+"\n", args...)
				}
			}
			if err := retention.Apply(cmd.Context(), r, plan, log); err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(plan)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&policy.KeepCount, "keep", 0, "keep the newest N complete backups")
	f.StringVar(&keepWithin, "keep-within", "", "keep every moment of this recent span restorable (e.g. 36h, 14d)")
	f.DurationVar(&policy.GarbageAge, "garbage-age", 6*time.Hour, "remove an incomplete backup once it has not been written for this long")
	f.BoolVar(&dryRun, "dry-run", false, "print the plan and change nothing")
	f.BoolVar(&asJSON, "json", false, "print the plan as JSON")
	return cmd
}

// parseDays accepts Go durations plus a d (days) suffix.
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		var days float64
		if _, err := fmt.Sscanf(n, "%g", &days); err != nil || days <= 0 {
			return 0, fmt.Errorf("%q is not a number of days", s)
		}
		return time.Duration(days * 24 * float64(time.Hour)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a duration like 36h or 14d", s)
	}
	return d, nil
}

func (a *app) newPinCmd(pin bool) *cobra.Command {
	use, short := "pin ID", "Protect a backup from expire"
	if !pin {
		use, short = "unpin ID", "Let expire remove a pinned backup again"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  exactArgs(1, "a backup id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, _, err := a.openRepo(cmd)
			if err != nil {
				return err
			}
			id := args[0]
			if _, err := catalog.ReadManifest(cmd.Context(), r, id); err != nil {
				return err
			}
			if pin {
				_, err := r.Storage().Stat(cmd.Context(), retention.PinKey(id))
				if errors.Is(err, storage.ErrNotFound) {
					_, err = r.PutObject(cmd.Context(), retention.PinKey(id), []byte(time.Now().UTC().Format(time.RFC3339)))
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stdout, "backup %s is pinned\n", id)
				return nil
			}
			if err := r.Storage().Delete(cmd.Context(), retention.PinKey(id)); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "backup %s is no longer pinned\n", id)
			return nil
		},
	}
}

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
					fmt.Fprintf(a.stdout, "backup %s: %d objects, %s: %s; WAL %s..%s\n", b.ID, b.Objects, humanBytes(b.Bytes), state, b.WALFrom, b.WALTo)
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

func (a *app) newStatusCmd() *cobra.Command {
	var (
		th               status.Thresholds
		asJSON, noServer bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the recoverable window, the age of the newest WAL and backup, and the RPO",
		Long: `Show the recoverable window (earliest and latest restorable moments), the age
of the newest archived WAL and of the newest backup, the RPO estimate (how
much committed work a loss right now would cost: the time since the newest
WAL reached the repository) and what bounds it, WAL gaps, and the
repository's size by kind.

When the database server can be reached with the libpq environment (PGHOST,
PGPORT, PGUSER...; skip with --no-server), status also checks PostgreSQL's
archiver (pg_stat_archiver) and archive_timeout: a failing archiver is a
problem, an archive_timeout of 0 or above --max-rpo is a warning.

Works without the encryption identity: an encrypted repository keeps what
status needs (times, LSNs, sizes) readable by its writers.

For cron and monitoring: exits 1 when --max-rpo or --max-backup-age is
exceeded, when the WAL chain has a gap that shortens recovery, when nothing
is restorable, or when the archiver is failing.`,
		Example: `  pgkeep status --max-rpo 5m --max-backup-age 26h`,
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, _, err := a.openRepo(cmd)
			if err != nil {
				return err
			}
			s, err := status.Compute(cmd.Context(), r, time.Now())
			if err != nil {
				return err
			}
			if !noServer {
				arch, perr := pgstat.Probe(cmd.Context(), "", a.env("PGDATA"), 3*time.Second)
				s.AddServer(arch, perr, th.MaxRPO)
			}
			failures := s.Check(th)
			if asJSON {
				out := struct {
					*status.Status
					Failures []string `json:"failures"`
					Healthy  bool     `json:"healthy"`
				}{s, nonNil(failures), len(failures) == 0}
				if err := a.printJSON(out); err != nil {
					return err
				}
			} else {
				fmt.Fprint(a.stdout, s.String())
			}
			if len(failures) > 0 {
				return &exitError{code: exitFailure, err: fmt.Errorf("unhealthy: %s", strings.Join(failures, "; ")), quiet: asJSON}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&th.MaxRPO, "max-rpo", 0, "exit 1 if the RPO estimate is above this (e.g. 5m)")
	f.DurationVar(&th.MaxBackupAge, "max-backup-age", 0, "exit 1 if the newest backup is older than this (e.g. 26h)")
	f.BoolVar(&asJSON, "json", false, "print as JSON")
	f.BoolVar(&noServer, "no-server", false, "do not try to reach the database server (with the libpq environment) for its archiver state")
	return cmd
}
