package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgkeep/pgkeep/internal/backup"
	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/units"
)

func (a *app) newBackupCmd() *cobra.Command {
	var (
		pgdata, label  string
		walTimeout     time.Duration
		asJSON, quiet  bool
		typ, fullEvery string
		maxChain       int
	)
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Take a base backup of the local cluster while it runs",
		Long: `Take a base backup of the running cluster into the repository.

pgkeep connects with the standard libpq environment (PGHOST, PGPORT, PGUSER,
PGDATABASE, PGPASSWORD or ~/.pgpass), starts a non-exclusive backup in one
session, copies the data directory and every tablespace with parallel
workers, stops the backup, and then waits until all the WAL from the
backup's start to its stop is archived and verified in the repository. Only
then does it write the completion record: a backup that was interrupted or
whose WAL never arrived is never listed as restorable.

Incremental backups: by default (--type auto) a backup builds on the newest
complete one while that chain holds fewer than --max-chain incremental
backups and its full backup is younger than --full-every; otherwise it is a
full backup. An incremental backup reads and stores only the 128 KiB chunks
of relation files in which the WAL since its parent's start changed a block
(wal-push records which in a summary beside each segment), plus the other
files whole; it refers to every unchanged chunk in the backups before it.
Restoring it restores the whole data directory, as from a full backup;
expire keeps every backup a kept one refers to. Where WAL summaries are
missing (WAL archived by an older pgkeep), the relation files are read and
compared with the parent's chunk checksums instead, and the backup says so.

The server must archive its WAL into the same repository
(archive_command = 'pgkeep wal-push %p'). Run it on the database host, as a
user that can read the data directory (usually postgres).`,
		Example: `  PGHOST=/var/run/postgresql pgkeep backup --repo s3://bucket/prod
  pgkeep backup --pgdata /var/lib/postgresql/15/main --workers 4
  pgkeep backup --type full                    # start a new chain
  pgkeep backup --max-chain 13 --full-every 14d`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, cfg, err := a.openRepo(cmd)
			if err != nil {
				return err
			}
			if pgdata == "" {
				pgdata = a.env("PGDATA")
			}
			chain, err := parseChainFlags("--type", typ, maxChain, fullEvery)
			if err != nil {
				return err
			}
			res, err := backup.Run(cmd.Context(), r, backup.Options{
				PGData:     pgdata,
				Workers:    cfg.Workers,
				Label:      label,
				WALTimeout: walTimeout,
				Progress:   a.progress(quiet || asJSON),
				Type:       chain.Type,
				MaxChain:   chain.MaxChain,
				FullEvery:  chain.FullEvery,
			})
			if err != nil {
				return err
			}
			if asJSON {
				if err := a.printJSON(struct {
					Backup           backupSummary `json:"backup"`
					ChecksumFailures []string      `json:"checksum_failures"`
					Warnings         []string      `json:"warnings"`
				}{summarize(res.Manifest), nonNil(res.ChecksumFailures), nonNil(res.Warnings)}); err != nil {
					return err
				}
			} else if !quiet {
				if m := res.Manifest; m.Incremental() {
					fmt.Fprintf(a.stdout, "backup %s complete (incremental on %s, chain %d: %s stored of %s)\n", m.ID, m.Parent, m.Chain, units.Bytes(m.Stored), units.Bytes(m.Size))
				} else {
					fmt.Fprintf(a.stdout, "backup %s complete (full)\n", m.ID)
				}
			}
			if n := len(res.ChecksumFailures); n > 0 {
				return fmt.Errorf("backup %s is complete, but %d pages failed their checksum (%s): the cluster has corrupt pages", res.Manifest.ID, n, firstFew(res.ChecksumFailures, 5))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&pgdata, "pgdata", "", "data directory (default $PGDATA, else the server's data_directory)")
	f.StringVar(&label, "label", "", "label stored with the backup")
	f.DurationVar(&walTimeout, "wal-timeout", 5*time.Minute, "how long to wait for the backup's WAL to be archived")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.BoolVarP(&quiet, "quiet", "q", false, "print nothing but errors")
	f.StringVar(&typ, "type", backup.TypeAuto, "full, incremental (on the newest backup) or auto")
	f.IntVar(&maxChain, "max-chain", backup.DefaultMaxChain, "with --type auto, at most this many incremental backups on a full one (0: always full)")
	f.StringVar(&fullEvery, "full-every", "7d", "with --type auto, take a full backup once the newest full one is this old")
	return cmd
}

// backupSummary is how list and backup show a backup.
type backupSummary struct {
	ID          string    `json:"id"`
	StartTime   time.Time `json:"start_time"`
	StopTime    time.Time `json:"stop_time"`
	StartLSN    string    `json:"start_lsn"`
	StopLSN     string    `json:"stop_lsn"`
	Timeline    uint32    `json:"timeline"`
	Size        int64     `json:"size"`
	Stored      int64     `json:"stored"`
	Files       int       `json:"files"`
	DurationSec float64   `json:"duration_seconds"`
	PGVersion   int       `json:"pg_version_num"`
	Compression string    `json:"compression"`
	Label       string    `json:"label"`
	// Type is full or incremental; an incremental backup's Parent is the
	// backup it builds on, and Chain how many incremental backups lead
	// back to its full one.
	Type   string `json:"type"`
	Parent string `json:"parent,omitempty"`
	Chain  int    `json:"chain"`
	// Sealed: the label and file list are encrypted and no identity was
	// given (an encrypted repository read by a writer).
	Sealed bool `json:"contents_sealed,omitempty"`
}

func summarize(m *catalog.Manifest) backupSummary {
	b := backupSummary{
		ID: m.ID, StartTime: m.StartTime, StopTime: m.StopTime, StartLSN: m.StartLSN, StopLSN: m.StopLSN,
		Timeline: m.Timeline, Size: m.Size, Stored: m.Stored, Files: m.FileCount,
		DurationSec: m.Duration().Seconds(), PGVersion: m.PGVersionNum, Compression: m.Compression, Label: m.Label, Sealed: m.Sealed,
		Type: m.Type, Parent: m.Parent, Chain: m.Chain,
	}
	if b.Type == "" {
		b.Type = backup.TypeFull
	}
	return b
}

// firstFew joins up to n items, saying how many more there are.
func firstFew(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, "; ")
	}
	return fmt.Sprintf("%s; and %d more", strings.Join(items[:n], "; "), len(items)-n)
}

// chainFlags are the backup-type settings of pgkeep backup (--type) and of
// the agent's scheduled backups (--backup-type), as backup.Options takes
// them.
type chainFlags struct {
	Type      string
	MaxChain  int // backup.Options: negative is none, 0 the default
	FullEvery time.Duration
}

// parseChainFlags checks the backup type (named typeFlag in messages),
// --max-chain and --full-every.
func parseChainFlags(typeFlag, typ string, maxChain int, fullEvery string) (chainFlags, error) {
	switch typ {
	case backup.TypeFull, backup.TypeIncremental, backup.TypeAuto:
	default:
		return chainFlags{}, &usageError{fmt.Errorf("%s %q: use full, incremental or auto", typeFlag, typ)}
	}
	every, err := parseDays(fullEvery)
	if err != nil {
		return chainFlags{}, &usageError{fmt.Errorf("--full-every: %w", err)}
	}
	if maxChain < 0 {
		return chainFlags{}, &usageError{fmt.Errorf("--max-chain %d: use 0 (always full) or more", maxChain)}
	}
	if maxChain == 0 {
		maxChain = -1
	}
	return chainFlags{Type: typ, MaxChain: maxChain, FullEvery: every}, nil
}
