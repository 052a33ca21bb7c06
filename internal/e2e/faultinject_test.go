package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/pgkeep/pgkeep/internal/faultinject"
	"github.com/pgkeep/pgkeep/internal/pgtest"
)

// TestStorageFaultsInjected puts a proxy between pgkeep and MinIO that
// answers 500 and 503 SlowDown, resets connections mid-body, delays, and
// truncates bodies, on a third of all requests. wal-push, wal-fetch, backup
// and restore either succeed correctly through retries or fail cleanly:
// never a false success, never a truncated segment handed to PostgreSQL,
// never a completion record for an incomplete backup.
func TestStorageFaultsInjected(t *testing.T) {
	m := pgtest.StartMinIO(t)
	seed := uint64(7)
	if v, err := strconv.ParseUint(os.Getenv("PGKEEP_FAULT_SEED"), 10, 64); err == nil {
		seed = v
	}
	proxy, err := faultinject.New(m.Endpoint, seed)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	t.Setenv("AWS_ACCESS_KEY_ID", m.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", m.SecretKey)
	spec := func(endpoint string) repoSpec {
		return repoSpec{URL: "s3://" + m.Bucket + "/faulty",
			Args: []string{"--s3-endpoint", endpoint, "--s3-path-style", "--s3-region", m.Region, "--retry-timeout", "60s"}}
	}
	faulty, clean := spec(proxy.URL()), spec(m.Endpoint)
	all := []faultinject.Fault{faultinject.InternalError, faultinject.SlowDown, faultinject.Reset, faultinject.Truncate, faultinject.Delay}
	proxy.SetFaults(0.33, all...)

	c := archivingCluster(t, faulty, map[string]string{"wal_keep_size": "1GB"})
	c.Exec(t, "CREATE TABLE markers (id int PRIMARY KEY)")
	pgtest.Pgbench(t, c, "-i", "-q", "-s", "2")

	// Backups through faults: each either completes or leaves nothing
	// listed as complete.
	completed := 0
	for i := 0; i < 3; i++ {
		before := len(list(t, clean).Backups)
		r := run(t, c.Env(), append([]string{"backup", "--quiet"}, faulty.Flags()...)...)
		after := len(list(t, clean).Backups)
		switch {
		case r.code == 0 && after == before+1:
			completed++
		case r.code != 0 && after == before:
		default:
			t.Fatalf("backup exit %d but complete backups went from %d to %d: %s", r.code, before, after, r)
		}
	}
	if completed == 0 {
		t.Fatal("no backup got through the faults despite retries")
	}
	c.Exec(t, "INSERT INTO markers SELECT generate_series(1, 50)")
	last := switchAndWait(t, c)

	// Every archived segment, read back without faults, is PostgreSQL's.
	done, _ := filepath.Glob(filepath.Join(c.DataDir, "pg_wal", "archive_status", "*.done"))
	var names []string
	for _, d := range done {
		if n := strings.TrimSuffix(filepath.Base(d), ".done"); len(n) == 24 {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	out := pgtest.TempDir(t, "fetch-")
	for _, name := range names {
		want, err := os.ReadFile(filepath.Join(c.DataDir, "pg_wal", name))
		if err != nil {
			t.Fatal(err)
		}
		dest := filepath.Join(out, name)
		mustRun(t, nil, append(append([]string{"wal-fetch", "--prefetch", "0"}, clean.Flags()...), name, dest)...)
		if got, _ := os.ReadFile(dest); !bytes.Equal(got, want) {
			t.Fatalf("archived %s differs from PostgreSQL's copy", name)
		}
		// Through faults: exit 0 with the right bytes, or 126; never 1,
		// never a short file.
		dest2 := filepath.Join(out, name+".faulty")
		r := run(t, nil, append(append([]string{"wal-fetch", "--prefetch", "0"}, faulty.Flags()...), name, dest2)...)
		got, _ := os.ReadFile(dest2)
		switch {
		case r.code == 0 && bytes.Equal(got, want):
		case r.code == 126 && len(got) == 0:
		default:
			t.Fatalf("wal-fetch %s through faults: exit %d, %d of %d bytes: %s", name, r.code, len(got), len(want), r)
		}
	}

	// Restore, and recovery, through faults.
	c.Stop(t, "immediate")
	rc := restoreAndStart(t, faulty, "--archive-off")
	if got := markers(t, rc); got != seq(1, 50) {
		t.Fatalf("restored through faults: markers %q", got)
	}
	if n := proxy.Injected(); n < 20 {
		t.Fatalf("only %d faults were injected", n)
	}
	t.Logf("%d segments up to %s, %d backups completed, %d faults injected, %d requests passed", len(names), last, completed, proxy.Injected(), proxy.Passed.Load())
}
