package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/pgkeep/pgkeep/internal/pgtest"
)

// snapshot hashes every file of a file repository, to prove a refused
// command changed nothing.
func snapshot(t *testing.T, repoURL string) string {
	t.Helper()
	root := strings.TrimPrefix(repoURL, "file://")
	var lines []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		data, _ := os.ReadFile(p)
		lines = append(lines, fmt.Sprintf("%s %x", strings.TrimPrefix(p, root), sha256.Sum256(data)))
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func TestWalPushRefusals(t *testing.T) {
	repo := fileRepo(t)
	a := archivingCluster(t, repo, map[string]string{"wal_keep_size": "1GB"})
	seg := switchAndWait(t, a)
	sysA := a.QueryString(t, "SELECT system_identifier::text FROM pg_control_system()")
	segPath := filepath.Join(a.DataDir, "pg_wal", seg)
	push := func(path string, extra ...string) result {
		return run(t, repo.Env, append(append([]string{"wal-push"}, repo.Flags()...), append(extra, path)...)...)
	}

	t.Run("identical re-push succeeds", func(t *testing.T) {
		before := snapshot(t, repo.URL)
		if r := push(segPath); r.code != 0 {
			t.Fatalf("re-push of an identical segment: %s", r)
		}
		if snapshot(t, repo.URL) != before {
			t.Fatal("an identical re-push changed the repository")
		}
	})

	t.Run("different content under an archived name", func(t *testing.T) {
		data, err := os.ReadFile(segPath)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)/2] ^= 0xff
		dir := pgtest.TempDir(t, "fake-wal-")
		fake := filepath.Join(dir, seg)
		os.WriteFile(fake, data, 0o644)
		before := snapshot(t, repo.URL)
		r := push(fake, "--pgdata", a.DataDir)
		if r.code != 3 || !strings.Contains(r.stderr, "different content") || !strings.Contains(r.stderr, seg) {
			t.Fatalf("want exit 3 naming the segment and 'different content', got %s", r)
		}
		if snapshot(t, repo.URL) != before {
			t.Fatal("a refused push changed the repository")
		}
	})

	t.Run("segment from another cluster", func(t *testing.T) {
		b := pgtest.NewCluster(t, pgtest.Options{Conf: map[string]string{"wal_keep_size": "1GB"}})
		b.Start(t)
		sysB := b.QueryString(t, "SELECT system_identifier::text FROM pg_control_system()")
		segB := b.QueryString(t, "SELECT pg_walfile_name(pg_current_wal_lsn())")
		b.QueryString(t, "SELECT pg_switch_wal()::text")
		b.Stop(t, "fast")
		before := snapshot(t, repo.URL)
		r := push(filepath.Join(b.DataDir, "pg_wal", segB))
		if r.code != 3 || !strings.Contains(r.stderr, sysA) || !strings.Contains(r.stderr, sysB) {
			t.Fatalf("want exit 3 naming both clusters %s and %s, got %s", sysA, sysB, r)
		}
		if snapshot(t, repo.URL) != before {
			t.Fatal("a refused push changed the repository")
		}
	})

	t.Run("history files are never overwritten", func(t *testing.T) {
		dir := pgtest.TempDir(t, "hist-")
		h := filepath.Join(dir, "00000002.history")
		os.WriteFile(h, []byte("1\t0/3000000\tno recovery target specified\n"), 0o644)
		if r := push(h, "--pgdata", a.DataDir); r.code != 0 {
			t.Fatalf("pushing a history file: %s", r)
		}
		if r := push(h, "--pgdata", a.DataDir); r.code != 0 {
			t.Fatalf("re-pushing an identical history file: %s", r)
		}
		os.WriteFile(h, []byte("1\t0/4000000\tno recovery target specified\n"), 0o644)
		before := snapshot(t, repo.URL)
		if r := push(h, "--pgdata", a.DataDir); r.code != 3 {
			t.Fatalf("want a different history file refused with exit 3, got %s", r)
		}
		if snapshot(t, repo.URL) != before {
			t.Fatal("a refused history push changed the repository")
		}
		// And it fetches back as first written.
		dest := filepath.Join(dir, "fetched")
		mustRun(t, nil, append(append([]string{"wal-fetch"}, repo.Flags()...), "00000002.history", dest)...)
		if got, _ := os.ReadFile(dest); !bytes.Contains(got, []byte("0/3000000")) {
			t.Fatalf("history file changed: %q", got)
		}
	})

	t.Run("not a WAL file", func(t *testing.T) {
		dir := pgtest.TempDir(t, "junk-")
		p := filepath.Join(dir, "notes.txt")
		os.WriteFile(p, []byte("hello"), 0o644)
		if r := push(p); r.code == 0 || !strings.Contains(r.stderr, "not a WAL file") {
			t.Fatalf("want a refusal, got %s", r)
		}
	})
}

func TestWalFetchExitCodes(t *testing.T) {
	repo := fileRepo(t)
	a := archivingCluster(t, repo, nil)
	seg := switchAndWait(t, a)
	dir := pgtest.TempDir(t, "fetch-")
	fetch := func(spec repoSpec, name string) (result, string) {
		dest := filepath.Join(dir, "RECOVERYXLOG")
		os.Remove(dest)
		return run(t, spec.Env, append(append([]string{"wal-fetch"}, spec.Flags()...), name, dest)...), dest
	}

	t.Run("missing file exits 1 quietly", func(t *testing.T) {
		r, dest := fetch(repo, "0000000100000000000000FF")
		if r.code != 1 || r.stdout != "" || r.stderr != "" {
			t.Fatalf("want exit 1 and no output, got %s", r)
		}
		if _, err := os.Stat(dest); err == nil {
			t.Fatal("destination created for a missing file")
		}
	})
	t.Run("missing history file exits 1", func(t *testing.T) {
		if r, _ := fetch(repo, "00000009.history"); r.code != 1 {
			t.Fatalf("want exit 1, got %s", r)
		}
	})
	t.Run("no repository there is fatal, not 'not found'", func(t *testing.T) {
		r, _ := fetch(repoSpec{URL: "file:///nonexistent/pgkeep-repo"}, seg)
		if r.code != 126 || !strings.Contains(r.stderr, "no pgkeep repository") {
			t.Fatalf("want exit 126, got %s", r)
		}
	})
	t.Run("bad flags are fatal too", func(t *testing.T) {
		r := run(t, nil, "wal-fetch", "--no-such-flag", seg, filepath.Join(dir, "x"))
		if r.code != 126 {
			t.Fatalf("want exit 126 (PostgreSQL must not take a typo for the end of the archive), got %s", r)
		}
	})
	t.Run("corrupt object is fatal and nothing is written", func(t *testing.T) {
		root := strings.TrimPrefix(repo.URL, "file://")
		obj := filepath.Join(root, "wal", seg[:8], seg)
		data, err := os.ReadFile(obj)
		if err != nil {
			t.Fatal(err)
		}
		orig := bytes.Clone(data)
		data[len(data)/2] ^= 0x55
		os.Chmod(obj, 0o600)
		if err := os.WriteFile(obj, data, 0o600); err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(obj, orig, 0o600)
		r, dest := fetch(repo, seg)
		if r.code != 126 || !strings.Contains(r.stderr, "corrupt") {
			t.Fatalf("want exit 126 reporting corruption, got %s", r)
		}
		if _, err := os.Stat(dest); err == nil {
			t.Fatal("a corrupt segment was handed to PostgreSQL")
		}
	})
	t.Run("unreachable S3 is fatal after retries", func(t *testing.T) {
		spec := repoSpec{URL: "s3://bucket/x", Args: []string{"--s3-endpoint", "http://127.0.0.1:1", "--s3-path-style", "--s3-region", "us-east-1", "--retry-timeout", "2s"},
			Env: []string{"AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=y"}}
		if r, _ := fetch(spec, seg); r.code != 126 {
			t.Fatalf("want exit 126, got %s", r)
		}
	})
}
