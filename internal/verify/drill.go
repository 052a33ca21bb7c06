package verify

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgkeep/pgkeep/internal/pgctl"
	"github.com/pgkeep/pgkeep/internal/progress"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/restore"
)

// DrillOptions configures a restore drill.
type DrillOptions struct {
	BackupID           string
	Target             restore.Target
	Workers            int
	RestoreCommand     string
	RecoveryEndCommand string
	// Keep leaves the restored directory (stopped) for inspection.
	Keep     bool
	Timeout  time.Duration // for recovery; default 30 minutes
	Progress progress.Reporter
}

// DrillReport says what the drill measured.
type DrillReport struct {
	Backup          string     `json:"backup"`
	RestoreSeconds  float64    `json:"restore_seconds"`
	RecoverySeconds float64    `json:"recovery_seconds"`
	RecoveredLSN    string     `json:"recovered_lsn"`
	RecoveredTo     *time.Time `json:"recovered_to_commit_time,omitempty"`
	Databases       int        `json:"databases_checked"`
	AmcheckOutput   string     `json:"amcheck_output,omitempty"`
	OK              bool       `json:"ok"`
	Failure         string     `json:"failure,omitempty"`
	Dir             string     `json:"dir,omitempty"`
}

// Drill restores into a temporary directory, starts PostgreSQL on a free
// port, lets it replay to the end of the archive (or the target), runs
// pg_amcheck on every database, and cleans up. A failed check is reported
// in the DrillReport (OK false); an error means the drill itself could not
// run.
func Drill(ctx context.Context, r *repo.Repo, opts DrillOptions) (*DrillReport, error) {
	rep := opts.Progress
	if rep == nil {
		rep = progress.Nop{}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Minute
	}
	runner, err := pgctl.New()
	if err != nil {
		return nil, err
	}
	ws, err := os.MkdirTemp("", "pgkeep-drill-")
	if err != nil {
		return nil, err
	}
	os.Chmod(ws, 0o755)
	out := &DrillReport{}
	cluster := &pgctl.Cluster{R: runner, DataDir: filepath.Join(ws, "data"), Socket: filepath.Join(ws, "sock"), LogFile: filepath.Join(ws, "server.log")}
	defer func() {
		cluster.Stop(context.WithoutCancel(ctx), "immediate")
		if opts.Keep {
			out.Dir = ws
			return
		}
		os.RemoveAll(ws)
	}()

	began := time.Now()
	res, err := restore.Run(ctx, r, restore.Options{
		PGData: cluster.DataDir, BackupID: opts.BackupID, Target: opts.Target, Workers: opts.Workers,
		RestoreCommand: opts.RestoreCommand, RecoveryEndCommand: opts.RecoveryEndCommand, ArchiveOff: true, Progress: rep,
	})
	if err != nil {
		return nil, fmt.Errorf("restore drill: %w", err)
	}
	out.Backup = res.Backup.ID
	out.RestoreSeconds = time.Since(began).Seconds()
	if err := os.Mkdir(cluster.Socket, 0o755); err != nil {
		return nil, err
	}
	for _, p := range []string{ws, cluster.Socket} {
		if err := runner.Chown(p); err != nil {
			return nil, err
		}
	}
	if err := runner.ChownTree(cluster.DataDir); err != nil {
		return nil, err
	}
	for _, loc := range res.Tablespaces {
		if err := runner.ChownTree(loc); err != nil {
			return nil, err
		}
	}
	if cluster.Port, err = pgctl.FreePort(); err != nil {
		return nil, err
	}
	rep.Logf("drill: starting PostgreSQL on port %d to replay the archived WAL", cluster.Port)
	recStart := time.Now()
	if err := cluster.Start(ctx); err != nil {
		out.Failure = fmt.Sprintf("the restored cluster did not start: %v", err)
		return out, nil
	}
	if err := waitOpen(ctx, cluster, opts.Timeout); err != nil {
		out.Failure = err.Error()
		return out, nil
	}
	out.RecoverySeconds = time.Since(recStart).Seconds()
	conn, err := pgx.Connect(ctx, cluster.ConnString())
	if err != nil {
		out.Failure = fmt.Sprintf("connecting to the restored cluster: %v", err)
		return out, nil
	}
	var lsn string
	var ts *time.Time
	conn.QueryRow(ctx, `SELECT coalesce(pg_last_wal_replay_lsn(), pg_current_wal_lsn())::text, pg_last_xact_replay_timestamp()`).Scan(&lsn, &ts)
	conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datallowconn`).Scan(&out.Databases)
	conn.Close(ctx)
	out.RecoveredLSN, out.RecoveredTo = lsn, ts
	rep.Logf("drill: recovered to LSN %s; running pg_amcheck on %d databases", lsn, out.Databases)
	amOut, err := runner.Run(ctx, cluster.Env(), "pg_amcheck", "--all", "--install-missing", "--heapallindexed")
	out.AmcheckOutput = amOut
	if err != nil {
		out.Failure = fmt.Sprintf("pg_amcheck found problems: %v", err)
		return out, nil
	}
	out.OK = true
	return out, nil
}

// waitOpen waits until the cluster accepts connections and is out of
// recovery, or has paused at its target (still in recovery, but replay
// paused), or has shut down at its target.
func waitOpen(ctx context.Context, c *pgctl.Cluster, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		conn, err := pgx.Connect(ctx, c.ConnString())
		if err == nil {
			var rec bool
			var paused string
			err = conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() ELSE '' END`).Scan(&rec, &paused)
			conn.Close(ctx)
			if err == nil && (!rec || paused == "paused") {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	log, _ := os.ReadFile(c.LogFile)
	return fmt.Errorf("the restored cluster did not finish recovery within %s; server log:\n%s", timeout, pgctl.Tail(string(log), 40))
}
