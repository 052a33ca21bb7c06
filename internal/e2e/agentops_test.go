package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/pgtest"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// metrics is one scrape of /metrics: series (name plus labels as written)
// to value.
type metrics map[string]float64

func scrape(t testing.TB, addr string) metrics {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scraping /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	m := metrics{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m
}

// get returns a series' value, failing the test when it is absent.
func (m metrics) get(t testing.TB, series string) float64 {
	t.Helper()
	v, ok := m[series]
	if !ok {
		t.Fatalf("/metrics has no series %s", series)
	}
	return v
}

// backupsListing is the backups part of list --json.
type backupsListing struct {
	Backups []struct {
		ID       string    `json:"id"`
		StopTime time.Time `json:"stop_time"`
		Stored   int64     `json:"stored"`
		Size     int64     `json:"size"`
		Duration float64   `json:"duration_seconds"`
		Timeline uint32    `json:"timeline"`
	} `json:"backups"`
	Incomplete []json.RawMessage `json:"incomplete"`
}

func listBackups(t testing.TB, repo repoSpec) backupsListing {
	t.Helper()
	r := mustRun(t, repo.Env, append([]string{"list", "--json"}, repo.Flags()...)...)
	var l backupsListing
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	return l
}

// writeAgentConf writes the agent's config file (readable by the database's OS
// user, who runs the agent).
func writeAgentConf(t testing.TB, path string, lines ...string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func countLines(log, s string) int { return strings.Count(log, s) }

// TestAgentOperations is the agent as the only thing an operator runs:
// with a config file that schedules a full backup every 3 s, retention
// keeping two, and a verify every 4 s, it backs up (its WAL streamed by the agent
// itself: the server has no archive_command), expires and verifies, one
// run at a time, each one line; /metrics gives figures that match what
// pgkeep list says and that follow the writes; the status page, loaded in
// a real headless Chromium on a phone-sized window, shows the backups,
// the timeline and the runs, and its screenshot is kept; SIGHUP with a
// bad schedule keeps the old one and says why, with a good one applies
// it; SIGTERM during a backup exits 0 with nothing half-written listed
// and every streamed byte stored.
func TestAgentOperations(t *testing.T) {
	chromium, _ := exec.LookPath("chromium")
	pgtest.Require(t, "chromium", chromium != "", "scripts/test-deps.sh installs Debian's chromium")
	repo := fileRepo(t)
	c := pgtest.NewCluster(t, pgtest.Options{Conf: map[string]string{"max_wal_size": "1GB"}})
	c.Start(t)
	c.Exec(t, "CREATE TABLE t (id int PRIMARY KEY, pad text)")
	c.Exec(t, "INSERT INTO t SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
	dir := pgtest.TempDir(t, "pgkeep-agentops-")
	conf := filepath.Join(dir, "pgkeep.conf")
	writeAgentConf(t, conf, "repo = "+repo.URL, "backup-schedule = 3s", "keep = 2", "verify-schedule = 4s")
	addr := fmt.Sprintf("127.0.0.1:%d", pgtest.FreePort(t))
	ag := startAgent(t, c, repoSpec{URL: repo.URL}, "--config", conf, "--listen", addr, "--metrics-max-age", "200ms", "--backup-type", "full")
	waitLog(t, ag, "metrics at http://"+addr+"/metrics", 30*time.Second)

	// The schedules run: backups, retention after each, verify.
	deadline := time.Now().Add(3 * time.Minute)
	for {
		log := ag.Log()
		if countLines(log, "pgkeep agent: backup ok") >= 3 && strings.Contains(log, "pgkeep agent: expire ok") &&
			strings.Contains(log, "removed 1 backups") && strings.Contains(log, "pgkeep agent: verify ok") {
			break
		}
		if time.Now().After(deadline) || ag.Exited() {
			t.Fatalf("after 3 minutes, not 3 backups, an expire that removed one and a verify:\n%s", log)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, line := range strings.Split(ag.Log(), "\n") {
		if strings.Contains(line, "FAILED") {
			t.Errorf("a run failed: %s", line)
		}
	}

	// SIGHUP with a bad schedule: the old one stays, and the log says why.
	writeAgentConf(t, conf, "repo = "+repo.URL, "backup-schedule = every banana", "keep = 2", "verify-schedule = 4s")
	ag.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, ag, "SIGHUP: the configuration has an error: setting backup-schedule (from config file "+conf+")", 10*time.Second)
	waitLog(t, ag, "keeping the configuration in force (backups 3s", time.Second)
	before := countLines(ag.Log(), "pgkeep agent: backup ok")
	for countLines(ag.Log(), "pgkeep agent: backup ok") == before {
		if ag.Exited() || time.Now().After(deadline) {
			t.Fatalf("no backup after the bad SIGHUP: the old schedule should stay:\n%s", ag.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// SIGHUP with a good one: an hour between backups, no verify.
	writeAgentConf(t, conf, "repo = "+repo.URL, "backup-schedule = 1h", "keep = 2")
	ag.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, ag, "SIGHUP: configuration reloaded ("+conf+", and the environment): backups 1h then retention --keep 2; metrics and status page on "+addr, 10*time.Second)
	// Wait for a run in flight to end, and its retention.
	var m metrics
	for i := 0; ; i++ {
		m = scrape(t, addr)
		if m[`pgkeep_schedule_running{kind="backup"}`] == 0 && m[`pgkeep_schedule_running{kind="expire"}`] == 0 && m[`pgkeep_schedule_running{kind="verify"}`] == 0 {
			break
		}
		if i > 600 {
			t.Fatalf("a run is still in progress a minute after the reload:\n%s", ag.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	settled := ag.Log()
	time.Sleep(4 * time.Second)
	if extra := strings.TrimPrefix(ag.Log(), settled); strings.Contains(extra, "backup ok") || strings.Contains(extra, "verify ok") {
		t.Fatalf("runs after the reload to an hourly backup and no verify:\n%s", extra)
	}
	if n := countLines(settled, " ok in "); n != scrapeRuns(t, m) {
		t.Errorf("%d result lines in the log, %d ok runs in pgkeep_schedule_runs_total", n, scrapeRuns(t, m))
	}

	// /metrics against pgkeep list.
	l := listBackups(t, repo)
	if len(l.Backups) != 2 {
		t.Fatalf("keep = 2, but the repository lists %d backups", len(l.Backups))
	}
	newest, oldest := l.Backups[len(l.Backups)-1], l.Backups[0]
	m = scrape(t, addr)
	if got := m.get(t, "pgkeep_backup_last_stored_bytes"); got != float64(newest.Stored) || got <= 0 {
		t.Errorf("pgkeep_backup_last_stored_bytes %v, list says %d", got, newest.Stored)
	}
	if got := m.get(t, "pgkeep_backup_last_size_bytes"); got != float64(newest.Size) {
		t.Errorf("pgkeep_backup_last_size_bytes %v, list says %d", got, newest.Size)
	}
	if got := m.get(t, "pgkeep_backup_last_success_timestamp_seconds"); abs(got-unixF(newest.StopTime)) > 0.001 {
		t.Errorf("pgkeep_backup_last_success_timestamp_seconds %v, list says %v", got, newest.StopTime)
	}
	if got := m.get(t, "pgkeep_backup_last_duration_seconds"); abs(got-newest.Duration) > 0.01 || got <= 0 {
		t.Errorf("pgkeep_backup_last_duration_seconds %v, list says %v", got, newest.Duration)
	}
	if got := m.get(t, "pgkeep_backups"); got != 2 {
		t.Errorf("pgkeep_backups %v, want 2", got)
	}
	if got := m.get(t, "pgkeep_recoverable_window_start_timestamp_seconds"); abs(got-unixF(oldest.StopTime)) > 0.001 {
		t.Errorf("window start %v, the oldest backup finished at %v", got, oldest.StopTime)
	}
	if end := m.get(t, "pgkeep_recoverable_window_end_timestamp_seconds"); end < unixF(newest.StopTime) {
		t.Errorf("window end %v before the newest backup's stop %v", end, newest.StopTime)
	}
	for series, want := range map[string]float64{"pgkeep_wal_gaps": 0, "pgkeep_recoverable": 1, "pgkeep_repository_up": 1, "pgkeep_server_up": 1,
		"pgkeep_streaming_connected": 1, "pgkeep_archiver_failed_total": 0, "pgkeep_archiver_failing": 0, "pgkeep_wal_newest_timeline": 1,
		`pgkeep_upload_errors_total{kind="permanent",object="wal"}`: 0, `pgkeep_schedule_runs_total{kind="backup",result="failed"}`: 0,
		`pgkeep_schedule_last_run_success{kind="backup"}`: 1, "pgkeep_status_problems": 0} {
		if got := m.get(t, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	for series, atLeast := range map[string]float64{`pgkeep_schedule_runs_total{kind="backup",result="ok"}`: 4, `pgkeep_schedule_runs_total{kind="expire",result="ok"}`: 4,
		`pgkeep_schedule_runs_total{kind="verify",result="ok"}`: 1, `pgkeep_uploaded_bytes_total{object="backup"}`: float64(newest.Stored),
		`pgkeep_uploaded_bytes_total{object="wal"}`: 1, "pgkeep_slot_retained_wal_bytes": 0} {
		if got := m.get(t, series); got < atLeast {
			t.Errorf("%s = %v, want at least %v", series, got, atLeast)
		}
	}
	if next := m.get(t, `pgkeep_schedule_next_run_timestamp_seconds{kind="backup"}`); abs(next-(unixF(newest.StopTime)+3600)) > 120 {
		t.Errorf("next backup at %v, want an hour after the newest one (%v)", next, newest.StopTime)
	}
	if _, ok := m[`pgkeep_schedule_next_run_timestamp_seconds{kind="verify"}`]; ok {
		t.Errorf("a next verify is shown after the reload removed its schedule")
	}

	// The newest WAL follows the writes: its LSN reaches the server's
	// flush position, the RPO is measured as 0.
	lsn1 := m.get(t, "pgkeep_wal_newest_lsn_bytes")
	c.Exec(t, "INSERT INTO t SELECT g, repeat('y', 200) FROM generate_series(20001, 30000) g")
	flushText := c.QueryString(t, "SELECT pg_current_wal_flush_lsn()::text")
	flush, err := wal.ParseLSN(flushText)
	if err != nil {
		t.Fatal(err)
	}
	waitAgentFlushed(t, c, ag)
	time.Sleep(300 * time.Millisecond) // past --metrics-max-age
	m = scrape(t, addr)
	lsn2 := m.get(t, "pgkeep_wal_newest_lsn_bytes")
	if lsn2 <= lsn1 || lsn2 < float64(flush) {
		t.Errorf("pgkeep_wal_newest_lsn_bytes %v after the writes (%v before); the server flushed to %s (%d)", lsn2, lsn1, flushText, flush)
	}
	if got := m.get(t, "pgkeep_streamed_lsn_bytes"); got < float64(flush) {
		t.Errorf("pgkeep_streamed_lsn_bytes %v, below the server's flush %d", got, flush)
	}
	if rpo := m.get(t, "pgkeep_rpo_seconds"); rpo > 5 || m.get(t, "pgkeep_rpo_measured") != 1 {
		t.Errorf("RPO %v s (measured %v) with every flushed byte stored", rpo, m["pgkeep_rpo_measured"])
	}
	if at := m.get(t, "pgkeep_wal_newest_timestamp_seconds"); abs(at-unixF(time.Now())) > 30 {
		t.Errorf("pgkeep_wal_newest_timestamp_seconds %v is not about now", at)
	}

	checkStatusPage(t, chromium, addr, newest.ID, flushText)

	// SIGTERM during a backup: back to a short schedule, wait for a run.
	writeAgentConf(t, conf, "repo = "+repo.URL, "backup-schedule = 1s", "keep = 2")
	ag.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, ag, "backups 1s then retention", 10*time.Second)
	for i := 0; scrape(t, addr)[`pgkeep_schedule_running{kind="backup"}`] != 1; i++ {
		if i > 3000 {
			t.Fatalf("no backup in progress within a minute:\n%s", ag.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.Exec(t, "INSERT INTO t VALUES (0, 'last')")
	lastFlush := c.QueryString(t, "SELECT pg_current_wal_flush_lsn()::text")
	ag.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ag.done:
	case <-time.After(time.Minute):
		t.Fatalf("the agent did not stop within a minute of SIGTERM:\n%s", ag.Log())
	}
	if ag.err != nil {
		t.Fatalf("the agent exited with %v on SIGTERM, want 0:\n%s", ag.err, ag.Log())
	}
	log := ag.Log()
	tail := log[strings.LastIndex(log, "backups 1s then retention"):]
	switch {
	case strings.Contains(tail, "backup abandoned after"):
		t.Logf("the backup in flight was abandoned")
	case strings.Contains(tail, "backup ok in"):
		t.Logf("the backup in flight completed before the agent stopped")
	default:
		t.Fatalf("the backup in flight at SIGTERM is neither abandoned nor complete in the log:\n%s", tail)
	}
	stored := log[strings.LastIndex(log, "stopped; the repository holds the WAL up to ")+len("stopped; the repository holds the WAL up to "):]
	storedLSN, err := wal.ParseLSN(strings.Fields(stored)[0])
	last, _ := wal.ParseLSN(lastFlush)
	if err != nil || storedLSN < last {
		t.Fatalf("the agent stopped with the WAL stored to %q, before the last commit's %s:\n%s", stored, lastFlush, log)
	}
	// Whatever the signal interrupted is not listed; what is listed verifies.
	l = listBackups(t, repo)
	if len(l.Backups) < 2 {
		t.Fatalf("backups listed after SIGTERM: %d", len(l.Backups))
	}
	mustRun(t, repo.Env, append([]string{"verify", "--quiet"}, repo.Flags()...)...)
}

// scrapeRuns sums the ok runs of every kind.
func scrapeRuns(t testing.TB, m metrics) int {
	n := 0
	for _, k := range []string{"backup", "expire", "verify"} {
		n += int(m.get(t, fmt.Sprintf(`pgkeep_schedule_runs_total{kind=%q,result="ok"}`, k)))
	}
	return n
}

// checkStatusPage loads the page in headless Chromium: the DOM it built
// must show the newest backup, the timeline, the streamed position and
// the runs; a screenshot at a phone's size (412 x 915) is kept under
// artifacts/.
func checkStatusPage(t *testing.T, chromium, addr, backupID, flushLSN string) {
	t.Helper()
	profile := t.TempDir()
	browse := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, chromium, append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
			"--no-first-run", "--user-data-dir=" + profile}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			stderr := ""
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("chromium %v: %v\n%s", args, err, stderr)
		}
		return string(out)
	}
	url := "http://" + addr + "/"
	dom := browse("--dump-dom", url)
	for _, want := range []string{
		`<meta name="viewport" content="width=device-width, initial-scale=1">`,
		backupID, "<td>full</td>",
		`<span class="badge ok" id="health">healthy</span>`,
		"<td>1</td>",                 // the WAL table's timeline
		"<td class=\"ok\">none</td>", // and its gaps
		"LSN " + flushLSN[:3],        // the streamed position
		"<span class=\"ok\">streaming</span>",
		`data-kind="backup"`, `data-kind="expire"`, `data-kind="verify"`,
		"1h", // the backup schedule in force
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the status page, as Chromium built it, does not show %q:\n%s", want, dom)
		}
	}
	if strings.Contains(dom, "http://") || strings.Contains(dom, "https://") {
		t.Errorf("the status page refers to something outside itself:\n%s", dom)
	}
	dirs := filepath.Join(repoRoot, "artifacts")
	if err := os.MkdirAll(dirs, 0o755); err != nil {
		t.Fatal(err)
	}
	shot, err := filepath.Abs(filepath.Join(dirs, "agent-status-page.png"))
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(shot)
	browse("--screenshot="+shot, "--window-size=412,915", "--hide-scrollbars", url)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	head := make([]byte, 8)
	if _, err := io.ReadFull(f, head); err != nil || string(head[1:4]) != "PNG" {
		t.Fatalf("the screenshot %s is not a PNG: %v", shot, err)
	}
	if fi, _ := f.Stat(); fi.Size() < 10000 {
		t.Errorf("the screenshot %s is only %d bytes: is the page blank?", shot, fi.Size())
	}
	t.Logf("status page screenshot (412x915): %s", shot)
}

func unixF(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}
