package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pgkeep/pgkeep/internal/pgcontrol"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/units"
)

func (a *app) newIdentityCmd() *cobra.Command {
	var (
		pgdata         string
		repair, asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "identity",
		Short: "Show the repository's identity record; --repair completes one that lacks facts",
		Long: `Show the repository's identity record (pgkeep.json): the cluster it belongs
to (system identifier), its PostgreSQL major version and WAL segment size,
and its encryption setup. Every push and backup is checked against it.

An older pgkeep could write the record from a WAL segment pushed without
PGDATA, with the major version unknown (pg_major 0); every push from the
real cluster is then refused. --repair completes such a record from the
cluster's own pg_control (--pgdata or PGDATA, on the database host): the
system identifier must match, and nothing else in the record changes. It is
safe to interrupt and to run again.`,
		Example: `  pgkeep identity --repo s3://bucket/prod
  pgkeep identity --repair --pgdata /var/lib/postgresql/15/main`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, _, err := a.openRepo(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			var id *repo.Identity
			if repair {
				if pgdata == "" {
					pgdata = a.env("PGDATA")
				}
				if pgdata == "" {
					return &usageError{fmt.Errorf("identity --repair needs the cluster's data directory (--pgdata or PGDATA) to read its pg_control")}
				}
				ctl, err := pgcontrol.ReadFile(pgdata)
				if err != nil {
					return err
				}
				major, err := ctl.MajorVersion()
				if err != nil {
					return err
				}
				if id, err = r.RepairIdentity(ctx, repo.Identity{SystemIdentifier: ctl.SystemIdentifier, PGMajor: major, WalSegSize: uint64(ctl.WalSegSize)}); err != nil {
					return err
				}
			} else if id, err = r.Identity(ctx); err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(id)
			}
			fmt.Fprintf(a.stdout, "repository        %s\n", r.Location())
			fmt.Fprintf(a.stdout, "cluster           %s (system identifier)\n", id.SystemIDString)
			fmt.Fprintf(a.stdout, "PostgreSQL        %d\n", id.PGMajor)
			fmt.Fprintf(a.stdout, "WAL segment size  %s\n", units.Bytes(int64(id.WalSegSize)))
			fmt.Fprintf(a.stdout, "created           %s by %s\n", id.CreatedAt.UTC().Format("2006-01-02 15:04:05Z"), id.CreatedBy)
			if id.Encryption != nil {
				fmt.Fprintf(a.stdout, "encrypted for     %v\n", id.Encryption.RecipientFingerprints)
			}
			if err := id.Incomplete(); err != nil {
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&repair, "repair", false, "complete a record that lacks the major version or segment size, from the cluster's pg_control")
	f.StringVar(&pgdata, "pgdata", "", "with --repair: the cluster's data directory (default $PGDATA)")
	f.BoolVar(&asJSON, "json", false, "print the record as JSON")
	return cmd
}
