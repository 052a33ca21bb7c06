// Package freelist keeps reusable objects (buffers, encoders) for as long
// as the process lives. sync.Pool empties itself at every garbage
// collection, so a process that encodes one WAL segment after another
// builds its buffers and encoder state again after each cycle; on the
// virtual machines pgkeep runs on, memory the process has not touched
// before costs more than the work done in it (a page fault of tens of
// microseconds, several milliseconds per MiB). A List keeps up to Max
// objects across collections instead: memory is bounded by the peak
// number in use at once, which the callers bound (workers).
package freelist

import "sync"

// List is a free list of T. The zero value is not usable: set New.
type List[T any] struct {
	// New makes an object when the list is empty.
	New func() T
	// Max is how many free objects are kept; more are dropped (0: 16).
	Max int

	mu   sync.Mutex
	free []T
}

// Get returns a free object, or a new one.
func (l *List[T]) Get() T {
	l.mu.Lock()
	if n := len(l.free); n > 0 {
		v := l.free[n-1]
		var zero T
		l.free[n-1] = zero
		l.free = l.free[:n-1]
		l.mu.Unlock()
		return v
	}
	l.mu.Unlock()
	return l.New()
}

// Put returns v to the list for reuse; the caller must not use v after.
func (l *List[T]) Put(v T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	limit := l.Max
	if limit == 0 {
		limit = 16
	}
	if len(l.free) < limit {
		l.free = append(l.free, v)
	}
}
