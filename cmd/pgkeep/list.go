package main

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/units"
)

func (a *app) newListCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the backups and the WAL the repository holds",
		Long: `List the complete backups, oldest first, with their start and stop times and
LSNs, type (full or incremental), parent and chain length (how many
incremental backups lead back to the full one), timeline, size in the
cluster and stored (an incremental backup's own objects only), duration and
PostgreSQL version; then the WAL archived on each timeline, with any gaps
and how far the agent has streamed it; then
incomplete backups (in progress, or interrupted: garbage that expire removes).`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, cat, err := a.openCatalog(cmd)
			if err != nil {
				return err
			}
			id, ix := cat.Identity, cat.WAL
			var backups []backupSummary
			for _, m := range cat.Backups {
				backups = append(backups, summarize(m))
			}
			var incomplete []incompleteBackup
			for _, e := range cat.Incomplete() {
				incomplete = append(incomplete, incompleteBackup{ID: e.ID, Objects: e.Objects, Stored: e.Stored, LastWrite: e.Modified})
			}
			if asJSON {
				out := struct {
					Repository       string             `json:"repository"`
					SystemIdentifier string             `json:"system_identifier"`
					PGMajor          int                `json:"pg_major"`
					Backups          []backupSummary    `json:"backups"`
					WAL              *catalog.WALIndex  `json:"wal"`
					Incomplete       []incompleteBackup `json:"incomplete_backups"`
				}{r.Location(), id.SystemIDString, id.PGMajor, nonNil(backups), ix, nonNil(incomplete)}
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "repository %s: cluster %s, PostgreSQL %d\n\n", r.Location(), id.SystemIDString, id.PGMajor)
			if len(backups) == 0 {
				fmt.Fprintln(w, "no complete backups")
			} else {
				fmt.Fprintln(w, "BACKUP\tTYPE\tPARENT\tCHAIN\tSTARTED\tSTOPPED\tSTART LSN\tSTOP LSN\tTL\tSIZE\tSTORED\tDURATION\tPG")
				for _, b := range backups {
					parent := b.Parent
					if parent == "" {
						parent = "-"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%d\n", b.ID, b.Type, parent, b.Chain, b.StartTime.Format(time.DateTime), b.StopTime.Format(time.DateTime),
						b.StartLSN, b.StopLSN, b.Timeline, units.Bytes(b.Size), units.Bytes(b.Stored),
						units.Duration(time.Duration(b.DurationSec*float64(time.Second))), b.PGVersion)
				}
			}
			fmt.Fprintln(w)
			if len(ix.Timelines) == 0 {
				fmt.Fprintln(w, "no archived WAL")
			} else {
				fmt.Fprintln(w, "TIMELINE\tFIRST SEGMENT\tLAST SEGMENT\tSEGMENTS\tSTORED\tGAPS\tSTREAMED")
				for _, t := range ix.Timelines {
					gaps := "none"
					if len(t.Gaps) > 0 {
						gaps = ""
						for i, g := range t.Gaps {
							if i > 0 {
								gaps += ", "
							}
							gaps += g.From + ".." + g.To
						}
					}
					streamed := "-"
					if n := len(t.Streamed); n > 0 {
						last := t.Streamed[n-1]
						streamed = fmt.Sprintf("%s to LSN %s", last.Segment, last.EndLSN)
						if last.Hole {
							streamed += fmt.Sprintf(" (hole at offset %#x)", last.End)
						}
					}
					if t.GarbagePieces > 0 {
						streamed += fmt.Sprintf("; %d pieces of whole segments (expire removes them)", t.GarbagePieces)
					}
					fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", t.Timeline, t.First, t.Last, t.Segments, units.Bytes(t.Bytes), gaps, streamed)
				}
			}
			if len(incomplete) > 0 {
				fmt.Fprintln(w)
				fmt.Fprintln(w, "INCOMPLETE BACKUP\tOBJECTS\tSTORED\tLAST WRITE\t(in progress, or interrupted: garbage)")
				for _, b := range incomplete {
					fmt.Fprintf(w, "%s\t%d\t%s\t%s\t\n", b.ID, b.Objects, units.Bytes(b.Stored), b.LastWrite.Format(time.DateTime))
				}
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}

type incompleteBackup struct {
	ID        string    `json:"id"`
	Objects   int       `json:"objects"`
	Stored    int64     `json:"stored"`
	LastWrite time.Time `json:"last_write"`
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
