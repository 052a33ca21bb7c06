package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/pgtest"
)

// TestCrashLoop kills pgkeep with SIGKILL at random moments, over and
// over, while it archives WAL (about half the archive_command calls are
// killed at a random instant) and while it takes backups. Afterwards the
// archive and every completed backup verify, and a restore to the end has
// every row committed before the last segment that was archived.
// PGKEEP_CRASH_ROUNDS sets the number of rounds (default 20; the long mode
// is 200). Every random choice follows from one seed, printed at the start;
// PGKEEP_CRASH_SEED replays a run with it (as far as PostgreSQL's own
// timing repeats: the kills of archive_command depend on the segment name
// and the attempt, the kills of backups on the round).
func TestCrashLoop(t *testing.T) {
	rounds := 20
	if v := os.Getenv("PGKEEP_CRASH_ROUNDS"); v != "" {
		rounds, _ = strconv.Atoi(v)
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("PGKEEP_CRASH_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("PGKEEP_CRASH_SEED=%q: %v", v, err)
		}
	}
	t.Logf("crash loop seed %d (replay with PGKEEP_CRASH_SEED=%d)", seed, seed)
	repo := fileRepo(t)
	dir := pgtest.TempDir(t, "crash-")
	script := filepath.Join(dir, "archive.sh")
	push := repo.Shell(pgkeepBin(t), "wal-push")
	os.WriteFile(script, []byte(fmt.Sprintf(`#!/bin/sh
# Kill wal-push with SIGKILL at a pseudo-random instant in about half the
# calls: the choice follows from the seed, the file and the attempt.
n=$(basename "$1"); a=$(cat %[1]s/attempt.$n 2>/dev/null || echo 0); echo $((a + 1)) > %[1]s/attempt.$n
r=$(printf '%%s %%s %%s' %[2]d "$n" "$a" | cksum | cut -d' ' -f1)
if [ $((r %% 2)) -eq 0 ]; then
	timeout -s KILL "0.$((r %% 300 + 1))" %[3]s "$1" || exit 1
	exit 0
fi
exec %[3]s "$1"
`, dir, seed, push)), 0o755)
	c := archivingCluster(t, repo, map[string]string{"archive_command": script + " %p"})
	c.Exec(t, "CREATE TABLE markers (id int PRIMARY KEY)")
	pgtest.Pgbench(t, c, "-i", "-q", "-s", "2")

	rng := rand.New(rand.NewPCG(seed, 1))
	id, killed, completed := 0, 0, 0
	for round := 0; round < rounds; round++ {
		for i := 0; i < 5; i++ {
			id++
			c.Exec(t, fmt.Sprintf("INSERT INTO markers VALUES (%d)", id))
		}
		c.Exec(t, "SELECT pg_logical_emit_message(false, 'crash', repeat('x', 100000))")
		c.QueryString(t, "SELECT pg_switch_wal()::text")
		// A backup killed at a random moment (some finish first).
		ctx, cancel := context.WithCancel(context.Background())
		cmd := pgtest.Command(ctx, pgkeepBin(t), append([]string{"backup", "--quiet", "--wal-timeout", "30s"}, repo.Flags()...)...)
		cmd.Env = append(cmd.Env, c.Env()...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err == nil {
				completed++
			}
		case <-time.After(time.Duration(rng.IntN(1500)) * time.Millisecond):
			cmd.Process.Signal(syscall.SIGKILL)
			<-done
			killed++
		}
		cancel()
	}
	t.Logf("%d rounds: %d backups killed, %d completed", rounds, killed, completed)

	// Archive normally again and let the archiver catch up.
	c.Exec(t, "ALTER SYSTEM SET archive_command = '"+strings.ReplaceAll(push, "'", "''")+" %p'")
	c.Exec(t, "SELECT pg_reload_conf()")
	id++
	c.Exec(t, fmt.Sprintf("INSERT INTO markers VALUES (%d)", id))
	if completed == 0 {
		backup(t, c, repo)
	}
	switchAndWait(t, c)

	if r := run(t, nil, append([]string{"verify"}, repo.Flags()...)...); r.code != 0 {
		t.Fatalf("after %d crashes the repository does not verify: %s", killed, r)
	}
	c.Stop(t, "immediate")
	r := restoreAndStart(t, repo, "--archive-off")
	if got := r.QueryString(t, "SELECT count(*)::text FROM markers"); got != strconv.Itoa(id) {
		t.Fatalf("restore to the end has %s of %d committed markers", got, id)
	}
	amcheck(t, r)
}
