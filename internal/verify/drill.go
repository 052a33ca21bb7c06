package verify

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgkeep/pgkeep/internal/pgctl"
	"github.com/pgkeep/pgkeep/internal/pgversion"
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
	// BinDir is the directory of the server programs (postgres, pg_ctl)
	// of the backup's major version; "" looks where packages install them
	// (pgctl.FindServer).
	BinDir string
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
	PGMajor         int        `json:"pg_major"`
	Check           string     `json:"check"` // how the restored cluster was checked
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
	// The server that replays must be the backup's major (one repository
	// holds one cluster, so the repository's major is every backup's).
	id, err := r.Identity(ctx)
	if err != nil {
		return nil, fmt.Errorf("restore drill: %w", err)
	}
	if err := pgversion.Check(id.PGMajor, "the repository's cluster"); err != nil {
		return nil, fmt.Errorf("restore drill: %w", err)
	}
	runner, err := pgctl.NewFor(id.PGMajor, opts.BinDir)
	if err != nil {
		return nil, fmt.Errorf("restore drill of a PostgreSQL %d backup: %w; install PostgreSQL %d's server programs, or give their directory with --pg-bindir", id.PGMajor, err, id.PGMajor)
	}
	check := checkFor(id.PGMajor)
	if check.program != "" && !fileExists(runner.Path(check.program)) {
		return nil, fmt.Errorf("restore drill of a PostgreSQL %d backup: %s not found in %s or %q (it comes with PostgreSQL 14 or later's client programs)", id.PGMajor, check.program, runner.BinDir, runner.ClientDir)
	}
	ws, err := os.MkdirTemp("", "pgkeep-drill-")
	if err != nil {
		return nil, err
	}
	os.Chmod(ws, 0o755)
	out := &DrillReport{PGMajor: id.PGMajor, Check: check.name}
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
	if err := cluster.WaitRecovered(ctx, opts.Timeout, id.PGMajor, true); err != nil {
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
	rep.Logf("drill: recovered to LSN %s; checking %d databases with %s", lsn, out.Databases, check.name)
	amOut, err := check.run(ctx, runner, cluster)
	out.AmcheckOutput = amOut
	if err != nil {
		out.Failure = fmt.Sprintf("%s found problems: %v", check.name, err)
		return out, nil
	}
	out.OK = true
	return out, nil
}

// clusterCheck is how the drill checks the restored cluster with amcheck.
type clusterCheck struct {
	name    string
	program string // a client program it needs, or ""
	run     func(ctx context.Context, r *pgctl.Runner, c *pgctl.Cluster) (string, error)
}

// The checks of each major (amcheck's "pg_amcheck" and "amcheck" pages of
// each release's manual; the amcheck extension's versions were checked on
// each major's build: 1.2 on 12 and 13, 1.3 on 14, 1.5 on 18).
var (
	// PostgreSQL 12 and 13: amcheck 1.2 has no verify_heapam, which
	// pg_amcheck needs; bt_index_check(index, heapallindexed) checks every
	// B-tree index and that each heap tuple it should index is there.
	checkIndexes = clusterCheck{name: "bt_index_check(heapallindexed)", run: checkBtrees}
	// PostgreSQL 14 and later: pg_amcheck checks heap and B-tree pages of
	// every database.
	checkPgAmcheck = clusterCheck{name: "pg_amcheck", program: "pg_amcheck", run: func(ctx context.Context, r *pgctl.Runner, c *pgctl.Cluster) (string, error) {
		return r.Run(ctx, c.Env(), "pg_amcheck", "--all", "--install-missing", "--heapallindexed")
	}}
)

func checkFor(major int) clusterCheck {
	if major < 14 {
		return checkIndexes
	}
	return checkPgAmcheck
}

// checkBtrees runs bt_index_check with heapallindexed on every valid
// B-tree index of every database that allows connections, installing
// amcheck where it is missing.
func checkBtrees(ctx context.Context, _ *pgctl.Runner, c *pgctl.Cluster) (string, error) {
	conn, err := pgx.Connect(ctx, c.ConnString())
	if err != nil {
		return "", err
	}
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname`)
	var dbs []string
	if err == nil {
		for rows.Next() {
			var db string
			if err = rows.Scan(&db); err != nil {
				break
			}
			dbs = append(dbs, db)
		}
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	conn.Close(ctx)
	if err != nil {
		return "", fmt.Errorf("listing databases: %w", err)
	}
	var out strings.Builder
	for _, db := range dbs {
		n, err := checkBtreesIn(ctx, c, db)
		if err != nil {
			return out.String(), fmt.Errorf("database %q: %w", db, err)
		}
		fmt.Fprintf(&out, "database %q: %d B-tree indexes checked\n", db, n)
	}
	return out.String(), nil
}

func checkBtreesIn(ctx context.Context, c *pgctl.Cluster, db string) (int, error) {
	cfg, err := pgx.ParseConfig(c.ConnString())
	if err != nil {
		return 0, err
	}
	cfg.Database = db
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return 0, err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS amcheck`); err != nil {
		return 0, fmt.Errorf("installing amcheck: %w", err)
	}
	var n int
	err = conn.QueryRow(ctx, `SELECT count(bt_index_check(c.oid, true))
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
		WHERE am.amname = 'btree' AND c.relpersistence <> 't' AND i.indisvalid AND i.indisready`).Scan(&n)
	return n, err
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
