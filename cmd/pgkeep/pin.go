package main

import (
	"fmt"
	"time"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/spf13/cobra"
)

func (a *app) newPinCmd(pin bool) *cobra.Command {
	use, short := "pin ID", "Protect a backup from expire"
	if !pin {
		use, short = "unpin ID", "Let expire remove a pinned backup again"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Long: short + `.

expire never removes a pinned backup, nor any backup a pinned incremental
backup depends on: pinning an incremental backup keeps its whole chain, back
to its full backup, and the WAL from that full backup's start.`,
		Args: exactArgs(1, "a backup id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, _, err := a.openRepo(cmd)
			if err != nil {
				return err
			}
			id := args[0]
			m, err := catalog.ReadManifest(cmd.Context(), r, id)
			if err != nil {
				return err
			}
			if pin {
				pinned, err := r.Exists(cmd.Context(), repo.Pin(id))
				if err == nil && !pinned {
					_, err = r.PutObject(cmd.Context(), repo.Pin(id), []byte(time.Now().UTC().Format(time.RFC3339)))
				}
				if err != nil {
					return err
				}
				if deps := m.DependsOn(); len(deps) > 0 {
					fmt.Fprintf(a.stdout, "backup %s is pinned, with the %d backups it depends on\n", id, len(deps))
				} else {
					fmt.Fprintf(a.stdout, "backup %s is pinned\n", id)
				}
				return nil
			}
			if err := r.Delete(cmd.Context(), repo.Pin(id)); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "backup %s is no longer pinned\n", id)
			return nil
		},
	}
}
