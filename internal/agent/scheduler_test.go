package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/schedule"
)

type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) logf(format string, args ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *logLines) count(prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.HasPrefix(s, prefix) {
			n++
		}
	}
	return n
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func mustSchedule(t *testing.T, spec string) schedule.Schedule {
	t.Helper()
	s, err := schedule.Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestScheduler: a failing backup is retried with backoff and each attempt
// logged, retention runs after the success, verify runs on its own
// schedule, no two runs ever overlap, a run due during another waits and
// says so, and a run interrupted by the end of ctx is abandoned.
func TestScheduler(t *testing.T) {
	var running, overlaps, backups, expires, verifies atomic.Int32
	work := func(counter *atomic.Int32, d time.Duration, fail func(n int32) error) Work {
		return func(ctx context.Context) (string, error) {
			if running.Add(1) > 1 {
				overlaps.Add(1)
			}
			defer running.Add(-1)
			n := counter.Add(1)
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return "", ctx.Err()
			}
			if fail != nil {
				if err := fail(n); err != nil {
					return "", err
				}
			}
			return fmt.Sprintf("run %d", n), nil
		}
	}
	p := Plan{
		Backup: mustSchedule(t, "1s"),
		BackupWork: work(&backups, 300*time.Millisecond, func(n int32) error {
			if n <= 2 {
				return errors.New("the server is away")
			}
			return nil
		}),
		LastBackup: func(context.Context) (time.Time, error) { return time.Time{}, nil },
		Expire:     work(&expires, 10*time.Millisecond, nil),
		Retention:  "keep 2",
		Verify:     mustSchedule(t, "1s"),
		VerifyWork: work(&verifies, 1200*time.Millisecond, nil),
	}
	s := NewScheduler(p)
	s.RetryInitial, s.RetryMax = 50*time.Millisecond, 100*time.Millisecond
	var runs atomic.Int32
	s.OnRun = func(RunRecord) { runs.Add(1) }
	log := &logLines{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.loop(ctx, log.logf) }()
	deadline := time.Now().Add(10 * time.Second)
	for log.count("expire ok") < 2 || log.count("verify ok") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %d backups, %d expires, %d verifies:\n%s", backups.Load(), expires.Load(), verifies.Load(), log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Cancel while a run is in flight.
	for running.Load() == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if overlaps.Load() != 0 {
		t.Fatalf("%d runs overlapped:\n%s", overlaps.Load(), log)
	}
	if n := log.count("backup FAILED"); n != 2 || !strings.Contains(log.String(), "(attempt 2; retrying in") {
		t.Fatalf("want two failed attempts logged with their retry:\n%s", log)
	}
	if log.count("backup ok") < 1 || log.count("expire ok") < 2 || log.count("verify ok") < 2 {
		t.Fatalf("missing result lines:\n%s", log)
	}
	if log.count("backup abandoned")+log.count("verify abandoned")+log.count("expire abandoned") != 1 {
		t.Fatalf("the run in flight at cancel is not logged as abandoned:\n%s", log)
	}
	if !strings.Contains(log.String(), "waited") {
		t.Fatalf("no run says it waited for another (verify takes 1.2s, backups fall due every 1s):\n%s", log)
	}
	// One line per run, and OnRun per run.
	if got := int32(len(log.lines)); got != runs.Load() {
		t.Fatalf("%d log lines for %d runs:\n%s", got, runs.Load(), log)
	}
	ks := s.Kinds()
	if ks[0].Kind != KindBackup || ks[0].Totals[ResultFailed] != 2 || ks[0].Totals[ResultOK] < 1 || ks[0].Runs[0].Kind != KindBackup {
		t.Fatalf("backup state %+v", ks[0])
	}
	if ks[1].Schedule != "after each backup: keep 2" || ks[2].Schedule != "1s" {
		t.Fatalf("schedules %q %q", ks[1].Schedule, ks[2].Schedule)
	}
}

// TestSchedulerSetPlan: a new plan applies at once; a plan without
// schedules runs nothing.
func TestSchedulerSetPlan(t *testing.T) {
	var n atomic.Int32
	s := NewScheduler(Plan{})
	log := &logLines{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.loop(ctx, log.logf)
	time.Sleep(300 * time.Millisecond)
	if len(log.lines) != 0 {
		t.Fatalf("an empty plan ran something: %s", log)
	}
	s.SetPlan(Plan{Verify: mustSchedule(t, "1s"), VerifyWork: func(context.Context) (string, error) { n.Add(1); return "fine", nil }})
	deadline := time.Now().Add(5 * time.Second)
	// The work runs before its result is logged: wait for both.
	for (n.Load() < 1 || !strings.Contains(log.String(), "verify ok")) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n.Load() < 1 || !strings.Contains(log.String(), "verify ok") {
		t.Fatalf("the new plan's verify did not run: %s", log)
	}
	if ks := s.Kinds(); ks[2].Next.IsZero() || ks[0].Schedule != "" {
		t.Fatalf("kinds %+v", ks)
	}
}
