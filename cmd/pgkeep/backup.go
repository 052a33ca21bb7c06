package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgkeep/pgkeep/internal/backup"
	"github.com/pgkeep/pgkeep/internal/catalog"
)

func (a *app) newBackupCmd() *cobra.Command {
	var (
		pgdata, label string
		walTimeout    time.Duration
		asJSON, quiet bool
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

The server must archive its WAL into the same repository
(archive_command = 'pgkeep wal-push %p'). Run it on the database host, as a
user that can read the data directory (usually postgres).`,
		Example: `  PGHOST=/var/run/postgresql pgkeep backup --repo s3://bucket/prod
  pgkeep backup --pgdata /var/lib/postgresql/15/main --workers 4`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, cfg, err := a.openRepo(cmd)
			if err != nil {
				return err
			}
			if pgdata == "" {
				pgdata = a.env("PGDATA")
			}
			res, err := backup.Run(cmd.Context(), r, backup.Options{
				PGData:     pgdata,
				Workers:    cfg.Workers,
				Label:      label,
				WALTimeout: walTimeout,
				Progress:   a.progress(quiet || asJSON),
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
				fmt.Fprintf(a.stdout, "backup %s complete\n", res.Manifest.ID)
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
	// Sealed: the label and file list are encrypted and no identity was
	// given (an encrypted repository read by a writer).
	Sealed bool `json:"contents_sealed,omitempty"`
}

func summarize(m *catalog.Manifest) backupSummary {
	return backupSummary{
		ID: m.ID, StartTime: m.StartTime, StopTime: m.StopTime, StartLSN: m.StartLSN, StopLSN: m.StopLSN,
		Timeline: m.Timeline, Size: m.Size, Stored: m.Stored, Files: m.FileCount,
		DurationSec: m.Duration().Seconds(), PGVersion: m.PGVersionNum, Compression: m.Compression, Label: m.Label, Sealed: m.Sealed,
	}
}

// firstFew joins up to n items, saying how many more there are.
func firstFew(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, "; ")
	}
	return fmt.Sprintf("%s; and %d more", strings.Join(items[:n], "; "), len(items)-n)
}
