package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/pgtest"
)

// TestRetentionAndVerify: several backups and WAL; expire keeps exactly
// the policy; verify passes; every kept backup and a point inside the
// window restore; pin protects; an interrupted expire is finished later.
func TestRetentionAndVerify(t *testing.T) {
	repo := fileRepo(t)
	root := strings.TrimPrefix(repo.URL, "file://")
	c := archivingCluster(t, repo, nil)
	c.Exec(t, "CREATE TABLE markers (id int PRIMARY KEY)")
	var ids []string
	for i := 1; i <= 4; i++ {
		c.Exec(t, fmt.Sprintf("INSERT INTO markers VALUES (%d)", i))
		switchAndWait(t, c)
		// Full backups: what expire does with chains is
		// TestIncrementalChain's.
		b, _ := takeBackup(t, c, repo, "--type", "full")
		ids = append(ids, b.ID)
		time.Sleep(1100 * time.Millisecond) // ids are seconds apart
	}
	c.Exec(t, "INSERT INTO markers VALUES (5)")
	inWindow := c.QueryString(t, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
	time.Sleep(1100 * time.Millisecond)
	c.Exec(t, "INSERT INTO markers VALUES (6)")
	switchAndWait(t, c)

	mustRun(t, nil, append([]string{"pin", ids[0]}, repo.Flags()...)...)
	walBefore := countWAL(root)

	dry := mustRun(t, nil, append([]string{"expire", "--keep", "2", "--dry-run"}, repo.Flags()...)...)
	if !strings.Contains(dry.stdout, "expire   backup "+ids[1]) || !strings.Contains(dry.stdout, "pinned") {
		t.Fatalf("dry run plan:\n%s", dry.stdout)
	}
	if countWAL(root) != walBefore || len(list(t, repo).Backups) != 4 {
		t.Fatal("--dry-run changed the repository")
	}

	// Simulate an expire killed after its first step: backup 2's record
	// is gone, its data is not.
	os.Remove(filepath.Join(root, "backups", ids[1], "backup.json"))
	l := list(t, repo)
	if len(l.Backups) != 3 || len(l.Incomplete) != 1 {
		t.Fatalf("after an interrupted expire: %+v", l)
	}
	mustRun(t, nil, append([]string{"expire", "--keep", "2", "--garbage-age", "0s"}, repo.Flags()...)...)
	l = list(t, repo)
	var got []string
	for _, b := range l.Backups {
		got = append(got, b.ID)
	}
	if strings.Join(got, ",") != strings.Join([]string{ids[0], ids[2], ids[3]}, ",") || len(l.Incomplete) != 0 {
		t.Fatalf("after expire --keep 2 with %s pinned: %v, incomplete %v", ids[0], got, l.Incomplete)
	}
	if _, err := os.Stat(filepath.Join(root, "backups", ids[1])); err == nil {
		t.Fatal("the interrupted expire's leftovers are still there")
	}
	// The pinned oldest backup keeps its WAL chain whole.
	if r := run(t, nil, append([]string{"verify", "--backup", ids[0]}, repo.Flags()...)...); r.code != 0 {
		t.Fatalf("the pinned backup lost WAL it needs: %s", r)
	}
	kept := countWAL(root)
	mustRun(t, nil, append([]string{"unpin", ids[0]}, repo.Flags()...)...)
	mustRun(t, nil, append([]string{"expire", "--keep", "2"}, repo.Flags()...)...)
	if n := countWAL(root); n >= kept || n >= walBefore {
		t.Fatalf("no WAL removed after unpinning: %d (was %d)", n, kept)
	}
	if r := mustRun(t, nil, append([]string{"verify"}, repo.Flags()...)...); !strings.Contains(r.stdout, ids[2]) {
		t.Fatalf("verify output: %s", r.stdout)
	}

	// Every kept backup restores, and a point inside the window.
	for i, id := range []string{ids[2], ids[3]} {
		r := restoreAndStart(t, repo, "--backup", id, "--target-immediate", "--archive-off")
		if got := markers(t, r); got != seq(1, 3+i) {
			t.Errorf("backup %s at its consistent point: markers %q", id, got)
		}
	}
	r := restoreAndStart(t, repo, "--target-time", inWindow, "--archive-off")
	if got := markers(t, r); got != seq(1, 5) {
		t.Errorf("point in the window: markers %q", got)
	}
}

func countWAL(root string) int {
	n := 0
	filepath.Walk(filepath.Join(root, "wal"), func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// TestCorruptionAndGaps: damage in one object is caught by verify and by
// restore; a WAL gap is caught by verify and status.
func TestCorruptionAndGaps(t *testing.T) {
	repo := fileRepo(t)
	root := strings.TrimPrefix(repo.URL, "file://")
	c := archivingCluster(t, repo, nil)
	pgtest.Pgbench(t, c, "-i", "-q", "-s", "2")
	id := backup(t, c, repo)
	switchAndWait(t, c)
	gap := switchAndWait(t, c)
	switchAndWait(t, c)

	st := mustRun(t, nil, append([]string{"status", "--json", "--max-rpo", "1h", "--max-backup-age", "1h"}, repo.Flags()...)...)
	var s struct {
		Healthy bool `json:"healthy"`
		Window  *struct {
			Earliest time.Time `json:"earliest"`
		} `json:"recoverable_window"`
		RPO  *float64 `json:"rpo_seconds"`
		Size struct {
			WAL, Backups int64
		} `json:"size_bytes"`
	}
	if err := json.Unmarshal([]byte(st.stdout), &s); err != nil || !s.Healthy || s.Window == nil || s.RPO == nil || s.Size.WAL == 0 || s.Size.Backups == 0 {
		t.Fatalf("status of a healthy repository: %v\n%s", err, st.stdout)
	}
	if r := run(t, nil, append([]string{"status", "--max-backup-age", "1ms"}, repo.Flags()...)...); r.code != 1 || !strings.Contains(r.stderr, "max-backup-age") {
		t.Fatalf("an old backup must fail status: %s", r)
	}

	// Corrupt one data object.
	objs, _ := filepath.Glob(filepath.Join(root, "backups", id, "data", "*"))
	victim := objs[len(objs)/2]
	data, _ := os.ReadFile(victim)
	orig := append([]byte(nil), data...)
	data[len(data)/2] ^= 0xff
	os.WriteFile(victim, data, 0o600)
	rel, _ := filepath.Rel(root, victim)
	r := run(t, nil, append([]string{"verify"}, repo.Flags()...)...)
	if r.code != 4 || !strings.Contains(r.stdout, rel) {
		t.Fatalf("verify must name %s and exit 4: %s", rel, r)
	}
	dir := filepath.Join(pgtest.TempDir(t, "restore-"), "data")
	r = run(t, nil, append([]string{"restore", "--pgdata", dir}, repo.Flags()...)...)
	if r.code == 0 || !strings.Contains(r.stderr, "corrupt") {
		t.Fatalf("restore of a corrupt backup must fail: %s", r)
	}
	if _, err := os.Stat(filepath.Join(dir, "global", "pg_control")); err == nil {
		t.Fatal("a failed restore left a startable data directory")
	}
	os.WriteFile(victim, orig, 0o600)

	// Remove a WAL segment after the backup: a gap.
	os.Remove(filepath.Join(root, "wal", gap[:8], gap))
	r = run(t, nil, append([]string{"verify", "--json"}, repo.Flags()...)...)
	if r.code != 4 || !strings.Contains(r.stdout, gap) || !strings.Contains(r.stdout, `"gap"`) {
		t.Fatalf("verify must report the gap at %s: %s", gap, r)
	}
	r = run(t, nil, append([]string{"status"}, repo.Flags()...)...)
	if r.code != 1 || !strings.Contains(r.stdout, gap) {
		t.Fatalf("status must report the gap at %s and exit 1: %s", gap, r)
	}
}

// TestRestoreDrill: verify --restore restores, replays, runs pg_amcheck
// and reports what it measured.
func TestRestoreDrill(t *testing.T) {
	repo := fileRepo(t)
	c := archivingCluster(t, repo, nil)
	pgtest.Pgbench(t, c, "-i", "-q", "-s", "2")
	backup(t, c, repo)
	pgtest.Pgbench(t, c, "-n", "-t", "200")
	switchAndWait(t, c)
	r := mustRun(t, nil, append([]string{"verify", "--restore", "--json"}, repo.Flags()...)...)
	var out struct {
		OK    bool `json:"ok"`
		Drill struct {
			OK             bool    `json:"ok"`
			RestoreSeconds float64 `json:"restore_seconds"`
			RecoveredLSN   string  `json:"recovered_lsn"`
			Databases      int     `json:"databases_checked"`
		} `json:"restore_drill"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	if !out.OK || !out.Drill.OK || out.Drill.RestoreSeconds <= 0 || out.Drill.RecoveredLSN == "" || out.Drill.Databases < 2 {
		t.Fatalf("drill report: %+v\n%s", out, r.stdout)
	}
	left, _ := filepath.Glob(filepath.Join(os.TempDir(), "pgkeep-drill-*"))
	for _, l := range left {
		if st, err := os.Stat(l); err == nil && time.Since(st.ModTime()) < time.Minute {
			t.Errorf("drill left %s behind", l)
		}
	}
}

// TestTimelineFollow: a restored cluster promotes onto timeline 2 and keeps
// archiving into the same repository; verify and status follow the
// timeline history, and a later restore from the timeline-1 backup replays
// along timeline 2 to its end.
func TestTimelineFollow(t *testing.T) {
	repo := fileRepo(t)
	c := archivingCluster(t, repo, nil)
	c.Exec(t, "CREATE TABLE markers (id int PRIMARY KEY)")
	backup(t, c, repo)
	c.Exec(t, "INSERT INTO markers VALUES (1), (2), (3)")
	switchAndWait(t, c)
	c.Stop(t, "immediate")

	r1 := restoreAndStart(t, repo) // archives on timeline 2
	r1.Exec(t, "INSERT INTO markers VALUES (4), (5)")
	switchAndWait(t, r1)
	r1.Stop(t, "fast")

	l := list(t, repo)
	if len(l.WAL.Timelines) < 2 {
		t.Fatalf("no WAL on timeline 2: %+v", l.WAL)
	}
	if r := run(t, nil, append([]string{"verify"}, repo.Flags()...)...); r.code != 0 {
		t.Fatalf("verify across the timeline switch: %s", r)
	}
	st := mustRun(t, nil, append([]string{"status", "--json"}, repo.Flags()...)...)
	if !strings.Contains(st.stdout, `"timeline": 2`) {
		t.Fatalf("status window should end on timeline 2: %s", st.stdout)
	}
	r2 := restoreAndStart(t, repo, "--archive-off")
	if got := markers(t, r2); got != seq(1, 5) {
		t.Fatalf("restore along timeline 2: markers %q", got)
	}
}
