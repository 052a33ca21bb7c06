package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgkeep/pgkeep/internal/pgtest"
)

// TestAgentRPO measures the RPO by killing the machine: a client commits a
// marker row every 100 ms and records when each commit was acknowledged;
// at a random moment PostgreSQL and the agent are killed with SIGKILL and
// the data directory is removed; the cluster is restored from the
// repository and the markers counted. The loss window of a kill is the
// age, at the moment of the kill, of the oldest acknowledged commit that
// is missing (0 when none is). With the defaults it must be at most 5 s
// in every run, on a file repository and on MinIO; with --synchronous no
// acknowledged commit may be missing.
//
// PGKEEP_RPO_KILLS sets the kills per configuration (default 1; make
// rpo-bench runs 20 and prints p50, p99 and max).
func TestAgentRPO(t *testing.T) {
	kills := 1
	if v := os.Getenv("PGKEEP_RPO_KILLS"); v != "" {
		kills, _ = strconv.Atoi(v)
	}
	configs := []struct {
		name  string
		s3    bool
		flags []string
		sync  bool
	}{
		{"file-defaults", false, nil, false},
		{"minio-defaults", true, nil, false},
		{"file-synchronous", false, []string{"--synchronous"}, true},
		{"minio-synchronous", true, []string{"--synchronous"}, true},
	}
	if kills < 1 {
		kills = 1
	}
	var report []string
	for _, cf := range configs {
		n := kills
		t.Run(cf.name, func(t *testing.T) {
			var windows []time.Duration
			var commitLatency []time.Duration
			missingTotal := 0
			for i := 0; i < n; i++ {
				// Each kill in its own subtest: its cluster, repository
				// and MinIO go when it ends, and a failure names it.
				var res rpoResult
				if !t.Run(fmt.Sprintf("kill%d", i+1), func(t *testing.T) { res = rpoKill(t, cf.s3, cf.flags, cf.sync) }) {
					continue
				}
				windows = append(windows, res.window)
				commitLatency = append(commitLatency, res.commitP50)
				missingTotal += res.missing
				t.Logf("kill %d: after %s, %d commits acknowledged, %d missing, loss window %s (commit latency p50 %s)",
					i+1, res.ran.Round(time.Millisecond), res.acked, res.missing, res.window.Round(time.Millisecond), res.commitP50.Round(100*time.Microsecond))
				if cf.sync && res.missing > 0 {
					t.Errorf("--synchronous: %d acknowledged commits missing after kill %d", res.missing, i+1)
				}
				if res.window > 5*time.Second {
					t.Errorf("kill %d lost %s of acknowledged commits, more than 5 s", i+1, res.window)
				}
			}
			line := fmt.Sprintf("%-18s kills %2d  loss window p50 %6s  p99 %6s  max %6s  missing commits %d  commit latency p50 %s",
				cf.name, len(windows), pct(windows, 50), pct(windows, 99), pct(windows, 100), missingTotal, pct(commitLatency, 50))
			t.Log(line)
			report = append(report, line)
		})
	}
	t.Log("RPO by killing the machine:\n" + strings.Join(report, "\n"))
}

// pct returns the p-th percentile (nearest rank) of ds, rounded for a table.
func pct(ds []time.Duration, p int) string {
	if len(ds) == 0 {
		return "-"
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	k := (p*len(s) + 99) / 100
	k = max(1, min(k, len(s)))
	d := s[k-1]
	if d < time.Millisecond {
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}

type rpoResult struct {
	ran       time.Duration
	acked     int
	missing   int
	window    time.Duration
	commitP50 time.Duration
}

// rpoKill runs one kill: a fresh cluster and repository, the agent, a
// backup, markers every 100 ms for 3 to 8 s, the kill, a restore.
func rpoKill(t *testing.T, s3 bool, flags []string, synchronous bool) rpoResult {
	repo := fileRepo(t)
	if s3 {
		repo = s3Repo(t)
	}
	c := pgtest.NewCluster(t, pgtest.Options{Conf: map[string]string{"max_wal_size": "1GB", "checkpoint_timeout": "1h"}})
	c.Start(t)
	c.Exec(t, "CREATE TABLE markers (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
	ag := startAgent(t, c, repo, flags...)
	waitLog(t, ag, "streaming timeline", 30*time.Second)
	if synchronous {
		c.Exec(t, "ALTER SYSTEM SET synchronous_standby_names = 'pgkeep'")
		c.Reload(t)
		deadline := time.Now().Add(30 * time.Second)
		for c.QueryString(t, "SELECT coalesce(max(sync_state), '') FROM pg_stat_replication WHERE application_name = 'pgkeep'") != "sync" {
			if time.Now().After(deadline) {
				t.Fatalf("the agent did not become the synchronous standby:\n%s", ag.Log())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	backup(t, c, repo)

	// The client: a marker every 100 ms, each acknowledgement's time.
	conn, err := pgx.Connect(context.Background(), c.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	acked := map[int]time.Time{}
	var latencies []time.Duration
	stop := make(chan struct{})
	clientDone := make(chan struct{})
	go func() {
		defer close(clientDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for id := 1; ; id++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			began := time.Now()
			if _, err := conn.Exec(context.Background(), "INSERT INTO markers (id) VALUES ($1)", id); err != nil {
				return // the server died
			}
			at := time.Now()
			mu.Lock()
			acked[id] = at
			latencies = append(latencies, at.Sub(began))
			mu.Unlock()
		}
	}()
	ran := 3*time.Second + time.Duration(rand.Int64N(int64(5*time.Second)))
	time.Sleep(ran)

	// The machine dies: the agent and PostgreSQL at once.
	killedAt := time.Now()
	ag.Kill()
	killCluster(t, c)
	close(stop)
	<-clientDone
	conn.Close(context.Background())

	r := restoreAndStart(t, repo, "--archive-off")
	present := map[int]bool{}
	for _, f := range strings.Split(markers(t, r), ",") {
		if id, err := strconv.Atoi(f); err == nil {
			present[id] = true
		}
	}
	r.Stop(t, "immediate")

	mu.Lock()
	defer mu.Unlock()
	res := rpoResult{ran: ran}
	var oldestMissing time.Time
	for id, at := range acked {
		if !at.Before(killedAt) {
			continue
		}
		res.acked++
		if !present[id] {
			res.missing++
			if oldestMissing.IsZero() || at.Before(oldestMissing) {
				oldestMissing = at
			}
		}
	}
	if res.acked < 10 {
		t.Fatalf("only %d commits acknowledged before the kill", res.acked)
	}
	if !oldestMissing.IsZero() {
		res.window = killedAt.Sub(oldestMissing)
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	res.commitP50 = latencies[len(latencies)/2]
	return res
}

// TestAgentCost counts the agent's requests to the object store (MinIO,
// through a counting proxy) on an idle database, which must make none,
// and on a busy one (pgbench at a steady rate), and reports them per hour.
// PGKEEP_AGENT_COST_SECONDS sets each measurement's length (default 5;
// make rpo-bench runs 60).
func TestAgentCost(t *testing.T) {
	secs := 5
	if v := os.Getenv("PGKEEP_AGENT_COST_SECONDS"); v != "" {
		secs, _ = strconv.Atoi(v)
	}
	repo, proxy := faultyRepo(t)
	c := pgtest.NewCluster(t, pgtest.Options{Conf: map[string]string{"max_wal_size": "1GB", "checkpoint_timeout": "1h", "autovacuum": "off"}})
	c.Start(t)
	pgtest.Pgbench(t, c, "-i", "-q", "-s", "1")
	ag := startAgent(t, c, repo)
	waitLog(t, ag, "streaming timeline", 30*time.Second)
	waitAgentFlushed(t, c, ag)

	// Idle: nothing written, nothing uploaded. PostgreSQL itself may log a
	// standby snapshot now and then after activity: a window in which the
	// server's WAL moved does not count, and is measured again.
	var idle int64
	for try := 0; ; try++ {
		time.Sleep(time.Second) // let the last upload settle
		lsn := c.QueryString(t, "SELECT pg_current_wal_flush_lsn()::text")
		before := proxy.Stats().Requests
		time.Sleep(time.Duration(secs) * time.Second)
		idle = proxy.Stats().Requests - before
		if c.QueryString(t, "SELECT pg_current_wal_flush_lsn()::text") == lsn {
			break
		}
		if try == 3 {
			t.Fatalf("the server kept writing WAL while idle")
		}
	}
	if idle != 0 {
		t.Errorf("an idle database made the agent send %d requests in %d s", idle, secs)
	}

	// Busy: pgbench at 200 transactions a second.
	before := proxy.Stats().Requests
	began := time.Now()
	lsn0 := c.QueryString(t, "SELECT pg_current_wal_flush_lsn()::text")
	pgtest.Pgbench(t, c, "-n", "-c", "2", "-R", "200", "-T", strconv.Itoa(secs))
	waitAgentFlushed(t, c, ag)
	busy := proxy.Stats().Requests - before
	elapsed := time.Since(began)
	walBytes := c.QueryString(t, "SELECT (pg_current_wal_flush_lsn() - $1::pg_lsn)::bigint::text", lsn0)
	perHour := float64(busy) / elapsed.Hours()
	t.Logf("requests to the store: idle %d in %d s (0 per hour); busy (pgbench 200 tps, %s bytes of WAL in %s) %d, %.0f per hour",
		idle, secs, walBytes, elapsed.Round(100*time.Millisecond), busy, perHour)
	if perHour > 2*3600+3600 {
		t.Errorf("busy: %.0f requests per hour, more than about one a second plus segments", perHour)
	}
}
