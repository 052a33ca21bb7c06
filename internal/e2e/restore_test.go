package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/pgtest"
)

// backup runs pgkeep backup against c and returns the backup id.
func backup(t *testing.T, c *pgtest.Cluster, repo repoSpec) string {
	t.Helper()
	r := mustRun(t, append(c.Env(), repo.Env...), append([]string{"backup", "--json"}, repo.Flags()...)...)
	i := strings.Index(r.stdout, `"id": "`)
	if i < 0 {
		t.Fatalf("backup --json printed no id: %s", r)
	}
	return r.stdout[i+7 : i+7+16]
}

// restoreAndStart restores into a new directory and starts a cluster there
// on a new port, waiting until recovery has finished.
func restoreAndStart(t *testing.T, repo repoSpec, extra ...string) *pgtest.Cluster {
	t.Helper()
	dir := filepath.Join(pgtest.TempDir(t, "restore-"), "data")
	mustRun(t, repo.Env, append(append([]string{"restore", "--pgdata", dir}, repo.Flags()...), extra...)...)
	c := pgtest.Adopt(t, dir, "") // the server of the backup's major
	c.Start(t)
	c.WaitPromoted(t, 3*time.Minute)
	// recovery_end_command removed the prefetch spool.
	if _, err := os.Stat(filepath.Join(dir, "pgkeep_prefetch")); err == nil {
		t.Errorf("the wal-fetch prefetch spool outlived recovery")
	}
	return c
}

func markers(t *testing.T, c *pgtest.Cluster) string {
	return c.QueryString(t, "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM markers")
}

// TestStoryEndToEnd is the demo's story with assertions: archive, back up
// under load, commit markers, lose the data directory, restore to the end
// of the archive with the repository as the only input (on another port),
// and check every committed row and pg_amcheck.
func TestStoryEndToEnd(t *testing.T) {
	for _, kind := range []string{"file", "s3"} {
		t.Run(kind, func(t *testing.T) {
			repo := fileRepo(t)
			if kind == "s3" {
				repo = s3Repo(t)
			}
			c := archivingCluster(t, repo, nil)
			pgtest.Pgbench(t, c, "-i", "-q", "-s", "3")
			c.Exec(t, "CREATE EXTENSION amcheck")
			c.Exec(t, "CREATE TABLE markers (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
			accounts := c.QueryString(t, "SELECT count(*)::text FROM pgbench_accounts")

			// A backup while pgbench writes.
			load := startPgbench(t, c, "-n", "-c", "2", "-T", "30")
			time.Sleep(500 * time.Millisecond)
			id := backup(t, c, repo)
			load()
			for i := 1; i <= 20; i++ {
				c.Exec(t, fmt.Sprintf("INSERT INTO markers (id) VALUES (%d)", i))
			}
			balance := c.QueryString(t, "SELECT sum(abalance)::text FROM pgbench_accounts")
			history := c.QueryString(t, "SELECT count(*)::text FROM pgbench_history")
			switchAndWait(t, c)
			c.Stop(t, "immediate")
			os.RemoveAll(c.DataDir)

			r := restoreAndStart(t, repo)
			if got := markers(t, r); got != seq(1, 20) {
				t.Fatalf("markers after restore: %q", got)
			}
			for q, want := range map[string]string{
				"SELECT count(*)::text FROM pgbench_accounts":      accounts,
				"SELECT sum(abalance)::text FROM pgbench_accounts": balance,
				"SELECT count(*)::text FROM pgbench_history":       history,
			} {
				if got := r.QueryString(t, q); got != want {
					t.Errorf("%s: %s, want %s", q, got, want)
				}
			}
			amcheck(t, r)
			ls := mustRun(t, repo.Env, append([]string{"list"}, repo.Flags()...)...)
			if !strings.Contains(ls.stdout, id) {
				t.Fatalf("list does not show backup %s:\n%s", id, ls.stdout)
			}
		})
	}
}

// TestPITR restores to targets by time, LSN, xid and name placed between
// marker commits; exactly the rows committed before the target are there.
func TestPITR(t *testing.T) {
	repo := fileRepo(t)
	c := archivingCluster(t, repo, nil)
	c.Exec(t, "CREATE TABLE markers (id int PRIMARY KEY)")
	backup(t, c, repo)
	var timeTarget, lsnTarget, xidTarget string
	for i := 1; i <= 8; i++ {
		switch i {
		case 3:
			// After marker 2, before marker 3.
			timeTarget = c.QueryString(t, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
			time.Sleep(1100 * time.Millisecond)
		case 5:
			lsnTarget = c.QueryString(t, "SELECT pg_current_wal_insert_lsn()::text")
		case 7:
			c.Exec(t, "SELECT pg_create_restore_point('before-7')")
		}
		if i == 6 {
			xidTarget = c.QueryString(t, "INSERT INTO markers (id) VALUES (6) RETURNING pg_current_xact_id()::text")
			continue
		}
		c.Exec(t, fmt.Sprintf("INSERT INTO markers (id) VALUES (%d)", i))
	}
	switchAndWait(t, c)

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"time", []string{"--target-time", timeTarget}, seq(1, 2)},
		{"lsn", []string{"--target-lsn", lsnTarget}, seq(1, 4)},
		{"xid", []string{"--target-xid", xidTarget}, seq(1, 6)},
		{"name", []string{"--target-name", "before-7"}, seq(1, 6)},
		{"end", nil, seq(1, 8)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := restoreAndStart(t, repo, append(tc.args, "--archive-off")...)
			if got := markers(t, r); got != tc.want {
				t.Fatalf("restore to %s %v: markers %q, want %q", tc.name, tc.args, got, tc.want)
			}
		})
	}
}

// TestTablespaces backs up a cluster with a tablespace and restores it both
// to the original location (after it is gone) and remapped.
func TestTablespaces(t *testing.T) {
	repo := fileRepo(t)
	c := archivingCluster(t, repo, nil)
	tsDir := filepath.Join(pgtest.TempDir(t, "ts-"), "space")
	if err := os.Mkdir(tsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	chownLike(t, tsDir, c.DataDir)
	c.Exec(t, fmt.Sprintf("CREATE TABLESPACE extra LOCATION '%s'", tsDir))
	c.Exec(t, "CREATE TABLE far (id int, pad text) TABLESPACE extra")
	c.Exec(t, "INSERT INTO far SELECT g, repeat('x', 100) FROM generate_series(1, 50000) g")
	oid := c.QueryString(t, "SELECT oid::text FROM pg_tablespace WHERE spcname = 'extra'")
	backup(t, c, repo)
	c.Exec(t, "INSERT INTO far SELECT g, 'after' FROM generate_series(50001, 50100) g")
	switchAndWait(t, c)

	t.Run("remapped", func(t *testing.T) {
		newTS := filepath.Join(pgtest.TempDir(t, "ts2-"), "moved")
		r := restoreAndStart(t, repo, "--tablespace-map", oid+"="+newTS, "--archive-off")
		if got := r.QueryString(t, "SELECT count(*)::text FROM far"); got != "50100" {
			t.Fatalf("rows in the remapped tablespace: %s", got)
		}
		link, err := os.Readlink(filepath.Join(r.DataDir, "pg_tblspc", oid))
		if err != nil || link != newTS {
			t.Fatalf("tablespace link %q (%v), want %s", link, err, newTS)
		}
	})
	t.Run("original location must be empty", func(t *testing.T) {
		dir := filepath.Join(pgtest.TempDir(t, "restore-"), "data")
		res := run(t, repo.Env, append([]string{"restore", "--pgdata", dir}, repo.Flags()...)...)
		if res.code == 0 || !strings.Contains(res.stderr, "--tablespace-map") {
			t.Fatalf("restoring over a live tablespace must be refused with a hint to remap: %s", res)
		}
	})
	t.Run("original location", func(t *testing.T) {
		c.Stop(t, "immediate")
		os.RemoveAll(tsDir)
		r := restoreAndStart(t, repo, "--archive-off")
		if got := r.QueryString(t, "SELECT count(*)::text FROM far"); got != "50100" {
			t.Fatalf("rows in the tablespace: %s", got)
		}
	})
}

// TestRestoreRefusals covers every refusal of restore.
func TestRestoreRefusals(t *testing.T) {
	repo := fileRepo(t)
	c := archivingCluster(t, repo, nil)
	c.Exec(t, "CREATE TABLE t (id int)")
	id := backup(t, c, repo)
	switchAndWait(t, c)
	m := readManifestTimes(t, repo, id)

	dir := func() string { return filepath.Join(pgtest.TempDir(t, "restore-"), "data") }
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"non-empty directory", []string{"--pgdata", c.DataDir}, 3, "not empty"},
		{"no pgdata", nil, 2, "--pgdata"},
		{"unknown backup", []string{"--pgdata", dir(), "--backup", "20200101T000000Z"}, 1, "no complete backup"},
		{"time before the earliest backup", []string{"--pgdata", dir(), "--target-time", m.Add(-time.Hour).Format(time.RFC3339)}, 1, "before the earliest restorable moment"},
		{"time past the archive", []string{"--pgdata", dir(), "--target-time", time.Now().Add(time.Hour).Format(time.RFC3339)}, 1, "past the end of the archived WAL"},
		{"lsn past the archive", []string{"--pgdata", dir(), "--target-lsn", "FF/0"}, 1, "past the end of the archived WAL"},
		{"two targets", []string{"--pgdata", dir(), "--target-xid", "5", "--target-name", "x"}, 2, "at most one"},
		{"bad action", []string{"--pgdata", dir(), "--target-immediate", "--target-action", "explode"}, 2, "promote, pause or shutdown"},
		{"bad tablespace map", []string{"--pgdata", dir(), "--tablespace-map", "abc"}, 2, "OID=/absolute/path"},
		{"unknown tablespace", []string{"--pgdata", dir(), "--tablespace-map", "99999=/tmp/x"}, 1, "no tablespace with OID 99999"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, repo.Env, append(append([]string{"restore"}, repo.Flags()...), tc.args...)...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("want exit %d with %q, got %s", tc.code, tc.want, r)
			}
		})
	}
	t.Run("running server's directory", func(t *testing.T) {
		r := run(t, repo.Env, append(append([]string{"restore"}, repo.Flags()...), "--pgdata", c.DataDir)...)
		if !strings.Contains(r.stderr, "postmaster.pid") {
			t.Fatalf("want the refusal to mention the running server, got %s", r)
		}
	})
}

// readManifestTimes returns the stop time of backup id from list --json.
func readManifestTimes(t *testing.T, repo repoSpec, id string) time.Time {
	t.Helper()
	r := mustRun(t, repo.Env, append([]string{"list", "--json"}, repo.Flags()...)...)
	i := strings.Index(r.stdout, `"stop_time": "`)
	if i < 0 {
		t.Fatalf("no stop_time in %s", r.stdout)
	}
	s := r.stdout[i+len(`"stop_time": "`):]
	s = s[:strings.Index(s, `"`)]
	tm, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func seq(from, to int) string {
	var s []string
	for i := from; i <= to; i++ {
		s = append(s, strconv.Itoa(i))
	}
	return strings.Join(s, ",")
}

func amcheck(t *testing.T, c *pgtest.Cluster) {
	t.Helper()
	cmd := pgtest.Command(t.Context(), filepath.Join(pgtest.BinDir(t), "pg_amcheck"), "--all", "--heapallindexed", "--install-missing")
	cmd.Env = append(cmd.Env, c.Env()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("pg_amcheck on the restored cluster: %v\n%s", err, out)
	}
}

// startPgbench runs pgbench in the background; the returned func stops it.
func startPgbench(t *testing.T, c *pgtest.Cluster, args ...string) func() {
	t.Helper()
	cmd := pgtest.Command(t.Context(), filepath.Join(pgtest.BinDir(t), "pgbench"), args...)
	cmd.Env = append(cmd.Env, c.Env()...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}
}

func chownLike(t *testing.T, path, like string) {
	t.Helper()
	st, err := os.Stat(like)
	if err != nil {
		t.Fatal(err)
	}
	uid, gid := ownerOf(st)
	os.Chown(path, uid, gid)
	os.Chown(filepath.Dir(path), uid, gid)
}
