package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pgkeep/pgkeep/internal/retention"
	"github.com/spf13/cobra"
)

func (a *app) newExpireCmd() *cobra.Command {
	var (
		policy         retention.Policy
		keepWithin     string
		dryRun, asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "expire",
		Short: "Apply retention: remove old backups and the WAL nothing needs",
		Long: `Remove backups outside the retention policy, the WAL that no kept backup
needs any more (timeline by timeline; history files always stay), and what
interrupted backups left behind.

  --keep N             keep the newest N complete backups
  --keep-within 14d    keep every moment of the last 14 days restorable

Both may be given; a backup kept by either stays. The newest complete backup
and pinned backups (pgkeep pin) are never removed. WAL that a backup still
running needs is never removed. expire only deletes, never rewrites, and an
interrupted run is finished by the next one. --dry-run prints the plan.`,
		Example: `  pgkeep expire --keep 7 --keep-within 14d --dry-run`,
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if keepWithin != "" {
				d, err := parseDays(keepWithin)
				if err != nil {
					return &usageError{fmt.Errorf("--keep-within: %w", err)}
				}
				policy.KeepWithin = d
			}
			if policy.KeepCount <= 0 && policy.KeepWithin <= 0 {
				return &usageError{errors.New("expire needs a policy: --keep N and/or --keep-within DURATION (e.g. 14d)")}
			}
			r, cat, err := a.openCatalog(cmd)
			if err != nil {
				return err
			}
			in, err := retention.Gather(cmd.Context(), r, cat, time.Now())
			if err != nil {
				return err
			}
			plan, err := retention.MakePlan(in, policy)
			if err != nil {
				return &usageError{err}
			}
			if asJSON && dryRun {
				return a.printJSON(plan)
			}
			if dryRun {
				fmt.Fprint(a.stdout, plan.String())
				return nil
			}
			log := func(format string, args ...any) {
				if !asJSON {
					fmt.Fprintf(a.stdout, format+"\n", args...)
				}
			}
			if err := retention.Apply(cmd.Context(), r, plan, log); err != nil {
				return err
			}
			if asJSON {
				return a.printJSON(plan)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&policy.KeepCount, "keep", 0, "keep the newest N complete backups")
	f.StringVar(&keepWithin, "keep-within", "", "keep every moment of this recent span restorable (e.g. 36h, 14d)")
	f.DurationVar(&policy.GarbageAge, "garbage-age", 6*time.Hour, "remove an incomplete backup once it has not been written for this long")
	f.BoolVar(&dryRun, "dry-run", false, "print the plan and change nothing")
	f.BoolVar(&asJSON, "json", false, "print the plan as JSON")
	return cmd
}

// parseDays accepts Go durations plus a d (days) suffix.
func parseDays(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		var days float64
		if _, err := fmt.Sscanf(n, "%g", &days); err != nil || days <= 0 {
			return 0, fmt.Errorf("%q is not a number of days", s)
		}
		return time.Duration(days * 24 * float64(time.Hour)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a duration like 36h or 14d", s)
	}
	return d, nil
}
