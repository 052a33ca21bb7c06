package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/pgkeep/pgkeep/internal/backup"
	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/retention"
	"github.com/pgkeep/pgkeep/internal/units"
	"github.com/pgkeep/pgkeep/internal/verify"
)

// BackupWork takes a base backup into r in this process (backup.Run, as
// pgkeep backup does). Its WAL reaches the repository through the agent's
// own stream (or archive_command): backup.Run waits until each segment
// from the backup's start to its stop is stored whole, which the stream
// does when the segment is complete, and pg_backup_stop switches to a new
// segment, so the last one completes at once.
func BackupWork(r *repo.Repo, opts backup.Options) Work {
	return func(ctx context.Context) (string, error) {
		res, err := backup.Run(ctx, r, opts)
		if err != nil {
			return "", fmt.Errorf("taking a base backup: %w", err)
		}
		m := res.Manifest
		kind := "full"
		if m.Incremental() {
			kind = fmt.Sprintf("incremental on %s, chain %d", m.Parent, m.Chain)
		}
		line := fmt.Sprintf("backup %s (%s): %s stored of %s in %d files, WAL %s..%s on timeline %d",
			m.ID, kind, units.Bytes(m.Stored), units.Bytes(m.Size), m.FileCount, m.StartLSN, m.StopLSN, m.Timeline)
		if n := len(res.ChecksumFailures); n > 0 {
			return "", fmt.Errorf("%s is complete, but %d pages failed their checksum (%s): the cluster has corrupt pages", line, n, strings.Join(res.ChecksumFailures[:min(n, 3)], "; "))
		}
		for _, w := range res.Warnings {
			line += "; WARNING: " + w
		}
		return line, nil
	}
}

// ExpireWork applies retention with policy p, as pgkeep expire does.
func ExpireWork(r *repo.Repo, p retention.Policy) Work {
	return func(ctx context.Context) (string, error) {
		cat, err := catalog.Load(ctx, r)
		if err != nil {
			return "", fmt.Errorf("reading the repository for retention: %w", err)
		}
		in, err := retention.Gather(ctx, r, cat, time.Now())
		if err != nil {
			return "", fmt.Errorf("gathering what retention decides on: %w", err)
		}
		plan, err := retention.MakePlan(in, p)
		if err != nil {
			return "", fmt.Errorf("planning retention: %w", err)
		}
		if err := retention.Apply(ctx, r, plan, func(string, ...any) {}); err != nil {
			return "", fmt.Errorf("applying retention: %w", err)
		}
		var ids []string
		for _, d := range plan.Expire {
			ids = append(ids, d.ID)
		}
		removed := "no backup"
		if len(ids) > 0 {
			removed = fmt.Sprintf("%d backups (%s)", len(ids), strings.Join(ids, ", "))
		}
		return fmt.Sprintf("removed %s, %d incomplete ones, %d WAL files and %d streamed pieces; kept %d backups",
			removed, len(plan.Garbage), len(plan.DeleteWAL), len(plan.DeletePieces), len(plan.Keep)), nil
	}
}

// VerifyWork re-verifies every complete backup and the WAL, as pgkeep
// verify does (without the restore drill). Damage is a failed run.
func VerifyWork(r *repo.Repo, workers int) Work {
	return func(ctx context.Context) (string, error) {
		rep, err := verify.Run(ctx, r, verify.Options{Workers: workers})
		if err != nil {
			return "", fmt.Errorf("verifying: %w", err)
		}
		var objs int
		var bytes int64
		for _, b := range rep.Backups {
			objs += b.Objects
			bytes += b.Bytes
		}
		line := fmt.Sprintf("%d backups (%d objects, %s) and %d WAL files read back", len(rep.Backups), objs, units.Bytes(bytes), rep.WALChecked)
		if !rep.OK {
			var ps []string
			for _, p := range rep.Problems() {
				ps = append(ps, p.String())
			}
			return "", fmt.Errorf("%s: %d problems: %s", line, len(ps), strings.Join(ps[:min(len(ps), 5)], "; "))
		}
		return line + ": no problems", nil
	}
}

// LastBackup returns when the newest complete backup in r finished (zero
// when there is none).
func LastBackup(r *repo.Repo) func(context.Context) (time.Time, error) {
	return func(ctx context.Context) (time.Time, error) {
		m, err := catalog.Newest(ctx, r)
		if err != nil {
			return time.Time{}, err
		}
		if m == nil {
			return time.Time{}, nil
		}
		return m.StopTime, nil
	}
}
