package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/pgtest"
	"github.com/pgkeep/pgkeep/internal/walarchive"
)

type listing struct {
	Backups []struct {
		ID string `json:"id"`
	} `json:"backups"`
	Incomplete []struct {
		ID string `json:"id"`
	} `json:"incomplete_backups"`
	WAL struct {
		Timelines []struct {
			Timeline uint32 `json:"timeline"`
			Gaps     []struct{ From, To string }
		} `json:"timelines"`
	} `json:"wal"`
}

func list(t *testing.T, repo repoSpec) listing {
	t.Helper()
	r := mustRun(t, repo.Env, append([]string{"list", "--json"}, repo.Flags()...)...)
	var l listing
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
		t.Fatalf("list --json: %v\n%s", err, r.stdout)
	}
	return l
}

// TestInterruptedBackupsAreNeverRestorable: a backup killed with SIGKILL
// midway, and one whose WAL never reaches the repository, are listed as
// incomplete and never chosen by restore.
func TestInterruptedBackupsAreNeverRestorable(t *testing.T) {
	repo := fileRepo(t)
	c := archivingCluster(t, repo, nil)
	pgtest.Pgbench(t, c, "-i", "-q", "-s", "10")
	good := backup(t, c, repo)

	// Killed midway.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := pgtest.Command(ctx, pgkeepBin(t), append([]string{"backup", "--workers", "1", "--compression", "zstd:4"}, repo.Flags()...)...)
	cmd.Env = append(cmd.Env, c.Env()...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	root := strings.TrimPrefix(repo.URL, "file://")
	for time.Now().Before(deadline) {
		m, _ := filepath.Glob(filepath.Join(root, "backups", "*", "data", "*"))
		if len(m) > countData(root, good) { // the new backup has stored data
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	// WAL never arrives: archiving broken, short timeout. A look-ahead
	// pusher still at work on the earlier backlog would upload it anyway:
	// stop it first.
	c.SetConf(t, map[string]string{"archive_command": "false"})
	c.Reload(t)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		pid := walarchive.LockHolder(walarchive.PusherLock(filepath.Join(c.DataDir, "pg_wal")))
		if pid == 0 {
			break
		}
		syscall.Kill(pid, syscall.SIGKILL)
	}
	r := run(t, c.Env(), append([]string{"backup", "--wal-timeout", "3s"}, repo.Flags()...)...)
	// Refused at the start when the archiver has failed already, or
	// failed at the end waiting for the WAL: either way it says why.
	if r.code == 0 || !strings.Contains(r.stderr, "archive_command") ||
		!strings.Contains(r.stderr, "not restorable") && !strings.Contains(r.stderr, "archiving is failing") {
		t.Fatalf("backup without archived WAL must fail and explain: %s", r)
	}

	l := list(t, repo)
	if len(l.Backups) != 1 || l.Backups[0].ID != good {
		t.Fatalf("only %s should be complete: %+v", good, l.Backups)
	}
	// A backup refused at the start wrote nothing; one that waited for
	// its WAL in vain is left incomplete beside the killed one.
	wantIncomplete := 2
	if strings.Contains(r.stderr, "fix archiving first") {
		wantIncomplete = 1
	}
	if len(l.Incomplete) != wantIncomplete {
		t.Fatalf("want %d incomplete backups listed as garbage, got %+v", wantIncomplete, l.Incomplete)
	}
	// Restore ignores them.
	dir := filepath.Join(pgtest.TempDir(t, "restore-"), "data")
	r = mustRun(t, nil, append([]string{"restore", "--pgdata", dir}, repo.Flags()...)...)
	if !strings.Contains(r.stdout, good) {
		t.Fatalf("restore did not choose the complete backup %s: %s", good, r)
	}
}

func countData(root, id string) int {
	m, _ := filepath.Glob(filepath.Join(root, "backups", id, "data", "*"))
	return len(m)
}

// TestPageChecksumFailureReported: a corrupt page in the cluster is
// reported with its file and block, and the backup exits non-zero.
func TestPageChecksumFailureReported(t *testing.T) {
	repo := fileRepo(t)
	c := archivingCluster(t, repo, nil)
	c.Exec(t, "CREATE TABLE victim AS SELECT g AS id, md5(g::text) AS t FROM generate_series(1, 20000) g")
	c.Exec(t, "CHECKPOINT")
	rel := c.QueryString(t, "SELECT pg_relation_filepath('victim')")
	c.Stop(t, "fast")
	p := filepath.Join(c.DataDir, rel)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("CORRUPTION"), 3*8192+4000) // block 3
	f.Close()
	c.Start(t)
	r := run(t, c.Env(), append([]string{"backup"}, repo.Flags()...)...)
	if r.code == 0 || !strings.Contains(r.stderr, rel+" block 3") {
		t.Fatalf("want the corrupt page reported as %s block 3 and a non-zero exit: %s", rel, r)
	}
}

// TestPartialAndStandby: .partial files archive and fetch back; restore
// --standby writes standby.signal; list shows a WAL gap.
func TestPartialAndStandby(t *testing.T) {
	repo := fileRepo(t)
	c := archivingCluster(t, repo, map[string]string{"wal_keep_size": "1GB"})
	backup(t, c, repo)
	seg := switchAndWait(t, c)
	seg2 := switchAndWait(t, c)
	_ = switchAndWait(t, c)

	dir := pgtest.TempDir(t, "partial-")
	data, _ := os.ReadFile(filepath.Join(c.DataDir, "pg_wal", seg))
	partial := filepath.Join(dir, seg+".partial")
	os.WriteFile(partial, data[:len(data)/2], 0o644)
	mustRun(t, nil, append(append([]string{"wal-push"}, repo.Flags()...), partial)...)
	dest := filepath.Join(dir, "back")
	mustRun(t, nil, append(append([]string{"wal-fetch"}, repo.Flags()...), seg+".partial", dest)...)
	if got, _ := os.ReadFile(dest); len(got) != len(data)/2 {
		t.Fatalf("partial fetched back with %d bytes", len(got))
	}

	target := filepath.Join(pgtest.TempDir(t, "standby-"), "data")
	mustRun(t, nil, append([]string{"restore", "--standby", "--pgdata", target}, repo.Flags()...)...)
	if _, err := os.Stat(filepath.Join(target, "standby.signal")); err != nil {
		t.Fatal("--standby did not write standby.signal")
	}
	if _, err := os.Stat(filepath.Join(target, "recovery.signal")); err == nil {
		t.Fatal("--standby wrote recovery.signal")
	}
	auto, _ := os.ReadFile(filepath.Join(target, "postgresql.auto.conf"))
	if !strings.Contains(string(auto), "restore_command = '") || !strings.Contains(string(auto), "wal-fetch") {
		t.Fatalf("no restore_command in postgresql.auto.conf:\n%s", auto)
	}

	// Remove a segment from the repository: list reports the gap.
	root := strings.TrimPrefix(repo.URL, "file://")
	os.Remove(filepath.Join(root, "wal", seg2[:8], seg2))
	l := list(t, repo)
	if len(l.WAL.Timelines) != 1 || len(l.WAL.Timelines[0].Gaps) != 1 || l.WAL.Timelines[0].Gaps[0].From != seg2 {
		t.Fatalf("gap at %s not listed: %+v", seg2, l.WAL)
	}
}

// TestDemo runs pgkeep demo, which asserts its own story.
func TestDemo(t *testing.T) {
	pgtest.Runner(t)
	r := run(t, nil, "demo")
	if r.code != 0 || !strings.Contains(r.stdout, "demo complete") || !strings.Contains(r.stdout, "markers present: 1,2,3") {
		t.Fatalf("demo failed: %s", r)
	}
}
