package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pgkeep/pgkeep/internal/pgtest"
)

// backupInfo is what backup --json says about a backup.
type backupInfo struct {
	ID     string `json:"id"`
	Type   string `json:"type"`
	Parent string `json:"parent"`
	Chain  int    `json:"chain"`
	Size   int64  `json:"size"`
	Stored int64  `json:"stored"`
}

// takeBackup runs pgkeep backup --json with extra flags.
func takeBackup(t *testing.T, c *pgtest.Cluster, repo repoSpec, extra ...string) (backupInfo, result) {
	t.Helper()
	r := mustRun(t, append(c.Env(), repo.Env...), append(append([]string{"backup", "--json"}, repo.Flags()...), extra...)...)
	var out struct {
		Backup backupInfo `json:"backup"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("backup --json: %v\n%s", err, r)
	}
	return out.Backup, r
}

// dumpAll is pg_dumpall of a cluster, without the lines that name the
// dump's own run.
func dumpAll(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	cmd := pgtest.Command(t.Context(), filepath.Join(pgtest.BinDir(t), "pg_dumpall"), "--no-role-passwords")
	cmd.Env = append(cmd.Env, c.Env()...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("pg_dumpall: %v", err)
	}
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		// \restrict and \unrestrict carry a random key of each run.
		if strings.HasPrefix(l, "-- Dumped") || strings.HasPrefix(l, "-- Started on") || strings.HasPrefix(l, "-- Completed on") ||
			strings.HasPrefix(l, "\\restrict ") || strings.HasPrefix(l, "\\unrestrict ") {
			continue
		}
		keep = append(keep, l)
	}
	if len(keep) < 100 {
		t.Fatalf("pg_dumpall printed only %d lines", len(keep))
	}
	return strings.Join(keep, "\n")
}

// restoreAt restores backup id with --target-immediate and --archive-off
// into a new directory (or, with extra --delta, into dir) and starts it.
func restoreAt(t *testing.T, repo repoSpec, dir, id string, extra ...string) (*pgtest.Cluster, result) {
	t.Helper()
	if dir == "" {
		dir = filepath.Join(pgtest.TempDir(t, "restore-"), "data")
	}
	args := append([]string{"restore", "--json", "--pgdata", dir, "--backup", id, "--target-immediate", "--archive-off"}, repo.Flags()...)
	r := mustRun(t, repo.Env, append(args, extra...)...)
	return startRestored(t, dir), r
}

// firstDiff shows where two dumps first differ.
func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return "line " + strconv.Itoa(i+1) + ":\n  " + al[i] + "\n  " + bl[i]
		}
	}
	return "one is a prefix of the other"
}

// TestIncrementalChain is issue 16's proof of correctness: a full backup,
// then incremental ones while pgbench writes and DDL, truncations, drops
// and a file-copied database go on; then, with the cluster quiet, the last
// incremental and a full backup of the same moment. Both restored to
// their consistent point must give the same pg_dumpall and pass
// pg_amcheck; a delta restore onto a cluster that diverged must too.
func TestIncrementalChain(t *testing.T) {
	repo := fileRepo(t)
	c := archivingCluster(t, repo, map[string]string{"autovacuum": "off"})
	pgtest.Pgbench(t, c, "-i", "-q", "-s", "5")
	c.Exec(t, "CREATE EXTENSION amcheck")
	c.Exec(t, "CREATE TABLE doomed AS SELECT g, md5(g::text) AS h FROM generate_series(1, 50000) g")
	c.Exec(t, "CREATE TABLE shrinking AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 100000) g")
	c.Exec(t, "CREATE UNLOGGED TABLE logged_later AS SELECT g FROM generate_series(1, 20000) g")
	c.Exec(t, "CREATE TABLE extended (id int PRIMARY KEY, v text)")

	full, _ := takeBackup(t, c, repo)
	if full.Type != "full" || full.Parent != "" || full.Chain != 0 {
		t.Fatalf("the first backup: %+v, want a full one", full)
	}

	// Writes go on during the incremental backups, at a rate that leaves
	// most of the data unchanged.
	stop := startPgbench(t, c, "-n", "-c", "2", "-R", "20", "-T", "600")
	defer stop()
	c.Exec(t, "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN 1000 AND 6000")
	c.Exec(t, "INSERT INTO extended SELECT g, md5(g::text) FROM generate_series(1, 30000) g")
	inc1, _ := takeBackup(t, c, repo)
	if inc1.Type != "incremental" || inc1.Parent != full.ID || inc1.Chain != 1 {
		t.Fatalf("the second backup: %+v, want an incremental one on %s", inc1, full.ID)
	}
	if inc1.Stored*3 > full.Stored {
		t.Errorf("incremental %s stores %d bytes, the full one %d: it should store much less", inc1.ID, inc1.Stored, full.Stored)
	}

	// The summaries of the WAL since inc1 lost, and pg_wal recycled past
	// it: the next incremental backup compares chunks instead, and says so.
	// First let the archiver catch up: a segment the backup archived
	// itself is pushed again by the archiver, which stores its summary
	// again.
	switchAndWait(t, c)
	root := strings.TrimPrefix(repo.URL, "file://")
	os.RemoveAll(filepath.Join(root, "summaries"))
	switchAndWait(t, c)
	c.Exec(t, "CHECKPOINT")
	// What PostgreSQL recycles in its own time: the archived segments
	// before the current one.
	current := c.QueryString(t, "SELECT pg_walfile_name(pg_current_wal_lsn())")
	walDir := filepath.Join(c.DataDir, "pg_wal")
	done, _ := filepath.Glob(filepath.Join(walDir, "archive_status", "*.done"))
	for _, d := range done {
		if seg := strings.TrimSuffix(filepath.Base(d), ".done"); len(seg) == 24 && seg < current {
			os.Remove(filepath.Join(walDir, seg))
		}
	}

	// DDL: a truncation by VACUUM, a drop, a database copied file by file
	// (no WAL for its files), SET LOGGED (a new relfilenode), VACUUM FULL.
	c.Exec(t, "DELETE FROM shrinking WHERE g > 30000")
	c.Exec(t, "VACUUM shrinking")
	c.Exec(t, "DROP TABLE doomed")
	c.Exec(t, "CREATE DATABASE copied STRATEGY FILE_COPY")
	c.Exec(t, "ALTER TABLE logged_later SET LOGGED")
	c.Exec(t, "VACUUM FULL pgbench_branches")
	c.Exec(t, "CREATE INDEX ON extended (v)")
	c.Exec(t, "UPDATE extended SET v = 'changed' WHERE id % 1000 = 0")
	inc2, r2 := takeBackup(t, c, repo)
	if inc2.Parent != inc1.ID || inc2.Chain != 2 {
		t.Fatalf("the third backup: %+v, want an incremental one on %s", inc2, inc1.ID)
	}
	if !strings.Contains(r2.stdout, "no WAL summary") || !strings.Contains(r2.stdout, "read all") {
		t.Errorf("the backup without summaries does not say it compared files: %s", r2)
	}

	c.Exec(t, "CREATE DATABASE gone")
	c.Exec(t, "DROP DATABASE gone")
	c.Exec(t, "TRUNCATE pgbench_history")
	c.Exec(t, "INSERT INTO shrinking SELECT g, 'back' FROM generate_series(30001, 40000) g")
	c.Exec(t, "DELETE FROM extended WHERE id > 25000")
	stop()
	// Hint bits set now are in both backups, not set later by the reads
	// of the checks below (which would make every page differ).
	c.Exec(t, "VACUUM")
	c.Exec(t, "CHECKPOINT")
	inc3, _ := takeBackup(t, c, repo)
	if inc3.Parent != inc2.ID || inc3.Chain != 3 {
		t.Fatalf("the fourth backup: %+v, want an incremental one on %s", inc3, inc2.ID)
	}
	same, _ := takeBackup(t, c, repo, "--type", "full")
	if same.Type != "full" {
		t.Fatalf("--type full gave %+v", same)
	}
	want := dumpAll(t, c)

	rc, _ := restoreAt(t, repo, "", inc3.ID)
	fromChain := dumpAll(t, rc)
	amcheck(t, rc)
	rf, _ := restoreAt(t, repo, "", same.ID)
	fromFull := dumpAll(t, rf)
	rf.Stop(t, "fast")
	if fromFull != want {
		t.Fatalf("the full backup restored differs from the cluster: %s", firstDiff(want, fromFull))
	}
	if fromChain != fromFull {
		t.Fatalf("the chain restored differs from the full backup of the same moment: %s", firstDiff(fromFull, fromChain))
	}

	// Delta: the cluster restored from the chain diverges (it is a new
	// timeline), stops, and is delta-restored to the same backup again.
	rc.Exec(t, "UPDATE pgbench_accounts SET abalance = -1 WHERE aid BETWEEN 200000 AND 203000")
	rc.Exec(t, "CREATE TABLE junk AS SELECT g FROM generate_series(1, 100000) g")
	rc.Exec(t, "DROP TABLE shrinking")
	rcDir := rc.DataDir
	rc.Stop(t, "fast")
	rd, r := restoreAt(t, repo, rcDir, inc3.ID, "--delta")
	var out struct {
		Bytes int64 `json:"bytes"`
		Delta struct {
			Written int64 `json:"written_bytes"`
			Removed int   `json:"removed"`
		} `json:"delta"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("restore --delta --json: %v\n%s", err, r)
	}
	if out.Delta.Written == 0 || out.Delta.Written*4 > same.Size || out.Delta.Removed == 0 {
		t.Errorf("delta restore wrote %d bytes of %d and removed %d entries: want a fraction written and the diverged files removed", out.Delta.Written, same.Size, out.Delta.Removed)
	}
	if got := dumpAll(t, rd); got != fromFull {
		t.Fatalf("the delta restore differs from the full backup: %s", firstDiff(fromFull, got))
	}
	amcheck(t, rd)
	rd.Stop(t, "fast")

	// verify checks every reference across the chain: damage in an object
	// of the full backup that the chain refers to is reported for the
	// incremental backup too.
	mustRun(t, repo.Env, append([]string{"verify"}, repo.Flags()...)...)
	l := mustRun(t, repo.Env, append([]string{"list"}, repo.Flags()...)...)
	for _, want := range []string{"incremental  " + inc2.ID, "full"} {
		if !strings.Contains(l.stdout, want) {
			t.Errorf("list does not show %q:\n%s", want, l.stdout)
		}
	}

	// expire keeps what a pinned incremental backup depends on, and says so.
	mustRun(t, repo.Env, append([]string{"pin", inc2.ID}, repo.Flags()...)...)
	r = mustRun(t, repo.Env, append([]string{"expire", "--keep", "1", "--dry-run", "--json"}, repo.Flags()...)...)
	var plan struct {
		Keep []struct {
			ID     string `json:"id"`
			Reason string `json:"reason"`
		} `json:"keep"`
		Expire []struct {
			ID string `json:"id"`
		} `json:"expire"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &plan); err != nil {
		t.Fatalf("expire --json: %v\n%s", err, r)
	}
	kept := map[string]string{}
	for _, k := range plan.Keep {
		kept[k.ID] = k.Reason
	}
	for _, id := range []string{same.ID, inc2.ID, inc1.ID, full.ID} {
		if kept[id] == "" {
			t.Errorf("expire would remove %s: %s", id, r.stdout)
		}
	}
	if !strings.Contains(kept[full.ID], inc2.ID) || len(plan.Expire) != 1 || plan.Expire[0].ID != inc3.ID {
		t.Errorf("expire plan: %s", r.stdout)
	}
	mustRun(t, repo.Env, append([]string{"expire", "--keep", "1"}, repo.Flags()...)...)
	mustRun(t, repo.Env, append([]string{"verify", "--backup", inc2.ID}, repo.Flags()...)...)
	obj := filepath.Join(root, "backups", full.ID, "data", "000000")
	data, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(obj, data, 0o600); err != nil {
		t.Fatal(err)
	}
	r = run(t, repo.Env, append([]string{"verify", "--backup", inc2.ID}, repo.Flags()...)...)
	if r.code == 0 || !strings.Contains(r.stdout+r.stderr, full.ID+"/data/000000") {
		t.Errorf("verify of %s with its full backup's object damaged: %s", inc2.ID, r)
	}

	// Refusals: a running server, another cluster, a directory that is no
	// cluster; each leaves the directory as it was.
	r = run(t, repo.Env, append([]string{"restore", "--delta", "--pgdata", c.DataDir, "--backup", same.ID}, repo.Flags()...)...)
	if r.code == 0 || !strings.Contains(r.stderr, "running") {
		t.Errorf("delta restore onto the running cluster: %s", r)
	}
	other := pgtest.NewCluster(t, pgtest.Options{})
	r = run(t, repo.Env, append([]string{"restore", "--delta", "--pgdata", other.DataDir, "--backup", same.ID}, repo.Flags()...)...)
	if r.code == 0 || !strings.Contains(r.stderr, "cluster") {
		t.Errorf("delta restore onto another cluster: %s", r)
	}
	if _, err := os.Stat(filepath.Join(other.DataDir, "global", "pg_control")); err != nil {
		t.Errorf("the refused delta restore touched the other cluster: %v", err)
	}
	junk := pgtest.TempDir(t, "notacluster-")
	os.WriteFile(filepath.Join(junk, "precious"), []byte("x"), 0o600)
	r = run(t, repo.Env, append([]string{"restore", "--delta", "--pgdata", junk, "--backup", same.ID}, repo.Flags()...)...)
	if r.code == 0 {
		t.Errorf("delta restore onto a directory that is no cluster: %s", r)
	}
	if _, err := os.Stat(filepath.Join(junk, "precious")); err != nil {
		t.Errorf("the refused delta restore removed a file: %v", err)
	}
}
