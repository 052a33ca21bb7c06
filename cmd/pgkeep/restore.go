package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgkeep/pgkeep/internal/config"
	"github.com/pgkeep/pgkeep/internal/restore"
	"github.com/pgkeep/pgkeep/internal/units"
	"github.com/pgkeep/pgkeep/internal/wal"
)

func (a *app) newRestoreCmd() *cobra.Command {
	var (
		pgdata, backupID, targetTime, targetLSN string
		target                                  restore.Target
		tsMap                                   []string
		standby, archiveOff, quiet              bool
	)
	cmd := &cobra.Command{
		Use:   "restore --pgdata DIR",
		Short: "Restore a backup and set PostgreSQL up to replay the archived WAL",
		Long: `Restore a base backup into an empty directory and write the recovery
settings, so that starting PostgreSQL there replays the archived WAL (fetched
with pgkeep wal-fetch) to the end of the archive, or to a target.

The backup is the latest one, the one named by --backup, or, with a target
time or LSN, the latest one that finished before the target. A target the
repository cannot reach (before the earliest backup, past the end of the
archived WAL) is refused with the range that is reachable.

The recovery settings are appended to postgresql.auto.conf: restore_command
runs this same pgkeep binary with the same repository settings (never any
credential: those come from the environment as usual). recovery.signal is
created (standby.signal with --standby). With a target, the server promotes
when it reaches it (--target-action promote, the default), or pauses or shuts
down.

Start the server afterwards (pg_ctl start -D DIR); it comes up once it has
replayed to the end of the archive or the target.`,
		Example: `  pgkeep restore --repo s3://bucket/prod --pgdata /var/lib/postgresql/15/main
  pgkeep restore --pgdata /srv/pitr --target-time '2026-11-24 09:59:00+00' --archive-off
  pgkeep restore --pgdata /srv/pitr --tablespace-map 16401=/srv/pitr-ts`,
		Args: exactArgs(0, "no arguments (the target directory is --pgdata)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pgdata == "" {
				return &usageError{fmt.Errorf("restore needs --pgdata DIR: an empty or new directory to restore into")}
			}
			pgdata = filepath.Clean(absPath(pgdata))
			if targetTime != "" {
				t, err := parseTime(targetTime)
				if err != nil {
					return &usageError{fmt.Errorf("--target-time: %w", err)}
				}
				target.Time = &t
			}
			if targetLSN != "" {
				l, err := wal.ParseLSN(targetLSN)
				if err != nil {
					return &usageError{fmt.Errorf("--target-lsn %q: %w", targetLSN, err)}
				}
				target.LSN = &l
			}
			if err := target.Validate(); err != nil {
				return &usageError{err}
			}
			remap, err := restore.ParseTablespaceMap(tsMap)
			if err != nil {
				return &usageError{err}
			}
			r, cfg, err := a.openRepo(cmd)
			if err != nil {
				return err
			}
			res, err := restore.Run(cmd.Context(), r, restore.Options{
				PGData:             pgdata,
				BackupID:           backupID,
				Target:             target,
				Workers:            cfg.Workers,
				TablespaceMap:      remap,
				Standby:            standby,
				RestoreCommand:     restoreCommand(cfg),
				RecoveryEndCommand: recoveryEndCommand(),
				ArchiveOff:         archiveOff,
				Progress:           a.progress(quiet),
			})
			if err != nil {
				return err
			}
			if !quiet {
				fmt.Fprintf(a.stdout, "restored backup %s into %s: %d files, %s, in %s\n", res.Backup.ID, pgdata, res.Files,
					units.Bytes(res.Bytes), units.Duration(res.Duration))
				fmt.Fprintf(a.stdout, "start PostgreSQL on it (pg_ctl -D %s start); it replays the archived WAL first\n", pgdata)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&pgdata, "pgdata", "", "directory to restore into: empty or absent (required)")
	f.StringVar(&backupID, "backup", "", "restore this backup id instead of choosing one")
	f.StringVar(&targetTime, "target-time", "", "recover to this moment (RFC 3339, or 'YYYY-MM-DD HH:MM:SS[.ffffff][+TZ]'; UTC if no zone)")
	f.StringVar(&targetLSN, "target-lsn", "", "recover to this WAL location (e.g. 0/3000060)")
	f.StringVar(&target.XID, "target-xid", "", "recover to the commit of this transaction id")
	f.StringVar(&target.Name, "target-name", "", "recover to this named restore point (pg_create_restore_point)")
	f.BoolVar(&target.Immediate, "target-immediate", false, "stop as soon as the backup is consistent (the earliest point)")
	f.StringVar(&target.Action, "target-action", "", "at the target: promote (default), pause or shutdown")
	f.StringVar(&target.Timeline, "target-timeline", "", "timeline to follow: latest (default), current, or a number")
	f.StringArrayVar(&tsMap, "tablespace-map", nil, "restore tablespace OID at PATH instead of its original location (OID=PATH, repeatable)")
	f.BoolVar(&standby, "standby", false, "write standby.signal: keep following the archive as a standby")
	f.BoolVar(&archiveOff, "archive-off", false, "write archive_mode = off, so a side restore does not archive into the repository")
	f.BoolVarP(&quiet, "quiet", "q", false, "print nothing but errors")
	return cmd
}

// restoreCommand builds the restore_command: this binary, wal-fetch, and
// the repository settings that were given explicitly. Credentials are never
// part of it.
func restoreCommand(cfg *config.Config) string {
	exe, err := os.Executable()
	if err != nil {
		exe = "pgkeep"
	}
	if p, err := filepath.EvalSymlinks(exe); err == nil {
		exe = p
	}
	parts := []string{shellQuote(exe), "wal-fetch"}
	if cfg.File != "" {
		parts = append(parts, "--config", shellQuote(cfg.File))
	}
	for _, arg := range cfg.Args() {
		parts = append(parts, shellQuote(arg))
	}
	// PostgreSQL expands %f and %p and reads %% as a literal percent sign.
	return strings.ReplaceAll(strings.Join(parts, " "), "%", "%%") + " %f %p"
}

// recoveryEndCommand removes the wal-fetch prefetch spool at the end of
// recovery (PostgreSQL runs it in the data directory).
func recoveryEndCommand() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if p, err := filepath.EvalSymlinks(exe); err == nil {
		exe = p
	}
	return strings.ReplaceAll(shellQuote(exe), "%", "%%") + " wal-prefetch --clean"
}

// shellQuote quotes s for /bin/sh unless it is plainly safe.
func shellQuote(s string) string {
	safe := s != ""
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_./:=@,+", c)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// parseTime accepts RFC 3339 and PostgreSQL-style timestamps.
func parseTime(s string) (time.Time, error) {
	layouts := []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07",
		"2006-01-02 15:04:05.999999999-07", "2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999"}
	for _, l := range layouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time like 2026-11-24T09:59:00Z or '2026-11-24 09:59:00+00'", s)
}
