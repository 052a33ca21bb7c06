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
