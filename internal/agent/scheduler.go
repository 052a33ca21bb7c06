package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/pgkeep/pgkeep/internal/schedule"
)

// The kinds of scheduled work.
const (
	KindBackup = "backup"
	KindExpire = "expire"
	KindVerify = "verify"
)

// Run results.
const (
	ResultOK        = "ok"
	ResultFailed    = "failed"
	ResultAbandoned = "abandoned" // the agent stopped during the run
)

// Work does one run of a kind and says in one line what it did.
type Work func(ctx context.Context) (string, error)

// Plan is what the scheduler runs; SetPlan replaces it (on SIGHUP).
type Plan struct {
	// Backup is when to take base backups (nil: never). Backup does it.
	Backup     schedule.Schedule
	BackupWork Work
	// LastBackup returns when the newest complete backup in the
	// repository finished (zero: none), so that an interval schedule
	// neither waits a whole interval after a restart nor runs twice.
	LastBackup func(ctx context.Context) (time.Time, error)
	// Expire, if set, applies retention after each successful backup;
	// Retention describes the policy for the status page.
	Expire    Work
	Retention string
	// Verify is when to re-verify (nil: never).
	Verify     schedule.Schedule
	VerifyWork Work
}

// RunRecord is one finished run.
type RunRecord struct {
	Kind     string        `json:"kind"`
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration"`
	Result   string        `json:"result"`
	// Detail is what the run said (its result, or its error).
	Detail string `json:"detail"`
	// Attempt counts the consecutive failures of a backup, this one
	// included (0 for a success).
	Attempt int `json:"attempt,omitempty"`
	// Retry is when a failed backup is tried again.
	Retry time.Time `json:"retry,omitempty"`
}

// KindState is the scheduler's view of one kind, for metrics and the page.
type KindState struct {
	Kind     string
	Schedule string // "" : not scheduled
	Next     time.Time
	Running  bool
	Runs     []RunRecord // newest first, at most keepRuns
	// Totals counts the runs by result since the agent started.
	Totals map[string]int
	// LastSuccess is when the last successful run finished.
	LastSuccess time.Time
}

const keepRuns = 10

// Scheduler is the component that runs the backup, retention and verify
// schedules: one run at a time, in one goroutine, so no two ever overlap.
// A run that falls due while another runs waits for it and then runs
// (once, however many of its slots passed meanwhile); its log line says
// how long it waited. A failed backup is retried with exponential backoff
// (RetryInitial doubling to RetryMax, with jitter) until one succeeds,
// and each attempt is reported; a failed verify is reported and waits
// for its next slot. Every run is one log line with its result.
type Scheduler struct {
	// RetryInitial and RetryMax bound the wait before a failed backup is
	// tried again (defaults 30s and 30m).
	RetryInitial, RetryMax time.Duration
	// OnRun is called after each run (metrics, the page's cache).
	OnRun func(RunRecord)

	mu      sync.Mutex
	plan    Plan
	changed chan struct{}
	kinds   map[string]*KindState
	started time.Time
}

// NewScheduler returns a scheduler that runs p.
func NewScheduler(p Plan) *Scheduler {
	s := &Scheduler{plan: p, changed: make(chan struct{}, 1), kinds: map[string]*KindState{}, started: time.Now()}
	for _, k := range []string{KindBackup, KindExpire, KindVerify} {
		s.kinds[k] = &KindState{Kind: k, Totals: map[string]int{}}
	}
	s.describe()
	return s
}

// Name names the component in log lines.
func (s *Scheduler) Name() string { return "scheduler" }

// SetPlan replaces the plan; a run in progress finishes under the old one.
func (s *Scheduler) SetPlan(p Plan) {
	s.mu.Lock()
	s.plan = p
	s.describe()
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// describe fills the schedules shown; s.mu is held.
func (s *Scheduler) describe() {
	s.kinds[KindBackup].Schedule = specOf(s.plan.Backup)
	s.kinds[KindVerify].Schedule = specOf(s.plan.Verify)
	s.kinds[KindExpire].Schedule = ""
	if s.plan.Expire != nil && s.plan.Backup != nil {
		s.kinds[KindExpire].Schedule = "after each backup: " + s.plan.Retention
	}
}

func specOf(sc schedule.Schedule) string {
	if sc == nil {
		return ""
	}
	return sc.String()
}

// Kinds returns a copy of the state of each kind: backup, expire, verify.
func (s *Scheduler) Kinds() []KindState {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []KindState
	for _, k := range []string{KindBackup, KindExpire, KindVerify} {
		c := *s.kinds[k]
		c.Runs = append([]RunRecord(nil), c.Runs...)
		c.Totals = map[string]int{}
		for r, n := range s.kinds[k].Totals {
			c.Totals[r] = n
		}
		out = append(out, c)
	}
	return out
}

// Run waits until the agent has connected to the server once (a backup
// needs the WAL streamed), then runs the plan until ctx ends.
func (s *Scheduler) Run(ctx context.Context, a *Agent) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for a != nil && !a.State().Connected {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
	var logf func(string, ...any)
	if a != nil {
		logf = a.logf
	}
	return s.loop(ctx, logf)
}

// loop is the scheduler itself.
func (s *Scheduler) loop(ctx context.Context, logf func(string, ...any)) error {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	retry := backoff.NewExponentialBackOff()
	retry.InitialInterval = s.RetryInitial
	if retry.InitialInterval <= 0 {
		retry.InitialInterval = 30 * time.Second
	}
	retry.MaxInterval = s.RetryMax
	if retry.MaxInterval <= 0 {
		retry.MaxInterval = 30 * time.Minute
	}
	retry.RandomizationFactor = 0.2
	var (
		lastBackup, lastVerify time.Time
		backupKnown            bool
		retryAt                time.Time
		failures               int
		// notes says, for a kind that fell due while another ran, when
		// it was due and behind which run it waited.
		notes = map[string]string{}
	)
	lastVerify = s.started
	for {
		s.mu.Lock()
		p := s.plan
		s.mu.Unlock()
		if p.Backup != nil && !backupKnown && p.LastBackup != nil {
			if t, err := p.LastBackup(ctx); err == nil {
				lastBackup = t
			} else if ctx.Err() != nil {
				return nil
			}
			backupKnown = true
		}
		now := time.Now()
		kind, due := "", time.Time{}
		if p.Backup != nil && p.BackupWork != nil {
			kind, due = KindBackup, p.Backup.Next(lastBackup, now)
			if !retryAt.IsZero() && retryAt.Before(due) {
				due = retryAt
			}
		}
		if p.Verify != nil && p.VerifyWork != nil {
			if d := p.Verify.Next(lastVerify, now); kind == "" || d.Before(due) {
				kind, due = KindVerify, d
			}
		}
		s.setNext(p, lastBackup, lastVerify, retryAt, now)
		var fire <-chan time.Time
		var timer *time.Timer
		if kind != "" {
			timer = time.NewTimer(time.Until(due))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return nil
		case <-s.changed:
			if timer != nil {
				timer.Stop()
			}
			continue
		case <-fire:
		}

		waited := notes[kind]
		delete(notes, kind)
		before := s.nextTimes()
		switch kind {
		case KindBackup:
			rec := s.run(ctx, KindBackup, p.BackupWork, logf, waited, func(rec *RunRecord) {
				if rec.Result == ResultFailed {
					failures++
					wait := retry.NextBackOff()
					retryAt = time.Now().Add(wait)
					rec.Attempt, rec.Retry = failures, retryAt
				}
			})
			if rec.Result == ResultAbandoned {
				return nil
			}
			if rec.Result == ResultOK {
				lastBackup, retryAt, failures = time.Now(), time.Time{}, 0
				retry.Reset()
				if p.Expire != nil {
					if r := s.run(ctx, KindExpire, p.Expire, logf, "", nil); r.Result == ResultAbandoned {
						return nil
					}
				}
			}
		case KindVerify:
			rec := s.run(ctx, KindVerify, p.VerifyWork, logf, waited, nil)
			if rec.Result == ResultAbandoned {
				return nil
			}
			lastVerify = time.Now()
		}
		// What fell due meanwhile runs next; its line will say so.
		for k, t := range before {
			if k != kind && !t.IsZero() && t.Before(time.Now()) {
				notes[k] = fmt.Sprintf(" (due %s, waited %s for the %s run)", t.UTC().Format("15:04:05"), time.Since(t).Round(100*time.Millisecond), kind)
			}
		}
	}
}

// nextTimes returns when each scheduled kind is next due.
func (s *Scheduler) nextTimes() map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return map[string]time.Time{KindBackup: s.kinds[KindBackup].Next, KindVerify: s.kinds[KindVerify].Next}
}

// run does one run, records it and logs its line.
func (s *Scheduler) run(ctx context.Context, kind string, w Work, logf func(string, ...any), note string, after func(*RunRecord)) RunRecord {
	s.mu.Lock()
	s.kinds[kind].Running = true
	s.mu.Unlock()
	start := time.Now()
	detail, err := w(ctx)
	rec := RunRecord{Kind: kind, Started: start, Duration: time.Since(start), Result: ResultOK, Detail: detail}
	switch {
	case err != nil && ctx.Err() != nil:
		rec.Result, rec.Detail = ResultAbandoned, "the agent is stopping"
	case err != nil:
		rec.Result, rec.Detail = ResultFailed, err.Error()
	}
	if after != nil {
		after(&rec)
	}
	s.mu.Lock()
	ks := s.kinds[kind]
	ks.Running = false
	ks.Totals[rec.Result]++
	if rec.Result == ResultOK {
		ks.LastSuccess = time.Now()
	}
	ks.Runs = append([]RunRecord{rec}, ks.Runs...)
	if len(ks.Runs) > keepRuns {
		ks.Runs = ks.Runs[:keepRuns]
	}
	s.mu.Unlock()
	d := rec.Duration.Round(10 * time.Millisecond)
	switch rec.Result {
	case ResultOK:
		logf("%s ok in %s%s: %s", kind, d, note, detail)
	case ResultAbandoned:
		what := ""
		if kind == KindBackup {
			what = ": no completion record was written, so nothing of it is listed or restorable (expire removes what it left)"
		}
		logf("%s abandoned after %s, the agent is stopping%s", kind, d, what)
	default:
		again := ""
		if !rec.Retry.IsZero() {
			again = fmt.Sprintf(" (attempt %d; retrying in %s)", rec.Attempt, roundDur(time.Until(rec.Retry)))
		}
		logf("%s FAILED in %s%s%s: %v", kind, d, note, again, err)
	}
	if s.OnRun != nil {
		s.OnRun(rec)
	}
	return rec
}

// roundDur rounds d for a log line.
func roundDur(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(time.Second)
}

// setNext records when each kind is next due.
func (s *Scheduler) setNext(p Plan, lastBackup, lastVerify, retryAt, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kinds[KindBackup].Next, s.kinds[KindVerify].Next = time.Time{}, time.Time{}
	if p.Backup != nil {
		n := p.Backup.Next(lastBackup, now)
		if !retryAt.IsZero() && retryAt.Before(n) {
			n = retryAt
		}
		s.kinds[KindBackup].Next = n
	}
	if p.Verify != nil {
		s.kinds[KindVerify].Next = p.Verify.Next(lastVerify, now)
	}
}
