package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/pgtest"
	"github.com/pgkeep/pgkeep/internal/pgversion"
)

// TestVersions runs the main story on every supported major, side by side
// (the rest of the suite runs on the default PostgreSQL, 15): archive under
// writes, a backup while writes go on, PITR to a restore point, a restore
// of the latest with every committed row back, verify, and the verify
// --restore drill; the agent streams beside archive_command all along, and
// the restore replays its streamed tail. Server programs of the majors other than Debian's come
// from scripts/test-deps.sh; with CI=true a missing one fails.
func TestVersions(t *testing.T) {
	for _, major := range pgversion.Majors() {
		t.Run(strconv.Itoa(major), func(t *testing.T) {
			t.Parallel()
			began := time.Now()
			versionStory(t, major)
			t.Logf("PostgreSQL %d: %.1fs", major, time.Since(began).Seconds())
		})
	}
}

func versionStory(t *testing.T, major int) {
	repo := fileRepo(t)
	c := archivingClusterOf(t, major, repo, nil)
	if c.Major != major {
		t.Fatalf("asked for PostgreSQL %d, the harness started %d", major, c.Major)
	}
	if got := c.QueryString(t, "SELECT current_setting('server_version_num')"); !strings.HasPrefix(got, strconv.Itoa(major)) {
		t.Fatalf("server_version_num %s on a PostgreSQL %d cluster", got, major)
	}
	// The agent streams beside archive_command: both store the completed
	// segments, and agree.
	ag := startAgent(t, c, repo)
	pgtest.Pgbench(t, c, "-i", "-q", "-s", "1")
	c.Exec(t, "CREATE TABLE markers (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")

	// Archive and back up while pgbench writes.
	stop := pgbenchOn(t, c, "-n", "-c", "2", "-R", "150", "-T", "120")
	time.Sleep(time.Second)
	switchAndWait(t, c)
	id := backup(t, c, repo)
	switchAndWait(t, c)
	stop()

	// Markers around a restore point, then the end of the archive.
	for i := 1; i <= 10; i++ {
		if i == 6 {
			c.Exec(t, "SELECT pg_create_restore_point('versions-before-6')")
		}
		c.Exec(t, fmt.Sprintf("INSERT INTO markers (id) VALUES (%d)", i))
	}
	if c.QueryString(t, "SELECT count(*)::text FROM pgbench_history") == "0" {
		t.Fatal("pgbench wrote nothing while the backup ran")
	}
	// Changes for an incremental backup on this major's WAL records: an
	// update, a new table, a truncation, a drop, a database copied file
	// by file.
	c.Exec(t, "UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid <= 20000")
	c.Exec(t, "CREATE TABLE grown AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g")
	c.Exec(t, "TRUNCATE pgbench_history")
	c.Exec(t, "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) SELECT 1, 1, g, g, now() FROM generate_series(1, 500) g")
	c.Exec(t, "DROP TABLE pgbench_tellers")
	c.Exec(t, "CREATE DATABASE copied TEMPLATE template1")
	want := map[string]string{}
	for _, q := range []string{
		"SELECT count(*)::text FROM pgbench_accounts",
		"SELECT sum(abalance)::text FROM pgbench_accounts",
		"SELECT count(*)::text FROM pgbench_history",
		"SELECT sum(delta)::text FROM pgbench_history",
		"SELECT count(DISTINCT h)::text FROM grown",
		"SELECT count(*)::text FROM pg_class WHERE relname = 'pgbench_tellers'",
	} {
		want[q] = c.QueryString(t, q)
	}
	inc, _ := takeBackup(t, c, repo)
	if inc.Type != "incremental" || inc.Parent != id {
		t.Fatalf("the second backup on PostgreSQL %d: %+v, want an incremental one on %s", major, inc, id)
	}
	switchAndWait(t, c)
	// A commit only the agent's streamed tail holds.
	c.Exec(t, "INSERT INTO markers (id) VALUES (11)")
	waitAgentFlushed(t, c, ag)
	if !strings.Contains(ag.Log(), "complete: ") || strings.Contains(ag.Log(), "retrying") {
		t.Errorf("PostgreSQL %d: the agent stored no segment, or had to reconnect:\n%s", major, ag.Log())
	}
	ag.Kill()
	c.Stop(t, "immediate")
	os.RemoveAll(c.DataDir)

	l := list(t, repo)
	if len(l.Backups) != 2 || l.Backups[0].ID != id || l.Backups[1].ID != inc.ID {
		t.Fatalf("list: %+v", l.Backups)
	}
	ls := mustRun(t, nil, append([]string{"list", "--json"}, repo.Flags()...)...)
	if !strings.Contains(ls.stdout, fmt.Sprintf(`"pg_major": %d`, major)) {
		t.Fatalf("the repository does not record PostgreSQL %d:\n%s", major, ls.stdout)
	}

	// PITR to the restore point: exactly the markers before it.
	// (A named target says nothing pgkeep can place: the backup before it
	// is named.)
	p := restoreAndStart(t, repo, "--target-name", "versions-before-6", "--backup", id, "--archive-off")
	if got := markers(t, p); got != seq(1, 5) {
		t.Fatalf("PITR to the restore point: markers %q, want %q", got, seq(1, 5))
	}
	p.Stop(t, "fast")

	// The incremental backup at its own consistent point: what the
	// cluster held when it was taken (nothing was written meanwhile).
	ri := restoreAndStart(t, repo, "--backup", inc.ID, "--target-immediate", "--archive-off")
	for q, w := range want {
		if got := ri.QueryString(t, q); got != w {
			t.Errorf("incremental backup on PostgreSQL %d: %s: %s, want %s", major, q, got, w)
		}
	}
	amcheckOf(t, ri, major)
	ri.Stop(t, "fast")

	// The latest: replay to the end of the archive, the streamed tail
	// included, every committed row.
	r := restoreAndStart(t, repo)
	if got := markers(t, r); got != seq(1, 11) {
		t.Fatalf("restore of the latest: markers %q", got)
	}
	for q, w := range want {
		if got := r.QueryString(t, q); got != w {
			t.Errorf("%s: %s, want %s", q, got, w)
		}
	}
	r.Stop(t, "fast")

	if res := run(t, nil, append([]string{"verify"}, repo.Flags()...)...); res.code != 0 {
		t.Fatalf("verify: %s", res)
	}
	res := mustRun(t, nil, append([]string{"verify", "--restore", "--json", "--pg-bindir", pgtest.BinDirFor(t, major)}, repo.Flags()...)...)
	var out struct {
		OK    bool `json:"ok"`
		Drill struct {
			OK        bool   `json:"ok"`
			PGMajor   int    `json:"pg_major"`
			Check     string `json:"check"`
			Databases int    `json:"databases_checked"`
			LSN       string `json:"recovered_lsn"`
		} `json:"restore_drill"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatalf("%v\n%s", err, res.stdout)
	}
	check := "pg_amcheck"
	if major < 14 {
		check = "bt_index_check(heapallindexed)"
	}
	if !out.OK || !out.Drill.OK || out.Drill.PGMajor != major || out.Drill.Check != check || out.Drill.Databases < 2 || out.Drill.LSN == "" {
		t.Fatalf("drill on PostgreSQL %d: %+v\n%s", major, out, res.stdout)
	}
}

// pgbenchOn runs pgbench against c in the background; the returned func
// stops it.
func pgbenchOn(t *testing.T, c *pgtest.Cluster, args ...string) func() {
	t.Helper()
	cmd := c.Command(t.Context(), "pgbench", args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
	}
}

// amcheckOf checks a cluster of PostgreSQL major: pg_amcheck from 14 on,
// bt_index_check with heapallindexed on every B-tree index before (the
// amcheck of 12 and 13 has no heap checks).
func amcheckOf(t *testing.T, c *pgtest.Cluster, major int) {
	t.Helper()
	if major >= 14 {
		amcheck(t, c)
		return
	}
	c.Exec(t, "CREATE EXTENSION IF NOT EXISTS amcheck")
	n := c.QueryString(t, `SELECT count(bt_index_check(i.oid, true))::text FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
		JOIN pg_am a ON a.oid = i.relam WHERE a.amname = 'btree' AND i.relpersistence <> 't'`)
	if n == "0" {
		t.Fatal("no B-tree index checked")
	}
}
