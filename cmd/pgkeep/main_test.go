package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/repotest"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// pgkeep runs the command line in-process, as main does, with only the
// environment given.
func pgkeep(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	code = run(context.Background(), args, strings.NewReader(""), &out, &errb, lookup)
	return code, out.String(), errb.String()
}

func testRepo(t *testing.T) (*repotest.Env, string) {
	env := repotest.New(t)
	env.Init(t)
	now := time.Now()
	env.WAL(t, 1, 2, 4, now.Add(-time.Hour))
	env.WAL(t, 1, 6, 7, now.Add(-time.Hour))
	env.Backup(t, "20261201T090000Z", map[string][]byte{"PG_VERSION": []byte("15\n"), "global/pg_control": make([]byte, 8192)}, 2, 3, now.Add(-2*time.Hour), 4096)
	return env, env.URL
}

func TestCommandsInProcess(t *testing.T) {
	_, url := testRepo(t)
	vars := map[string]string{"PGKEEP_REPO": url}

	code, out, errs := pgkeep(t, vars, "list", "--json")
	var l struct {
		Backups []struct{ ID string } `json:"backups"`
		WAL     struct {
			Timelines []struct {
				Gaps []struct{ From string } `json:"gaps"`
			} `json:"timelines"`
		} `json:"wal"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &l) != nil || len(l.Backups) != 1 || len(l.WAL.Timelines[0].Gaps) != 1 {
		t.Fatalf("list --json: %d %s %s", code, out, errs)
	}
	// The gap makes status fail, naming it.
	if code, out, _ := pgkeep(t, vars, "status", "--no-server"); code != 1 || !strings.Contains(out, "000000010000000000000005") {
		t.Fatalf("status with a gap: %d %s", code, out)
	}
	if code, out, _ := pgkeep(t, vars, "expire", "--keep", "1", "--dry-run"); code != 0 || !strings.Contains(out, "keep     backup 20261201T090000Z") {
		t.Fatalf("expire --dry-run: %d %s", code, out)
	}
	if code, out, _ := pgkeep(t, vars, "verify", "--quiet"); code != 4 || !strings.Contains(out, "gap") {
		t.Fatalf("verify with a gap: %d %s", code, out)
	}
	if code, out, _ := pgkeep(t, vars, "identity", "--json"); code != 0 || !strings.Contains(out, `"pg_major": 15`) {
		t.Fatalf("identity: %d %s", code, out)
	}

	// wal-fetch: 1 only at the end of the archive, quietly; 126 for a gap
	// and for everything else.
	dest := filepath.Join(t.TempDir(), "RECOVERYXLOG")
	seg := func(no uint64) string { return wal.SegmentName(1, no, repotest.SegSize) }
	if code, _, errs := pgkeep(t, vars, "wal-fetch", seg(3), dest); code != 0 {
		t.Fatalf("wal-fetch of an archived segment: %d %s", code, errs)
	}
	got, _ := os.ReadFile(dest)
	if !bytes.Equal(got, repotest.Segment(1, 3)) {
		t.Fatal("wal-fetch wrote other bytes")
	}
	if code, out, errs := pgkeep(t, vars, "wal-fetch", seg(8), dest+"8"); code != 1 || out != "" || errs != "" {
		t.Fatalf("wal-fetch past the end: %d %q %q", code, out, errs)
	}
	if code, _, errs := pgkeep(t, vars, "wal-fetch", seg(5), dest+"5"); code != 126 || !strings.Contains(errs, "gap") {
		t.Fatalf("wal-fetch of a segment missing mid-archive: %d %s", code, errs)
	}
	if code, _, _ := pgkeep(t, vars, "wal-fetch", "--nonsense", seg(3), dest); code != 126 {
		t.Fatalf("wal-fetch with a bad flag: %d", code)
	}
	if code, _, errs := pgkeep(t, map[string]string{"PGKEEP_REPO": "file:///nonexistent/repo"}, "wal-fetch", seg(3), dest); code != 126 || !strings.Contains(errs, "no pgkeep repository") {
		t.Fatalf("wal-fetch from no repository: %d %s", code, errs)
	}
}

func TestUsageAndHelp(t *testing.T) {
	if code, _, errs := pgkeep(t, nil, "restore"); code != 2 || !strings.Contains(errs, "--pgdata") {
		t.Fatalf("restore without --pgdata: %d %s", code, errs)
	}
	if code, _, errs := pgkeep(t, nil, "list", "--bogus"); code != 2 || !strings.Contains(errs, "pgkeep list --help") {
		t.Fatalf("a bad flag: %d %s", code, errs)
	}
	if code, _, errs := pgkeep(t, map[string]string{"PGKEEP_REPO": "ftp://x"}, "list"); code != 2 || !strings.Contains(errs, "PGKEEP_REPO") {
		t.Fatalf("a bad repository URL names where it came from: %d %s", code, errs)
	}
	root := (&app{settings: map[string]*string{}, lookupEnv: func(string) (string, bool) { return "", false }}).newRoot()
	for _, c := range root.Commands() {
		if c.Hidden {
			continue
		}
		code, out, _ := pgkeep(t, nil, c.Name(), "--help")
		if code != 0 || !strings.Contains(out, "Usage:") || len(out) < 200 {
			t.Errorf("pgkeep %s --help: %d\n%s", c.Name(), code, out)
		}
	}
}

// A storage operation that fails and is retried says so on stderr, so a
// slow run tells the operator why (here: an S3 endpoint that refuses
// connections, until --retry-timeout runs out).
func TestStorageRetriesAreReported(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "pgkeep-test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "pgkeep-test")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	dest := filepath.Join(t.TempDir(), "RECOVERYXLOG")
	code, _, stderr := pgkeep(t, nil, "wal-fetch", "--repo", "s3://bucket/p", "--s3-endpoint", endpoint, "--s3-path-style",
		"--s3-region", "us-east-1", "--retry-timeout", "1s", "000000010000000000000001", dest)
	if code != exitFetchFailed {
		t.Fatalf("wal-fetch from an unreachable store exited %d, want %d; stderr:\n%s", code, exitFetchFailed, stderr)
	}
	if !strings.Contains(stderr, "pgkeep: WARNING: ") || !strings.Contains(stderr, "retrying") {
		t.Fatalf("no retry reported on stderr:\n%s", stderr)
	}
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Fatalf("a failed fetch left %s: %v", dest, err)
	}
}
