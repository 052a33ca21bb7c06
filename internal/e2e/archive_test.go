package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strconv"
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

// backlogCluster starts a cluster whose archiving fails while it writes
// a backlog of segments; it returns the ready segments and PostgreSQL's
// archived_count by then.
func backlogCluster(t *testing.T, segments int) (*pgtest.Cluster, []string, int) {
	c := pgtest.NewCluster(t, pgtest.Options{Conf: map[string]string{
		"archive_mode": "on", "archive_command": "false", "wal_keep_size": "2GB"}})
	c.Start(t)
	for i := 0; i < segments; i++ {
		c.Exec(t, "SELECT pg_logical_emit_message(false, 'x', repeat(md5(random()::text), 20000))")
		c.QueryString(t, "SELECT pg_switch_wal()::text")
	}
	ready, _ := filepath.Glob(filepath.Join(c.DataDir, "pg_wal", "archive_status", "*.ready"))
	if len(ready) < segments-2 {
		t.Fatalf("backlog of %d segments", len(ready))
	}
	var names []string
	for _, r := range ready {
		names = append(names, strings.TrimSuffix(filepath.Base(r), ".ready"))
	}
	return c, names, archivedCount(t, c)
}

func archivedCount(t *testing.T, c *pgtest.Cluster) int {
	n, err := strconv.Atoi(c.QueryString(t, "SELECT archived_count::text FROM pg_stat_archiver"))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestBacklogDrainsWithLookAhead: a backlog built while archiving failed
// drains through look-ahead uploads; every segment is archived exactly as
// PostgreSQL wrote it, and no look-ahead record outlives its segment. With
// pgkeep wal-push as the whole archive_command, the pusher marks segments
// archived itself, so PostgreSQL makes fewer calls than there are
// segments, and still archives the last one itself.
func TestBacklogDrainsWithLookAhead(t *testing.T) {
	repo := fileRepo(t)
	c, ready, before := backlogCluster(t, 20)
	c.Exec(t, "ALTER SYSTEM SET archive_command = '"+repo.Shell(pgkeepBin(t), "wal-push")+" --look-ahead 4 %p'")
	c.Exec(t, "SELECT pg_reload_conf()")
	last := switchAndWait(t, c)
	calls := archivedCount(t, c) - before
	t.Logf("%d segments (and the switch's) archived with %d calls of PostgreSQL", len(ready), calls)
	if calls >= len(ready) {
		t.Errorf("PostgreSQL made %d calls for %d segments: the pusher marked none archived", calls, len(ready))
	}
	if got := c.QueryString(t, "SELECT last_archived_wal FROM pg_stat_archiver"); got != last {
		t.Errorf("last_archived_wal %s, want the last segment %s", got, last)
	}
	for _, name := range ready {
		if _, err := os.Stat(filepath.Join(c.DataDir, "pg_wal", "archive_status", name+".done")); err != nil {
			t.Errorf("%s not marked archived: %v", name, err)
		}
	}
	out := pgtest.TempDir(t, "fetch-")
	for _, name := range ready {
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

// TestBacklogWithCompoundCommandMarksNothing: when archive_command does
// more than pgkeep wal-push, the pusher still uploads ahead but marks no
// segment archived: the rest of the command runs for every segment.
func TestBacklogWithCompoundCommandMarksNothing(t *testing.T) {
	repo := fileRepo(t)
	c, ready, before := backlogCluster(t, 12)
	copies := pgtest.TempDir(t, "copies-")
	c.Exec(t, "ALTER SYSTEM SET archive_command = '"+repo.Shell(pgkeepBin(t), "wal-push")+" --look-ahead 4 %p && cp %p "+copies+"/%f'")
	c.Exec(t, "SELECT pg_reload_conf()")
	switchAndWait(t, c)
	if calls := archivedCount(t, c) - before; calls < len(ready) {
		t.Errorf("PostgreSQL made %d calls for %d segments: some were marked archived behind the command's back", calls, len(ready))
	}
	for _, name := range ready {
		if _, err := os.Stat(filepath.Join(copies, name)); err != nil {
			t.Errorf("the command's cp did not run for %s: %v", name, err)
		}
	}
	// The uploads went ahead all the same.
	if _, err := os.Stat(filepath.Join(c.DataDir, "pg_wal", "pgkeep", "ahead.lock")); err != nil {
		t.Errorf("no look-ahead pusher ran: %v", err)
	}
}
