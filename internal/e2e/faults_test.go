package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgkeep/pgkeep/internal/faultproxy"
	"github.com/pgkeep/pgkeep/internal/pgtest"
)

// Storage faults (design section 9): pgkeep talks to MinIO through
// internal/faultproxy, which answers 500 InternalError and 503 SlowDown,
// resets connections and truncates bodies. Whatever happens, pgkeep never
// reports a false success: what it says is stored is stored intact, what
// it fetches is the archived content, and a backup whose command failed is
// never listed as complete.

// faultyRepo returns a repository in a fresh MinIO bucket reached through a
// fault-injecting proxy with rules, and the proxy.
func faultyRepo(t *testing.T, rules ...faultproxy.Rule) (repoSpec, *faultproxy.Proxy) {
	t.Helper()
	m := pgtest.StartMinIO(t)
	p := faultproxy.New(m.Endpoint, rules...)
	t.Cleanup(func() {
		t.Logf("fault proxy: %v", p.Stats())
		p.Close()
	})
	// Servers started by the test (archive_command, restore_command) get
	// the credentials from their environment, as a real one would.
	t.Setenv("AWS_ACCESS_KEY_ID", m.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", m.SecretKey)
	return repoSpec{
		URL:  "s3://" + m.Bucket + "/faulty",
		Args: []string{"--s3-endpoint", p.URL(), "--s3-path-style", "--s3-region", m.Region, "--retry-timeout", "60s"},
		Env:  []string{"AWS_ACCESS_KEY_ID=" + m.AccessKey, "AWS_SECRET_ACCESS_KEY=" + m.SecretKey},
	}, p
}

// faultFree is the repository of spec reached directly, without the proxy.
func faultFree(spec repoSpec, p *faultproxy.Proxy) repoSpec {
	spec.Args = slices.Clone(spec.Args)
	for i, a := range spec.Args {
		if a == p.URL() {
			spec.Args[i] = p.Target()
		}
	}
	return spec
}

// withArgs returns spec with more flags (later flags win).
func withArgs(spec repoSpec, args ...string) repoSpec {
	spec.Args = append(slices.Clone(spec.Args), args...)
	return spec
}

// storageFaults faults about rate+8% of requests: 500s, 503 SlowDowns,
// resets and truncations at random points, writes the store applies but
// whose answer is a 500, and short delays.
func storageFaults(rate float64) []faultproxy.Rule {
	return append(faultproxy.Flaky(rate),
		faultproxy.Rule{Fault: faultproxy.InternalError, Probability: 0.05, Methods: []string{"PUT", "POST"}, AfterForward: true},
		faultproxy.Rule{Fault: faultproxy.Delay, Probability: 0.03, Delay: 150 * time.Millisecond},
	)
}

// checkFetched holds a wal-fetch of an existing file to its contract: exit
// 0 with exactly the archived content at dest, or exit 126 with nothing at
// dest; never 1 ("not archived"), and never a partial file left behind.
func checkFetched(t *testing.T, r result, dest string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(dest)
	switch r.code {
	case 0:
		if err != nil {
			t.Fatalf("wal-fetch exited 0 but %s is not there (%v): %s", dest, err, r)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("wal-fetch exited 0 but %s has %d bytes that differ from the %d archived: %s", dest, len(got), len(want), r)
		}
	case 126:
		if err == nil {
			t.Fatalf("wal-fetch exited 126 but left %s (%d bytes) for PostgreSQL: %s", dest, len(got), r)
		}
	default:
		t.Fatalf("wal-fetch of an archived file must exit 0 or 126 (1 would end recovery early): %s", r)
	}
	if _, err := os.Stat(dest + ".pgkeep-partial"); err == nil {
		t.Fatalf("wal-fetch left %s.pgkeep-partial behind", dest)
	}
}

// TestFaultsWalPushAndFetch archives through a store failing about a third
// of all requests, then checks every archived segment against PostgreSQL's
// own copy, and fetches them back through faults.
func TestFaultsWalPushAndFetch(t *testing.T) {
	spec, p := faultyRepo(t, storageFaults(0.25)...)
	direct := faultFree(spec, p)
	// wal_keep_size keeps PostgreSQL's copies for the comparison.
	c := archivingCluster(t, spec, map[string]string{"wal_keep_size": "1GB"})
	c.Exec(t, "CREATE TABLE filler (t text)")
	for range 8 {
		// About 1 MB of random hex per segment: objects of some size, so
		// that truncations and resets land inside bodies.
		c.Exec(t, "INSERT INTO filler SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 30000)")
		c.QueryString(t, "SELECT pg_switch_wal()::text")
	}
	last := switchAndWait(t, c)
	t.Logf("archiver: %s", c.QueryString(t, "SELECT row(archived_count, failed_count)::text FROM pg_stat_archiver"))

	if p.Injected(faultproxy.None) == 0 {
		t.Fatalf("no fault was injected (%v): the test tested nothing", p.Stats())
	}
	done, _ := filepath.Glob(filepath.Join(c.DataDir, "pg_wal", "archive_status", "*.done"))
	var names []string
	for _, d := range done {
		names = append(names, strings.TrimSuffix(filepath.Base(d), ".done"))
	}
	sort.Strings(names)
	if len(names) < 8 || names[len(names)-1] < last {
		t.Fatalf("expected at least 8 archived segments up to %s, got %v", last, names)
	}
	original := map[string][]byte{}
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(c.DataDir, "pg_wal", name))
		if err != nil {
			t.Fatal(err)
		}
		original[name] = data
	}

	// Everything PostgreSQL was told is archived is in the store, intact:
	// fetched without the proxy, byte for byte PostgreSQL's copy.
	out := pgtest.TempDir(t, "fetch-")
	for _, name := range names {
		dest := filepath.Join(out, "direct-"+name)
		mustRun(t, direct.Env, append(append([]string{"wal-fetch", "--prefetch", "0"}, direct.Flags()...), name, dest)...)
		got, err := os.ReadFile(dest)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, original[name]) {
			t.Fatalf("%s in the store differs from PostgreSQL's copy", name)
		}
	}
	l := list(t, direct)
	if len(l.WAL.Timelines) != 1 || len(l.WAL.Timelines[0].Gaps) != 0 {
		t.Fatalf("the archive has gaps: %+v", l.WAL)
	}
	t.Logf("%d segments archived through faults, all identical; proxy: %v", len(names), p.Stats())

	fetch := func(t *testing.T, spec repoSpec, name, dest string) result {
		os.Remove(dest)
		return run(t, spec.Env, append(append([]string{"wal-fetch", "--prefetch", "0"}, spec.Flags()...), name, dest)...)
	}

	t.Run("random faults", func(t *testing.T) {
		p.SetRules(faultproxy.Flaky(0.4)...)
		defer p.SetRules()
		before := p.Injected(faultproxy.None)
		for _, name := range names {
			dest := filepath.Join(out, name)
			checkFetched(t, fetch(t, spec, name, dest), dest, original[name])
		}
		// A file that is not archived: "not found" (1) once the store
		// says so, or 126; never success.
		dest := filepath.Join(out, "missing")
		r := fetch(t, spec, "0000000100000000000000FE", dest)
		if r.code != 1 && r.code != 126 {
			t.Fatalf("wal-fetch of a missing segment through faults: %s", r)
		}
		if _, err := os.Stat(dest); err == nil {
			t.Fatal("wal-fetch of a missing segment created the destination")
		}
		if p.Injected(faultproxy.None) == before {
			t.Fatal("no fault injected while fetching")
		}
	})

	// One transient fault on the segment's download is retried: the
	// answer is the file, not 126. Truncations inside the envelope's
	// 8-byte header included: a body cut short in transit is a transport
	// failure, not a corrupt object.
	t.Run("single faults are retried", func(t *testing.T) {
		name := names[len(names)/2]
		cases := []faultproxy.Rule{
			{Fault: faultproxy.InternalError},
			{Fault: faultproxy.SlowDown},
			{Fault: faultproxy.Reset},
			{Fault: faultproxy.Reset, Keep: -1},
			{Fault: faultproxy.Truncate},
			{Fault: faultproxy.Truncate, Keep: 100},
			{Fault: faultproxy.Truncate, Keep: -1},
			{Fault: faultproxy.Truncate, Keep: 3},
			{Fault: faultproxy.Delay, Delay: 200 * time.Millisecond},
		}
		defer p.SetRules()
		for _, rule := range cases {
			rule.Every, rule.Times, rule.Methods, rule.Path = 1, 1, []string{"GET"}, "/wal/"
			p.SetRules(rule)
			before := p.Injected(rule.Fault)
			dest := filepath.Join(out, "single-"+name)
			r := fetch(t, spec, name, dest)
			if p.Injected(rule.Fault) != before+1 {
				t.Fatalf("%s (keep %d) was not injected", rule.Fault, rule.Keep)
			}
			if r.code != 0 {
				t.Errorf("one %s (keep %d) on the download made wal-fetch give up; it must retry: %s", rule.Fault, rule.Keep, r)
			}
			checkFetched(t, r, dest, original[name])
		}
	})

	// Pushing a segment again (PostgreSQL retrying an archive_command
	// whose success it did not see) finds it stored and compares content:
	// a fault on that read-back is retried, never taken for a conflict.
	t.Run("re-push compares through faults", func(t *testing.T) {
		defer p.SetRules()
		name := names[1]
		for _, rule := range []faultproxy.Rule{
			{Fault: faultproxy.Reset},
			{Fault: faultproxy.Truncate},
			{Fault: faultproxy.Truncate, Keep: 3},
		} {
			rule.Every, rule.Times, rule.Methods, rule.Path = 1, 1, []string{"GET"}, "/wal/"
			p.SetRules(rule)
			r := run(t, spec.Env, append(append([]string{"wal-push", "--look-ahead", "0"}, spec.Flags()...), filepath.Join(c.DataDir, "pg_wal", name))...)
			if p.Injected(rule.Fault) == 0 {
				t.Fatalf("%s not injected", rule.Fault)
			}
			if r.code != 0 {
				t.Errorf("re-push of archived %s with one %s (keep %d) on the comparison read: want exit 0 (identical), got %s", name, rule.Fault, rule.Keep, r)
			}
		}
	})

	// A store that fails every download: 126 (PostgreSQL stops recovery)
	// after the retry timeout, nothing written; and for a missing file
	// too, since the store never said it is absent.
	t.Run("persistent faults", func(t *testing.T) {
		defer p.SetRules()
		short := withArgs(spec, "--retry-timeout", "1s")
		for _, f := range []faultproxy.Fault{faultproxy.InternalError, faultproxy.SlowDown, faultproxy.Reset, faultproxy.Truncate} {
			p.SetRules(faultproxy.Rule{Fault: f, Every: 1, Methods: []string{"GET", "HEAD"}, Path: "/wal/"})
			name := names[0]
			dest := filepath.Join(out, "persistent-"+name)
			r := fetch(t, short, name, dest)
			if r.code != 126 {
				t.Errorf("every download failing with %s: want exit 126, got %s", f, r)
			}
			checkFetched(t, r, dest, original[name])
			dest = filepath.Join(out, "persistent-missing")
			r = fetch(t, short, "0000000100000000000000FE", dest)
			switch {
			case f == faultproxy.InternalError || f == faultproxy.SlowDown:
				// The store's answer never arrives.
				if r.code != 126 {
					t.Errorf("a missing segment behind a store failing with %s: want 126 (cannot tell), got %s", f, r)
				}
			default:
				// The store's 404 arrives, only its error document is
				// cut: "not found" is a fair reading, success is not.
				if r.code != 1 && r.code != 126 {
					t.Errorf("a missing segment behind a store failing with %s: want 1 or 126, got %s", f, r)
				}
			}
			if _, err := os.Stat(dest); err == nil {
				t.Errorf("%s: destination created for a missing segment", f)
			}
		}
	})
}

// backupID extracts the id from backup --json output.
func backupID(r result) (string, error) {
	i := strings.Index(r.stdout, `"id": "`)
	if i < 0 || len(r.stdout) < i+7+16 {
		return "", errors.New("backup --json printed no id")
	}
	return r.stdout[i+7 : i+7+16], nil
}

func completeIDs(l listing) []string {
	var ids []string
	for _, b := range l.Backups {
		ids = append(ids, b.ID)
	}
	return ids
}

// faultyBackup runs a backup through spec and holds it to the contract:
// on success its id is listed as complete (looking without faults); on
// failure no new complete backup is listed. It returns the id or "".
func faultyBackup(t *testing.T, c *pgtest.Cluster, spec, direct repoSpec, extra ...string) (string, result) {
	t.Helper()
	before := completeIDs(list(t, direct))
	r := run(t, append(c.Env(), spec.Env...), append(append([]string{"backup", "--json", "--quiet"}, spec.Flags()...), extra...)...)
	after := completeIDs(list(t, direct))
	if r.code == 0 {
		id, err := backupID(r)
		if err != nil {
			t.Fatalf("%v: %s", err, r)
		}
		if !slices.Contains(after, id) {
			t.Fatalf("backup %s succeeded but is not listed as complete (%v): %s", id, after, r)
		}
		return id, r
	}
	if !slices.Equal(before, after) {
		t.Fatalf("backup failed (exit %d) yet the complete backups went from %v to %v: a completion record for a failed backup\n%s", r.code, before, after, r)
	}
	return "", r
}

// restoreInto runs restore through spec into a new directory.
func restoreInto(t *testing.T, spec repoSpec, extra ...string) (string, result) {
	t.Helper()
	dir := filepath.Join(pgtest.TempDir(t, "restore-"), "data")
	return dir, run(t, spec.Env, append(append([]string{"restore", "--pgdata", dir}, spec.Flags()...), extra...)...)
}

// checkFailedRestore: a failed restore says so and leaves a directory
// PostgreSQL refuses to start (no global/pg_control).
func checkFailedRestore(t *testing.T, dir string, r result) {
	t.Helper()
	if r.code == 0 {
		t.Fatalf("restore was expected to fail: %s", r)
	}
	if r.stderr == "" || strings.Contains(r.stderr, "panic:") {
		t.Fatalf("restore failed without a proper message: %s", r)
	}
	if _, err := os.Stat(filepath.Join(dir, "global", "pg_control")); err == nil {
		t.Fatalf("a failed restore installed global/pg_control: %s", r)
	}
}

// startRestored starts the restored cluster in dir and waits until
// recovery has finished; it fails at once if the server stops (a
// restore_command exiting 126 ends recovery with a FATAL error).
func startRestored(t *testing.T, dir string) *pgtest.Cluster {
	t.Helper()
	rc := pgtest.Adopt(t, dir, pgtest.BinDir(t))
	rc.Start(t)
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if !rc.Running() {
			t.Fatalf("the restored server stopped during recovery\nserver log:\n%s", rc.Log())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := pgx.Connect(ctx, rc.ConnString())
		if err == nil {
			var rec bool
			err = conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&rec)
			conn.Close(ctx)
			if err == nil && !rec {
				cancel()
				return rc
			}
		}
		cancel()
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the restored cluster did not finish recovery in 2 minutes\nserver log:\n%s", rc.Log())
	return nil
}

// backupFaults are the random faults of TestFaultsBackupAndRestore: about
// a fifth of all requests. Uncompressed 16 MiB objects are multipart
// uploads of four requests or more, retried as a whole (a fresh upload per
// attempt), so at the 30% of the WAL test one attempt in four would get
// through and ten in a row would fail for one object in sixteen.
func backupFaults() []faultproxy.Rule { return storageFaults(0.12) }

// TestFaultsBackupAndRestore backs up and restores through a faulty store:
// a backup either succeeds and restores with every committed row, or fails
// without a completion record; a restore either succeeds into a consistent
// cluster or fails leaving nothing startable.
func TestFaultsBackupAndRestore(t *testing.T) {
	spec, p := faultyRepo(t, backupFaults()...)
	// No compression: 16 MiB data objects and WAL segments are stored as
	// multipart uploads, so those requests meet faults too.
	spec = withArgs(spec, "--compression", "none")
	direct := faultFree(spec, p)
	start := time.Now()
	c := archivingCluster(t, spec, nil)
	c.Exec(t, "CREATE TABLE markers (id int PRIMARY KEY)")
	pgtest.Pgbench(t, c, "-i", "-q", "-s", "2")
	accounts := c.QueryString(t, "SELECT count(*)::text FROM pgbench_accounts")
	t.Logf("cluster ready in %v", time.Since(start).Round(time.Millisecond))

	t.Run("backup fails cleanly", func(t *testing.T) {
		defer p.SetRules(backupFaults()...)
		short := withArgs(spec, "--retry-timeout", "2s")
		for _, tc := range []struct {
			name string
			rule faultproxy.Rule
		}{
			{"data uploads fail", faultproxy.Rule{Fault: faultproxy.InternalError, Every: 1, Methods: []string{"PUT", "POST"}, Path: "/data/"}},
			{"WAL read-back fails", faultproxy.Rule{Fault: faultproxy.Reset, Every: 1, Methods: []string{"GET"}, Path: "/wal/"}},
			{"manifest upload fails", faultproxy.Rule{Fault: faultproxy.SlowDown, Every: 1, Methods: []string{"PUT"}, Path: "backup.json"}},
		} {
			p.SetRules(tc.rule)
			before := len(list(t, direct).Incomplete)
			id, r := faultyBackup(t, c, short, direct, "--wal-timeout", "10s")
			if id != "" {
				t.Fatalf("%s: backup %s reported success: %s", tc.name, id, r)
			}
			if n := len(list(t, direct).Incomplete); n != before+1 {
				t.Fatalf("%s: want the failed backup listed as incomplete (%d before, %d after)", tc.name, before, n)
			}
			t.Logf("%s: exit %d: %s", tc.name, r.code, lastLine(r.stderr))
		}
	})

	t.Run("a lost answer to the manifest upload", func(t *testing.T) {
		// The store keeps backup.json but the answer is lost: the retry
		// finds it there with the same content, so the backup succeeded.
		defer p.SetRules(backupFaults()...)
		for _, f := range []faultproxy.Fault{faultproxy.Reset, faultproxy.InternalError} {
			p.SetRules(faultproxy.Rule{Fault: f, Every: 1, Times: 1, Methods: []string{"PUT"}, Path: "backup.json", AfterForward: true})
			id, r := faultyBackup(t, c, spec, direct)
			if p.Injected(f) == 0 {
				t.Fatalf("%s on backup.json not injected", f)
			}
			if id == "" {
				t.Fatalf("backup whose manifest was stored (answer lost: %s) must succeed: %s", f, r)
			}
		}
	})

	// Backups through random faults.
	injected := p.Injected(faultproxy.None)
	var good string
	for attempt := 1; attempt <= 3 && good == ""; attempt++ {
		start := time.Now()
		id, r := faultyBackup(t, c, spec, direct)
		if id == "" {
			t.Logf("backup attempt %d through faults failed cleanly after %v: %s", attempt, time.Since(start).Round(time.Millisecond), lastLine(r.stderr))
			continue
		}
		t.Logf("backup %s through faults took %v", id, time.Since(start).Round(time.Millisecond))
		good = id
	}
	if good == "" {
		t.Fatalf("three backups through faults failed (%v); with --retry-timeout 60s at least one should succeed", p.Stats())
	}
	for i := 1; i <= 20; i++ {
		c.Exec(t, fmt.Sprintf("INSERT INTO markers (id) VALUES (%d)", i))
	}
	switchAndWait(t, c)
	if n := p.Injected(faultproxy.None) - injected; n == 0 {
		t.Fatalf("no fault was injected while backing up and archiving (%v)", p.Stats())
	} else {
		t.Logf("%d faults injected while backing up and archiving", n)
	}
	// What the store holds is intact (read without faults).
	start = time.Now()
	mustRun(t, direct.Env, append([]string{"verify", "--quiet", "--backup", good}, direct.Flags()...)...)
	t.Logf("verify took %v", time.Since(start).Round(time.Millisecond))

	check := func(t *testing.T, rc *pgtest.Cluster) {
		t.Helper()
		if got := markers(t, rc); got != seq(1, 20) {
			t.Fatalf("markers after restore: %q, want %q", got, seq(1, 20))
		}
		if got := rc.QueryString(t, "SELECT count(*)::text FROM pgbench_accounts"); got != accounts {
			t.Fatalf("pgbench_accounts has %s rows, want %s", got, accounts)
		}
	}

	t.Run("restore and recovery through faults", func(t *testing.T) {
		// restore_command fetches through the proxy too.
		before := p.Injected(faultproxy.None)
		dir, r := restoreInto(t, spec, "--backup", good, "--archive-off")
		if r.code != 0 {
			t.Fatalf("restore through faults with --retry-timeout 60s: %s", r)
		}
		rc := startRestored(t, dir)
		check(t, rc)
		t.Logf("%d faults injected while restoring and recovering", p.Injected(faultproxy.None)-before)
		amcheck(t, rc)
		rc.Stop(t, "fast")
	})

	t.Run("single faults on downloads are retried", func(t *testing.T) {
		defer p.SetRules(backupFaults()...)
		get := []string{"GET"}
		p.SetRules(
			faultproxy.Rule{Fault: faultproxy.Truncate, Every: 1, Times: 1, Methods: get, Path: "/data/", Keep: 3},
			faultproxy.Rule{Fault: faultproxy.Truncate, Every: 1, Times: 2, Methods: get, Path: "/data/"},
			faultproxy.Rule{Fault: faultproxy.Reset, Every: 1, Times: 2, Methods: get, Path: "/data/"},
			faultproxy.Rule{Fault: faultproxy.InternalError, Every: 1, Times: 1, Methods: get, Path: "/data/"},
			faultproxy.Rule{Fault: faultproxy.SlowDown, Every: 1, Times: 1, Methods: get, Path: "backup.json"},
			faultproxy.Rule{Fault: faultproxy.Reset, Every: 1, Times: 1, Methods: get, Path: "pgkeep.json", Keep: -1},
		)
		seen := len(p.Events())
		dir, r := restoreInto(t, spec, "--backup", good, "--archive-off")
		if r.code != 0 {
			t.Fatalf("a restore meeting a few transient faults must retry them and succeed: %s\nfaults: %v", r, p.Events()[seen:])
		}
		p.SetRules()
		check(t, startRestored(t, dir))
	})

	t.Run("restore fails cleanly", func(t *testing.T) {
		defer p.SetRules(backupFaults()...)
		p.SetRules(faultproxy.Rule{Fault: faultproxy.InternalError, Every: 1, Methods: []string{"GET"}, Path: "/data/"})
		dir, r := restoreInto(t, withArgs(spec, "--retry-timeout", "2s"), "--backup", good, "--archive-off")
		checkFailedRestore(t, dir, r)
		t.Logf("exit %d: %s", r.code, lastLine(r.stderr))
	})

	t.Run("restore through heavy faults", func(t *testing.T) {
		defer p.SetRules(backupFaults()...)
		for _, seed := range []uint64{11, 12} {
			p.SetRules(faultproxy.Flaky(0.6)...)
			p.Seed(seed)
			dir, r := restoreInto(t, withArgs(spec, "--retry-timeout", "3s"), "--backup", good, "--archive-off")
			p.SetRules()
			if r.code != 0 {
				t.Logf("seed %d: restore failed: %s", seed, lastLine(r.stderr))
				checkFailedRestore(t, dir, r)
				continue
			}
			t.Logf("seed %d: restore succeeded", seed)
			rc := startRestored(t, dir)
			check(t, rc)
			rc.Stop(t, "fast")
		}
	})
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		return s[i+1:]
	}
	return s
}
