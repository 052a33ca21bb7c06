// Package progress is how long-running operations report what they do.
// Core packages call a Reporter; cmd chooses the implementation: plain
// periodic lines, a terminal bar, JSON, or nothing.
package progress

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pgkeep/pgkeep/internal/units"
)

// Reporter receives progress. Implementations MUST be safe for concurrent
// use: workers call Advance from many goroutines.
type Reporter interface {
	// Begin starts a phase that will move total bytes (0 if unknown).
	Begin(phase string, total int64)
	// Advance records n more bytes done in the current phase.
	Advance(n int64)
	// End finishes the current phase.
	End()
	// Logf reports an event worth a line of its own (a warning, a step).
	Logf(format string, args ...any)
}

// Nop discards everything.
type Nop struct{}

func (Nop) Begin(string, int64) {}
func (Nop) Advance(int64)       {}
func (Nop) End()                {}
func (Nop) Logf(string, ...any) {}

// Lines prints a line when a phase begins and ends, one every Interval in
// between, and every Logf: for logs and pipes.
type Lines struct {
	W        io.Writer
	Interval time.Duration

	mu    sync.Mutex
	phase string
	total int64
	done  atomic.Int64
	start time.Time
	stop  chan struct{}
	wg    sync.WaitGroup
}

// NewLines returns a Lines reporter writing to w every interval.
func NewLines(w io.Writer, interval time.Duration) *Lines {
	return &Lines{W: w, Interval: interval}
}

func (l *Lines) Begin(phase string, total int64) {
	l.End()
	l.mu.Lock()
	l.phase, l.total, l.start = phase, total, time.Now()
	l.done.Store(0)
	l.stop = make(chan struct{})
	stop := l.stop
	l.mu.Unlock()
	if l.Interval > 0 {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			t := time.NewTicker(l.Interval)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					l.line("")
				}
			}
		}()
	}
}

func (l *Lines) Advance(n int64) { l.done.Add(n) }

func (l *Lines) End() {
	l.mu.Lock()
	stop := l.stop
	l.stop = nil
	l.mu.Unlock()
	if stop == nil {
		return
	}
	close(stop)
	l.wg.Wait()
	l.line(" done")
}

func (l *Lines) line(suffix string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	done := l.done.Load()
	el := time.Since(l.start)
	rate := float64(done) / max(el.Seconds(), 0.001)
	if l.total > 0 {
		fmt.Fprintf(l.W, "%s: %s of %s (%.0f%%), %s/s, %s%s\n", l.phase, units.Bytes(done), units.Bytes(l.total),
			100*float64(done)/float64(l.total), units.Bytes(int64(rate)), el.Round(100*time.Millisecond), suffix)
	} else {
		fmt.Fprintf(l.W, "%s: %s, %s/s, %s%s\n", l.phase, units.Bytes(done), units.Bytes(int64(rate)), el.Round(100*time.Millisecond), suffix)
	}
}

func (l *Lines) Logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.W, format+"\n", args...)
}
