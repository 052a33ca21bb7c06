package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

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
