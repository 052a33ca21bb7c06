package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pgkeep/pgkeep/internal/walarchive"
)

func (a *app) newWalPushCmd() *cobra.Command {
	var pgdata string
	var verbose bool
	var lookAhead int
	cmd := &cobra.Command{
		Use:   "wal-push PATH",
		Short: "Archive one WAL segment or history file (for archive_command)",
		Long: `Archive one WAL file into the repository. Set it up in postgresql.conf:

  archive_mode = on
  archive_command = 'pgkeep wal-push %p'

with the repository in PGKEEP_REPO (in the server's environment) or in the
config file. wal-push returns success only once the file is durably stored.

Pushing a file that is already archived with identical content succeeds, so
PostgreSQL can safely retry. A different file under an archived name is
refused and nothing is overwritten; so is a file from another cluster than
the one the repository belongs to. Segments, .partial segments, .backup and
.history files are all accepted.`,
		Example: `  pgkeep wal-push --repo s3://bucket/prod pg_wal/000000010000000000000001`,
		Args:    exactArgs(1, "the path of one WAL file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, cfg, err := a.openRepo(cmd)
			if err != nil {
				return err
			}
			if pgdata == "" {
				pgdata = a.env("PGDATA")
			}
			res, err := walarchive.Push(cmd.Context(), r, args[0], walarchive.PushOptions{PGData: pgdata, LookAhead: lookAhead, Workers: cfg.Workers})
			if err != nil {
				return err
			}
			if verbose {
				state := "archived"
				if res.Existed {
					state = "already archived (identical)"
				}
				fmt.Fprintf(a.stderr, "pgkeep: %s %s: %d bytes stored as %d\n", res.Name, state, res.Size, res.Stored)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&pgdata, "pgdata", "", "data directory, to read pg_control (default $PGDATA, else the directory above pg_wal)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "report what was archived")
	cmd.Flags().IntVar(&lookAhead, "look-ahead", 8, "also upload up to this many further ready segments in parallel, so the next calls return at once (0: off)")
	return cmd
}

func (a *app) newWalFetchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "wal-fetch NAME DEST",
		Short: "Fetch one WAL file from the repository (for restore_command)",
		Long: `Fetch one archived WAL file, verify its checksum and write it to DEST.
pgkeep restore writes the restore_command for you; by hand it is:

  restore_command = 'pgkeep wal-fetch %f %p'

Exit status: 0 fetched; 1 the file is not in the repository (PostgreSQL takes
this as the end of the archive; nothing is printed); 126 anything else (the
repository is unreachable, missing, or holds a corrupt copy): PostgreSQL
stops recovery rather than promoting with data missing. Transient storage
errors are retried with backoff first.`,
		Example: `  pgkeep wal-fetch --repo s3://bucket/prod 000000010000000000000001 pg_wal/RECOVERYXLOG`,
		Args:    exactArgs(2, "a WAL file name and a destination path"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, _, err := a.openRepo(cmd)
			if err != nil {
				return &exitError{code: exitFetchFailed, err: err}
			}
			err = walarchive.Fetch(cmd.Context(), r, args[0], args[1], walarchive.FetchOptions{})
			switch {
			case err == nil:
				return nil
			case errors.Is(err, walarchive.ErrNotArchived):
				return &exitError{code: exitFailure, err: err, quiet: true}
			default:
				return &exitError{code: exitFetchFailed, err: err}
			}
		},
	}
	return cmd
}
