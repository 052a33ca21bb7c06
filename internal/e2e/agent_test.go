package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/faultproxy"
	"github.com/pgkeep/pgkeep/internal/pgtest"
)

// agentProc is a running pgkeep agent.
type agentProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  bytes.Buffer
	done chan struct{}
	err  error
}

func (p *agentProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.Write(b)
}

// Log returns what the agent logged so far.
func (p *agentProc) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// startAgent runs pgkeep agent against c, as the database's OS user.
func startAgent(t testing.TB, c *pgtest.Cluster, repo repoSpec, extra ...string) *agentProc {
	t.Helper()
	args := append(append([]string{"agent"}, repo.Flags()...), extra...)
	if !slices.ContainsFunc(extra, func(a string) bool { return strings.HasPrefix(a, "--listen") }) {
		// Not the default port: a test must not depend on it being free.
		args = append(args, "--listen", "127.0.0.1:0")
	}
	cmd := pgtest.Command(context.Background(), pgkeepBin(t), args...)
	cmd.Env = append(append(cmd.Env, c.Env()...), repo.Env...)
	p := &agentProc{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p, p
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.Kill() })
	return p
}

// Stop sends SIGTERM and waits for the agent to exit; it returns the exit
// error.
func (p *agentProc) Stop(t testing.TB) error {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		t.Fatalf("the agent did not stop on SIGTERM within a minute:\n%s", p.Log())
	}
	return p.err
}

// Kill kills the agent with SIGKILL.
func (p *agentProc) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Exited reports whether the agent has exited.
func (p *agentProc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitAgentFlushed waits until the agent has reported as flushed all WAL
// the server has flushed now: it is in the repository.
func waitAgentFlushed(t testing.TB, c *pgtest.Cluster, p *agentProc) {
	t.Helper()
	target := c.QueryString(t, "SELECT pg_current_wal_flush_lsn()::text")
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if c.QueryString(t, "SELECT coalesce(bool_or(flush_lsn >= $1::pg_lsn), false)::text FROM pg_stat_replication WHERE application_name = 'pgkeep'", target) == "true" {
			return
		}
		if p.Exited() {
			t.Fatalf("the agent exited (%v):\n%s", p.err, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the agent did not store the WAL up to %s within a minute:\n%s", target, p.Log())
}

// waitLog waits until the agent's log has a line containing s.
func waitLog(t testing.TB, p *agentProc, s string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if strings.Contains(p.Log(), s) {
			return
		}
		if p.Exited() {
			t.Fatalf("the agent exited (%v) before logging %q:\n%s", p.err, s, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the agent did not log %q within %s:\n%s", s, within, p.Log())
}

// killCluster kills the postmaster and every server process with SIGKILL,
// as a machine that dies would, and removes the data directory.
func killCluster(t testing.TB, c *pgtest.Cluster) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(c.DataDir, "postmaster.pid"))
	if err != nil {
		t.Fatalf("reading postmaster.pid: %v", err)
	}
	var pid int
	fmt.Sscanf(string(data), "%d", &pid)
	// The postmaster's children first, in one go with it.
	out, _ := exec.Command("pgrep", "-P", fmt.Sprint(pid)).Output()
	syscall.Kill(pid, syscall.SIGKILL)
	for _, f := range strings.Fields(string(out)) {
		var child int
		fmt.Sscanf(f, "%d", &child)
		syscall.Kill(child, syscall.SIGKILL)
	}
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	os.RemoveAll(c.DataDir)
}

// walListing is the WAL part of list --json.
type walListing struct {
	WAL struct {
		Timelines []struct {
			Timeline int `json:"timeline"`
			Segments int `json:"segments"`
			Streamed []struct {
				Segment string `json:"segment"`
				End     uint64 `json:"streamed_to_offset"`
				Hole    bool   `json:"hole"`
			} `json:"streamed"`
			Garbage int `json:"garbage_pieces"`
		} `json:"timelines"`
		Histories []string `json:"history_files"`
	} `json:"wal"`
}

func listWAL(t testing.TB, repo repoSpec) walListing {
	t.Helper()
	r := mustRun(t, repo.Env, append([]string{"list", "--json"}, repo.Flags()...)...)
	var l walListing
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	return l
}

// TestAgent is the agent's story on a server without archive_command:
// stream into an empty repository (the agent creates its identity and the
// slot), a backup whose WAL only the agent delivers, commits streamed
// within the interval, a server restart the agent rides out, a clean
// stop, the machine lost and restored to the last streamed byte; then the
// agent on the restored server, on its new timeline (the history file
// stored), resuming into the same repository, and a second restore with
// everything back; status shows the streamed position; expire removes the
// pieces of segments stored whole.
func TestAgent(t *testing.T) {
	repo := fileRepo(t)
	c := pgtest.NewCluster(t, pgtest.Options{Conf: map[string]string{"max_wal_size": "1GB"}})
	c.Start(t)
	c.Exec(t, "CREATE TABLE markers (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
	ag := startAgent(t, c, repo)
	waitLog(t, ag, "created physical replication slot pgkeep", 30*time.Second)
	waitLog(t, ag, "streaming timeline 1", 30*time.Second)
	backup(t, c, repo)

	for i := 1; i <= 5; i++ {
		c.Exec(t, fmt.Sprintf("INSERT INTO markers (id) VALUES (%d)", i))
	}
	waitAgentFlushed(t, c, ag)
	l := listWAL(t, repo)
	if len(l.WAL.Timelines) != 1 || len(l.WAL.Timelines[0].Streamed) == 0 || l.WAL.Timelines[0].Segments == 0 {
		t.Fatalf("after a backup and commits the repository should hold whole segments and a streamed tail: %+v\n%s", l.WAL, ag.Log())
	}

	// The server restarts; the agent reconnects and resumes.
	c.Stop(t, "fast")
	c.Start(t)
	waitLog(t, ag, "retrying in", 30*time.Second)
	for i := 6; i <= 10; i++ {
		c.Exec(t, fmt.Sprintf("INSERT INTO markers (id) VALUES (%d)", i))
	}
	waitAgentFlushed(t, c, ag)
	if err := ag.Stop(t); err != nil {
		t.Fatalf("agent stopped with %v:\n%s", err, ag.Log())
	}
	if !strings.Contains(ag.Log(), "stopped; the repository holds the WAL up to") {
		t.Fatalf("no stop line:\n%s", ag.Log())
	}
	st := mustRun(t, repo.Env, append([]string{"status", "--json", "--no-server"}, repo.Flags()...)...)
	if !strings.Contains(st.stdout, `"streamed_lsn"`) || !strings.Contains(st.stdout, "streamed") {
		t.Fatalf("status shows no streamed position:\n%s", st.stdout)
	}

	// The machine is lost; the restore replays up to the last streamed
	// byte, from the pieces of the last segment.
	killCluster(t, c)
	r := restoreAndStart(t, repo)
	if got := markers(t, r); got != seq(1, 10) {
		t.Fatalf("restore from the streamed WAL: markers %q, want %q\nagent log:\n%s", got, seq(1, 10), ag.Log())
	}

	// The agent on the restored server (timeline 2) resumes into the same
	// repository.
	ag2 := startAgent(t, r, repo)
	waitLog(t, ag2, "stored timeline history file 00000002.history", 30*time.Second)
	waitLog(t, ag2, "streaming timeline 2", 30*time.Second)
	for i := 11; i <= 15; i++ {
		r.Exec(t, fmt.Sprintf("INSERT INTO markers (id) VALUES (%d)", i))
	}
	waitAgentFlushed(t, r, ag2)
	ag2.Kill()
	killCluster(t, r)
	r2 := restoreAndStart(t, repo)
	if got := markers(t, r2); got != seq(1, 15) {
		t.Fatalf("second restore, across the timeline switch: markers %q, want %q\nagent log:\n%s", got, seq(1, 15), ag2.Log())
	}
	r2.Stop(t, "immediate")

	if res := run(t, nil, append([]string{"verify"}, repo.Flags()...)...); res.code != 0 {
		t.Fatalf("verify: %s", res)
	}
	before := 0
	for _, tl := range listWAL(t, repo).WAL.Timelines {
		before += tl.Garbage
	}
	mustRun(t, nil, append([]string{"expire", "--keep", "1"}, repo.Flags()...)...)
	after := 0
	for _, tl := range listWAL(t, repo).WAL.Timelines {
		after += tl.Garbage
	}
	if before == 0 || after != 0 {
		t.Fatalf("pieces of segments stored whole: %d before expire, %d after (want some, then none)", before, after)
	}
}

// TestAgentEncrypted: in an encrypted repository the agent, a writer with
// only the recipients, stores the streamed pieces encrypted like segments
// (no plaintext of a commit that exists only in pieces), and a restore
// with the identity replays them.
func TestAgentEncrypted(t *testing.T) {
	keys := pgtest.TempDir(t, "keys-")
	ident := filepath.Join(keys, "id")
	mustRun(t, nil, "key", "generate", "--output", ident)
	repo := fileRepo(t)
	writer := repo
	writer.Args = append(append([]string(nil), repo.Args...), "--age-recipients", ident+".pub")
	reader := repo
	reader.Args = append(append([]string(nil), repo.Args...), "--age-identity", ident)

	c := pgtest.NewCluster(t, pgtest.Options{})
	c.Start(t)
	ag := startAgent(t, c, writer)
	waitLog(t, ag, "streaming timeline", 30*time.Second)
	c.Exec(t, "CREATE TABLE secrets (s text)")
	backup(t, c, writer)
	canary := "PGKEEP-STREAMED-CANARY"
	c.Exec(t, "INSERT INTO secrets SELECT '"+canary+"' || g FROM generate_series(1, 500) g")
	waitAgentFlushed(t, c, ag)
	ag.Kill()
	killCluster(t, c)

	root := strings.TrimPrefix(repo.URL, "file://")
	pieces := 0
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return nil
		}
		if strings.Contains(p, "/streamed/") {
			pieces++
		}
		if data, _ := os.ReadFile(p); bytes.Contains(data, []byte(canary)) {
			t.Errorf("plaintext found in %s", p)
		}
		return nil
	})
	if pieces == 0 {
		t.Fatal("no streamed pieces in the repository")
	}
	r := restoreAndStart(t, reader, "--archive-off")
	if got := r.QueryString(t, "SELECT count(*)::text FROM secrets"); got != "500" {
		t.Fatalf("restored %s rows of 500 streamed ones", got)
	}
}

// TestAgentStoreDown: while the object store refuses every write,
// commits go on (the agent is asynchronous), the agent retries with
// backoff, the slot keeps the WAL it has not stored and the agent reports
// that retention past its threshold; once the store is back it catches up
// and a restore has every commit.
func TestAgentStoreDown(t *testing.T) {
	repo, proxy := faultyRepo(t)
	repo = withArgs(repo, "--retry-timeout", "2s")
	c := pgtest.NewCluster(t, pgtest.Options{Conf: map[string]string{"max_wal_size": "1GB"}})
	c.Start(t)
	c.Exec(t, "CREATE TABLE markers (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
	ag := startAgent(t, c, repo, "--slot-warn-size", "2MB", "--slot-check-interval", "1s")
	waitLog(t, ag, "streaming timeline", 30*time.Second)
	backup(t, c, repo)
	waitAgentFlushed(t, c, ag)

	proxy.SetRules(faultproxy.Rule{Fault: faultproxy.SlowDown, Every: 1, Methods: []string{"PUT"}})
	for i := 1; i <= 20; i++ {
		c.Exec(t, fmt.Sprintf("INSERT INTO markers (id) VALUES (%d)", i))
		c.Exec(t, "SELECT pg_logical_emit_message(false, 'pgkeep-test', repeat('x', 200000))")
	}
	waitLog(t, ag, "retrying in", time.Minute)
	waitLog(t, ag, "of WAL on the server (more than 2.0 MiB)", time.Minute)

	proxy.SetRules()
	waitAgentFlushed(t, c, ag)
	waitLog(t, ag, "again, below", time.Minute)
	ag.Kill()
	killCluster(t, c)
	r := restoreAndStart(t, repo, "--archive-off")
	if got := markers(t, r); got != seq(1, 20) {
		t.Fatalf("after the store came back: markers %q, want %q\n%s", got, seq(1, 20), ag.Log())
	}
}

// TestAgentMissingWAL: when the server no longer has the WAL the
// repository needs next (the slot was dropped while the agent was away and
// the server recycled the WAL), the agent stops with an error that names
// what is missing instead of leaving a silent gap; --accept-gap streams
// from what the server has, and the gap shows in status.
func TestAgentMissingWAL(t *testing.T) {
	repo := fileRepo(t)
	c := pgtest.NewCluster(t, pgtest.Options{Conf: map[string]string{"max_wal_size": "64MB", "min_wal_size": "32MB"}})
	c.Start(t)
	ag := startAgent(t, c, repo)
	waitLog(t, ag, "streaming timeline", 30*time.Second)
	c.Exec(t, "CREATE TABLE t (x int)")
	waitAgentFlushed(t, c, ag)
	if err := ag.Stop(t); err != nil {
		t.Fatal(err)
	}
	c.Exec(t, "SELECT pg_drop_replication_slot('pgkeep')")
	for i := 0; i < 4; i++ {
		c.Exec(t, "SELECT pg_logical_emit_message(false, 'pgkeep-test', repeat('x', 100000))")
		c.QueryString(t, "SELECT pg_switch_wal()::text")
	}
	c.Exec(t, "CHECKPOINT")
	c.Exec(t, "CHECKPOINT")

	ag2 := startAgent(t, c, repo)
	select {
	case <-ag2.done:
	case <-time.After(20 * time.Second):
		ag2.cmd.Process.Signal(syscall.SIGQUIT)
		<-ag2.done
		t.Fatalf("the agent did not stop:\n%s", ag2.Log())
	}
	log := ag2.Log()
	if ag2.cmd.ProcessState.ExitCode() != 1 || !strings.Contains(log, "WAL is missing that the server can no longer provide") ||
		!strings.Contains(log, "000000010000000000000001") || !strings.Contains(log, "--accept-gap") {
		t.Fatalf("exit %d:\n%s", ag2.cmd.ProcessState.ExitCode(), log)
	}

	t.Logf("the agent stopped with:\n%s", log)
	ag3 := startAgent(t, c, repo, "--accept-gap")
	waitLog(t, ag3, "leaving a gap", 30*time.Second)
	waitLog(t, ag3, "skipping the WAL the server no longer has", 30*time.Second)
	c.Exec(t, "INSERT INTO t VALUES (1)")
	waitAgentFlushed(t, c, ag3)
	ag3.Kill()
	l := listWAL(t, repo)
	if len(l.WAL.Timelines) == 0 {
		t.Fatalf("no WAL: %+v", l)
	}
}

// waitAgentFlushedTo waits until the agent connected to c has reported
// the WAL up to target as stored.
func waitAgentFlushedTo(t testing.TB, c *pgtest.Cluster, p *agentProc, target string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if c.QueryString(t, "SELECT coalesce(bool_or(flush_lsn >= $1::pg_lsn), false)::text FROM pg_stat_replication WHERE application_name = 'pgkeep'", target) == "true" {
			return
		}
		if p.Exited() {
			t.Fatalf("the agent exited (%v):\n%s", p.err, p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the agent did not store the WAL up to %s within a minute:\n%s", target, p.Log())
}

// TestAgentFollowsPromotion: the agent streams from a standby; when the
// standby is promoted, the server ends the old timeline under the agent,
// which follows the new one on a new connection, storing its history
// file; a restore replays both timelines.
func TestAgentFollowsPromotion(t *testing.T) {
	repo := fileRepo(t)
	p := pgtest.NewCluster(t, pgtest.Options{Conf: map[string]string{"max_wal_size": "1GB"}})
	p.Start(t)
	p.Exec(t, "CREATE TABLE markers (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
	dir := filepath.Join(pgtest.TempDir(t, "standby-"), "data")
	cmd := p.Command(context.Background(), "pg_basebackup", "-D", dir, "-R", "-X", "stream", "-c", "fast")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg_basebackup: %v\n%s", err, out)
	}
	s := pgtest.Adopt(t, dir, "")
	s.Start(t)
	ag := startAgent(t, s, repo)
	waitLog(t, ag, "streaming timeline 1", 30*time.Second)
	for i := 1; i <= 5; i++ {
		p.Exec(t, fmt.Sprintf("INSERT INTO markers (id) VALUES (%d)", i))
	}
	waitAgentFlushedTo(t, s, ag, p.QueryString(t, "SELECT pg_current_wal_flush_lsn()::text"))

	p.Stop(t, "fast")
	s.Exec(t, "SELECT pg_promote()")
	s.WaitPromoted(t, time.Minute)
	waitLog(t, ag, "the server ended timeline 1", 30*time.Second)
	waitLog(t, ag, "stored timeline history file 00000002.history", 30*time.Second)
	waitLog(t, ag, "streaming timeline 2", 30*time.Second)
	backup(t, s, repo)
	for i := 6; i <= 10; i++ {
		s.Exec(t, fmt.Sprintf("INSERT INTO markers (id) VALUES (%d)", i))
	}
	waitAgentFlushed(t, s, ag)
	ag.Kill()
	killCluster(t, s)
	r := restoreAndStart(t, repo, "--archive-off")
	if got := markers(t, r); got != seq(1, 10) {
		t.Fatalf("after the promotion: markers %q, want %q\n%s", got, seq(1, 10), ag.Log())
	}
}
