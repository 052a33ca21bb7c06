package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/pgkeep/pgkeep/internal/demo"
)

func (a *app) newDemoCmd() *cobra.Command {
	var keep bool
	var scale int
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Show the whole story on a throwaway cluster and a local repository",
		Long: `Create a throwaway PostgreSQL cluster that archives into a local repository,
take a backup while pgbench writes, commit marker rows, destroy the data
directory as if the machine had died, restore with the repository as the
only input and show every marker is back, then restore to a moment between
two markers and show the difference. Needs PostgreSQL's server programs
(apt-get install postgresql); as root, PostgreSQL runs as the postgres user.
Everything lives in a temporary directory that is removed at the end.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			self, err := os.Executable()
			if err != nil {
				return fmt.Errorf("finding the pgkeep binary: %w", err)
			}
			return demo.Run(cmd.Context(), demo.Options{Self: self, Keep: keep, Scale: scale, Out: a.stdout})
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the workspace (clusters stopped) for a look afterwards")
	cmd.Flags().IntVar(&scale, "scale", 5, "pgbench scale factor (5 is about 75 MiB)")
	return cmd
}
