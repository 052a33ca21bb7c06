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
		standby, archiveOff, quiet, asJSON      bool
		ifNotExists, ifBackupExists, delta      bool
		deltaReadAll                            bool
		owner                                   string
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
replayed to the end of the archive or the target.

At boot (contrib/systemd/pgkeep-restore.service), --if-not-exists does
nothing when the directory already holds a cluster (PG_VERSION,
global/pg_control or postmaster.pid; any other non-empty directory is still
refused), and --if-backup-exists does nothing when the repository is not
there yet or holds no complete backup; each exits 0 and says so. A
repository that cannot be read (unreachable, bad credentials, no such
bucket) is an error, never "no backup".

--delta restores into an existing data directory of the same cluster (the
system identifier in its pg_control must be the repository's), its server
stopped: it compares every file with the backup by checksum (relation
files 128 KiB chunk by chunk), fetches only the data objects that hold
something that differs, writes only that, and removes every file the
backup does not have (pg_wal's content too: WAL comes from the archive).
pg_control is moved aside first and put back last, so an interrupted delta
restore cannot be started, and can be run again. Every restore leaves
pgkeep_restored in the directory: the chunk checksums of the relation files
it wrote and each file's identity (inode, size, modification and change
time) right after; a delta restore trusts those checksums for a file whose
identity has not changed since, instead of reading it (--delta-read-all
reads everything). Use it to rewind a
cluster, or to resync a diverged former primary, without fetching the
whole backup. An empty or absent --pgdata is restored as usual.

Run as root, restore gives the data directory and every file it writes to
the user PostgreSQL runs as: --owner, else the owner of the target or its
nearest existing parent when that is not root, else postgres; and it
checks first that this user can reach the directory and read what the
restore_command uses (this binary, the config file, key files). Not as
root, the files stay the invoking user's.`,
		Example: `  pgkeep restore --repo s3://bucket/prod --pgdata /var/lib/postgresql/15/main
  pgkeep restore --if-not-exists --if-backup-exists --pgdata /var/lib/postgresql/15/main
  pgkeep restore --pgdata /srv/pitr --target-time '2026-11-24 09:59:00+00' --archive-off
  pgkeep restore --pgdata /srv/pitr --tablespace-map 16401=/srv/pitr-ts
  pg_ctl -D /var/lib/postgresql/15/main stop && pgkeep restore --delta --pgdata /var/lib/postgresql/15/main`,
		Args: exactArgs(0, "no arguments (the target directory is --pgdata)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pgdata == "" {
				return &usageError{fmt.Errorf("restore needs --pgdata DIR: an empty or new directory to restore into")}
			}
			pgdata = filepath.Clean(absPath(pgdata))
			if delta && ifNotExists {
				return &usageError{fmt.Errorf("--delta writes over an existing cluster, --if-not-exists leaves one alone: choose one")}
			}
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
			cfg, err := a.loadConfig(cmd)
			if err != nil {
				return err
			}
			// Who gets the files is settled before the repository is
			// opened: an impossible --owner is refused at once.
			o, err := restore.ResolveOwner(owner, pgdata, restore.HostSystem())
			if err != nil {
				return &usageError{err}
			}
			r, err := a.openRepoWith(cmd, cfg)
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
				IfNotExists:        ifNotExists,
				Delta:              delta,
				DeltaReadAll:       deltaReadAll,
				IfBackupExists:     ifBackupExists,
				Owner:              o,
				ServerReads:        serverReads(cfg),
				Progress:           a.progress(quiet || asJSON),
			})
			if err != nil {
				return err
			}
			switch {
			case asJSON:
				return a.printJSON(restoreReport(pgdata, res))
			case quiet:
			case res.Skipped != "":
				flag := "--if-backup-exists"
				if res.Skipped == restore.SkipCluster {
					flag = "--if-not-exists"
				}
				fmt.Fprintf(a.stdout, "nothing restored (%s): %s\n", flag, res.Reason)
			default:
				owned := ""
				if res.Owner != nil {
					owned = ", owned by " + res.Owner.Name
				}
				if d := res.Delta; d != nil {
					fmt.Fprintf(a.stdout, "delta-restored backup %s into %s: %s written of %s (%s compared, %d of %d objects fetched, %d entries removed), in %s%s\n",
						res.Backup.ID, pgdata, units.Bytes(d.Written), units.Bytes(res.Backup.Size), units.Bytes(d.Compared), d.Fetched, d.Objects, d.Removed, units.Duration(res.Duration), owned)
				} else {
					fmt.Fprintf(a.stdout, "restored backup %s into %s: %d files, %s, in %s%s\n", res.Backup.ID, pgdata, res.Files,
						units.Bytes(res.Bytes), units.Duration(res.Duration), owned)
				}
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
	f.BoolVar(&delta, "delta", false, "restore into an existing, stopped data directory of this cluster, writing only what differs")
	f.BoolVar(&deltaReadAll, "delta-read-all", false, "with --delta, read every local file to compare it, trusting nothing the last restore recorded")
	f.BoolVar(&ifNotExists, "if-not-exists", false, "do nothing (exit 0) when --pgdata already holds a cluster; for boot scripts")
	f.BoolVar(&ifBackupExists, "if-backup-exists", false, "do nothing (exit 0) when the repository is not there yet or holds no complete backup; for boot scripts")
	f.StringVar(&owner, "owner", "", "as root: give the restored files to USER[:GROUP] (default: the owner of the target's parent, else postgres)")
	f.BoolVar(&asJSON, "json", false, "print what was done as JSON")
	f.BoolVarP(&quiet, "quiet", "q", false, "print nothing but errors")
	return cmd
}

// restoreJSON is what restore --json prints.
type restoreJSON struct {
	Outcome string  `json:"outcome"`           // "restored" or "skipped"
	Skipped string  `json:"skipped,omitempty"` // why: cluster-exists, no-repository, no-backup
	Reason  string  `json:"reason,omitempty"`
	PGData  string  `json:"pgdata"`
	Backup  string  `json:"backup,omitempty"`
	Files   int     `json:"files,omitempty"`
	Bytes   int64   `json:"bytes,omitempty"`
	Owner   string  `json:"owner,omitempty"`
	Seconds float64 `json:"seconds"`
	// Delta is what a delta restore compared, wrote and removed.
	Delta *restore.DeltaStats `json:"delta,omitempty"`
}

func restoreReport(pgdata string, res *restore.Result) restoreJSON {
	out := restoreJSON{Outcome: "restored", PGData: pgdata, Seconds: res.Duration.Seconds()}
	if res.Skipped != "" {
		out.Outcome, out.Skipped, out.Reason = "skipped", string(res.Skipped), res.Reason
		return out
	}
	out.Backup, out.Files, out.Bytes, out.Delta = res.Backup.ID, res.Files, res.Bytes, res.Delta
	if res.Owner != nil {
		out.Owner = res.Owner.Name
	}
	return out
}

// serverReads lists what the restored server reads through the
// restore_command this restore writes: the restore checks that the user
// it runs as can read each.
func serverReads(cfg *config.Config) []restore.NamedPath {
	reads := []restore.NamedPath{{Path: selfPath(), What: "the pgkeep binary its restore_command runs"}}
	if cfg.File != "" {
		reads = append(reads, restore.NamedPath{Path: cfg.File, What: "the config file its restore_command reads"})
	}
	if cfg.AgeIdentity != "" {
		reads = append(reads, restore.NamedPath{Path: cfg.AgeIdentity, What: "the age identity file (age-identity)"})
	}
	if cfg.S3.CABundle != "" {
		reads = append(reads, restore.NamedPath{Path: cfg.S3.CABundle, What: "the CA bundle (s3-ca-bundle)"})
	}
	if cfg.Repo.Scheme == "file" {
		reads = append(reads, restore.NamedPath{Path: cfg.Repo.Path, What: "the repository"})
	}
	return reads
}

// selfPath is this binary's path, symlinks resolved: what the recovery
// settings run.
func selfPath() string {
	exe, err := os.Executable()
	if err != nil {
		return "pgkeep"
	}
	if p, err := filepath.EvalSymlinks(exe); err == nil {
		exe = p
	}
	return exe
}

// restoreCommand builds the restore_command: this binary, wal-fetch, and
// the repository settings that were given explicitly. Credentials are never
// part of it.
func restoreCommand(cfg *config.Config) string {
	parts := []string{shellQuote(selfPath()), "wal-fetch"}
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
	return strings.ReplaceAll(shellQuote(selfPath()), "%", "%%") + " wal-prefetch --clean"
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
