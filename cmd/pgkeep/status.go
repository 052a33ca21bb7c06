package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/pgkeep/pgkeep/internal/pgstat"
	"github.com/pgkeep/pgkeep/internal/status"
	"github.com/spf13/cobra"
)

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
repository's size by kind. With pgkeep agent streaming, it also shows the
streamed position and its age, and the RPO is measured from it: 0 when the
server has flushed no WAL that the repository lacks.

When the database server can be reached with the libpq environment (PGHOST,
PGPORT, PGUSER...; skip with --no-server), status also checks PostgreSQL's
archiver (pg_stat_archiver) and archive_timeout: a failing archiver is a
problem, an archive_timeout of 0 or above --max-rpo is a warning (unless
the agent streams), and the agent's connection (pg_stat_replication) is
shown.

Works without the encryption identity: an encrypted repository keeps what
status needs (times, LSNs, sizes) readable by its writers.

For cron and monitoring: exits 1 when --max-rpo or --max-backup-age is
exceeded, when the WAL chain has a gap that shortens recovery, when nothing
is restorable, or when the archiver is failing.`,
		Example: `  pgkeep status --max-rpo 5m --max-backup-age 26h`,
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, cat, err := a.openCatalog(cmd)
			if err != nil {
				return err
			}
			s := status.Compute(cat, r.Location(), time.Now())
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
