package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/pgkeep/pgkeep/internal/pgtest"
)

// TestArchiveRoundTrip: a real cluster archives through wal-push under a
// pgbench load; every archived segment is fetched back with wal-fetch and
// compared byte for byte with PostgreSQL's own copy.
func TestArchiveRoundTrip(t *testing.T) {
	for _, kind := range []string{"file", "s3"} {
		t.Run(kind, func(t *testing.T) {
			repo := fileRepo(t)
			if kind == "s3" {
				repo = s3Repo(t)
			}
			// wal_keep_size keeps PostgreSQL's copies for the comparison.
			c := archivingCluster(t, repo, map[string]string{"wal_keep_size": "2GB"})
			pgtest.Pgbench(t, c, "-i", "-q", "-s", "2")
			pgtest.Pgbench(t, c, "-n", "-c", "2", "-T", "4")
			last := switchAndWait(t, c)

			done, _ := filepath.Glob(filepath.Join(c.DataDir, "pg_wal", "archive_status", "*.done"))
			var names []string
			for _, d := range done {
				names = append(names, strings.TrimSuffix(filepath.Base(d), ".done"))
			}
			sort.Strings(names)
			if len(names) < 3 || names[len(names)-1] < last {
				t.Fatalf("expected several archived segments up to %s, got %v", last, names)
			}
			out := pgtest.TempDir(t, "fetch-")
			for _, name := range names {
				dest := filepath.Join(out, name)
				mustRun(t, repo.Env, append([]string{"wal-fetch"}, append(repo.Flags(), name, dest)...)...)
				got, err := os.ReadFile(dest)
				if err != nil {
					t.Fatal(err)
				}
				want, err := os.ReadFile(filepath.Join(c.DataDir, "pg_wal", name))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("%s fetched back differs from PostgreSQL's copy", name)
				}
			}
			t.Logf("%d segments archived and fetched back identical", len(names))

			// The listing agrees: one timeline, no gaps.
			ls := mustRun(t, repo.Env, append([]string{"list", "--json"}, repo.Flags()...)...)
			if !strings.Contains(ls.stdout, `"gaps": []`) || !strings.Contains(ls.stdout, last) {
				t.Fatalf("list does not show the archive: %s", ls.stdout)
			}
		})
	}
}

// TestBacklogDrainsWithLookAhead: a backlog built while archiving failed
// drains through look-ahead uploads; every segment is archived exactly as
// PostgreSQL wrote it, and no look-ahead record outlives its segment.
func TestBacklogDrainsWithLookAhead(t *testing.T) {
	repo := fileRepo(t)
	c := pgtest.NewCluster(t, pgtest.Options{Conf: map[string]string{
		"archive_mode": "on", "archive_command": "false", "wal_keep_size": "2GB"}})
	c.Start(t)
	for i := 0; i < 12; i++ {
		c.Exec(t, "SELECT pg_logical_emit_message(false, 'x', repeat(md5(random()::text), 20000))")
		c.QueryString(t, "SELECT pg_switch_wal()::text")
	}
	ready, _ := filepath.Glob(filepath.Join(c.DataDir, "pg_wal", "archive_status", "*.ready"))
	if len(ready) < 10 {
		t.Fatalf("backlog of %d segments", len(ready))
	}
	c.Exec(t, "ALTER SYSTEM SET archive_command = '"+repo.Shell(pgkeepBin(t), "wal-push")+" --look-ahead 4 %p'")
	c.Exec(t, "SELECT pg_reload_conf()")
	last := switchAndWait(t, c)
	out := pgtest.TempDir(t, "fetch-")
	for _, r := range ready {
		name := strings.TrimSuffix(filepath.Base(r), ".ready")
		dest := filepath.Join(out, name)
		mustRun(t, nil, append([]string{"wal-fetch"}, append(repo.Flags(), name, dest)...)...)
		got, _ := os.ReadFile(dest)
		want, _ := os.ReadFile(filepath.Join(c.DataDir, "pg_wal", name))
		if !bytes.Equal(got, want) {
			t.Fatalf("%s differs from PostgreSQL's copy", name)
		}
	}
	left, _ := filepath.Glob(filepath.Join(c.DataDir, "pg_wal", "pgkeep", "pushed", "*"))
	for _, l := range left {
		if filepath.Base(l) <= last {
			t.Errorf("look-ahead record %s outlived its segment", l)
		}
	}
}
