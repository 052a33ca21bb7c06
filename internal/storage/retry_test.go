package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// fake is a hand-written Storage double: each method calls its function
// field, and a test sets only the ones it expects to be called.
type fake struct {
	put  func(key string, body io.Reader, size int64) error
	get  func(key string, fn func(io.Reader) error) error
	stat func(key string) (ObjectInfo, error)
	list func(prefix string, fn func(ObjectInfo) error) error
	del  func(key string) error
}

func (f *fake) Put(_ context.Context, key string, body io.Reader, size int64) error {
	return f.put(key, body, size)
}
func (f *fake) Get(_ context.Context, key string, fn func(io.Reader) error) error {
	return f.get(key, fn)
}
func (f *fake) Stat(_ context.Context, key string) (ObjectInfo, error) { return f.stat(key) }
func (f *fake) List(_ context.Context, prefix string, fn func(ObjectInfo) error) error {
	return f.list(prefix, fn)
}
func (f *fake) Delete(_ context.Context, key string) error { return f.del(key) }
func (f *fake) Location() string                           { return "fake://" }

var fast = RetryPolicy{MaxAttempts: 5, InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond, MaxElapsed: 5 * time.Second}

var errFlaky = errors.New("connection reset")

func TestRetryTransientThenSuccess(t *testing.T) {
	calls := 0
	f := &fake{stat: func(key string) (ObjectInfo, error) {
		calls++
		if calls <= 3 {
			return ObjectInfo{}, errFlaky
		}
		return ObjectInfo{Key: key, Size: 7}, nil
	}}
	var retried []string
	p := fast
	p.OnRetry = func(op, key string, attempt int, err error) {
		retried = append(retried, fmt.Sprintf("%s %s %d %v", op, key, attempt, err))
	}
	info, err := NewRetrying(f, p).Stat(context.Background(), "k")
	if err != nil || info.Size != 7 || calls != 4 {
		t.Fatalf("Stat = %+v, %v after %d calls", info, err, calls)
	}
	want := "stat k 1 connection reset|stat k 2 connection reset|stat k 3 connection reset"
	if got := strings.Join(retried, "|"); got != want {
		t.Fatalf("OnRetry saw %q, want %q", got, want)
	}
}

func TestRetryPutRewindsToStart(t *testing.T) {
	calls := 0
	var bodies []string
	f := &fake{put: func(_ string, body io.Reader, size int64) error {
		calls++
		b, _ := io.ReadAll(body)
		bodies = append(bodies, string(b))
		if calls < 3 {
			return errFlaky
		}
		return nil
	}}
	// The body starts midway: retries must rewind to there, not to 0.
	body := bytes.NewReader([]byte("--hello"))
	body.Seek(2, io.SeekStart)
	if err := NewRetrying(f, fast).Put(context.Background(), "k", body, 5); err != nil {
		t.Fatal(err)
	}
	if calls != 3 || strings.Join(bodies, ",") != "hello,hello,hello" {
		t.Fatalf("calls %d, bodies %q: body not rewound to its start", calls, bodies)
	}
}

func TestRetryPutWithoutSeekerIsNotRetried(t *testing.T) {
	calls := 0
	f := &fake{put: func(string, io.Reader, int64) error { calls++; return errFlaky }}
	err := NewRetrying(f, fast).Put(context.Background(), "k", io.MultiReader(strings.NewReader("x")), 1)
	if err != errFlaky || calls != 1 {
		t.Fatalf("got %v after %d calls, want the backend's error unchanged after 1", err, calls)
	}
	if IsPermanent(err) {
		t.Fatal("the error's classification changed")
	}
}

// TestRetryPutExistsAfterAmbiguousFailure: the first attempt is applied
// by the store but its answer is lost; the retry finds the object. The
// caller gets ErrExists (and compares content), with a hint of why.
func TestRetryPutExistsAfterAmbiguousFailure(t *testing.T) {
	stored := false
	calls := 0
	f := &fake{put: func(string, io.Reader, int64) error {
		calls++
		if stored {
			return fmt.Errorf("k: %w", ErrExists)
		}
		stored = true
		return errFlaky
	}}
	err := NewRetrying(f, fast).Put(context.Background(), "k", strings.NewReader("v"), 1)
	if !errors.Is(err, ErrExists) || calls != 2 {
		t.Fatalf("got %v after %d calls, want ErrExists after 2", err, calls)
	}
	if !strings.Contains(err.Error(), "earlier attempt") {
		t.Fatalf("error does not say an earlier attempt failed: %v", err)
	}
}

func TestRetryGivesUpAndSaysSo(t *testing.T) {
	calls := 0
	f := &fake{get: func(string, func(io.Reader) error) error { calls++; return errFlaky }}
	err := NewRetrying(f, fast).Get(context.Background(), "k", func(io.Reader) error { return nil })
	if !errors.Is(err, errFlaky) || calls != fast.MaxAttempts || !strings.Contains(err.Error(), "5 attempts") {
		t.Fatalf("err %v after %d calls", err, calls)
	}
	if IsPermanent(err) || errors.Is(err, ErrNotFound) {
		t.Fatal("a transient failure changed kind after retries")
	}
}

func TestRetryStopsAtMaxElapsed(t *testing.T) {
	calls := 0
	f := &fake{del: func(string) error { calls++; return errFlaky }}
	p := RetryPolicy{MaxAttempts: 1000, InitialInterval: 10 * time.Millisecond, MaxInterval: 10 * time.Millisecond, MaxElapsed: 100 * time.Millisecond}
	start := time.Now()
	err := NewRetrying(f, p).Delete(context.Background(), "k")
	if !errors.Is(err, errFlaky) || time.Since(start) > 2*time.Second || calls >= 1000 {
		t.Fatalf("err %v after %d calls in %v", err, calls, time.Since(start))
	}
}

func TestPermanentIsNotRetried(t *testing.T) {
	for _, perm := range []error{ErrNotFound, ErrExists, Permanent(errors.New("access denied")), context.Canceled} {
		calls := 0
		f := &fake{get: func(string, func(io.Reader) error) error { calls++; return fmt.Errorf("wrapped: %w", perm) }}
		err := NewRetrying(f, fast).Get(context.Background(), "k", func(io.Reader) error { return nil })
		if !errors.Is(err, perm) || calls != 1 {
			t.Fatalf("%v: err %v after %d calls", perm, err, calls)
		}
	}
}

func TestGetCallsFnAgain(t *testing.T) {
	calls, fnCalls := 0, 0
	f := &fake{get: func(_ string, fn func(io.Reader) error) error {
		calls++
		if err := fn(strings.NewReader("data")); err != nil {
			return err
		}
		if calls == 1 {
			return errFlaky // e.g. the connection dropped after fn read it
		}
		return nil
	}}
	var got []string
	err := NewRetrying(f, fast).Get(context.Background(), "k", func(r io.Reader) error {
		fnCalls++
		b, err := io.ReadAll(r)
		got = append(got, string(b))
		return err
	})
	if err != nil || fnCalls != 2 || strings.Join(got, ",") != "data,data" {
		t.Fatalf("err %v, fn called %d times, read %q", err, fnCalls, got)
	}
}

func TestCancelDuringWaitStopsAtOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	f := &fake{get: func(string, func(io.Reader) error) error { calls++; return errFlaky }}
	slow := RetryPolicy{MaxAttempts: 5, InitialInterval: time.Hour, MaxInterval: time.Hour}
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	err := NewRetrying(f, slow).Get(ctx, "k", func(io.Reader) error { return nil })
	if time.Since(start) > 5*time.Second {
		t.Fatalf("cancellation took %v", time.Since(start))
	}
	// Full jitter may pick a near-zero first wait; what matters is that no
	// attempt starts after the cancellation and that the error says both.
	if calls > 2 || !errors.Is(err, context.Canceled) || !errors.Is(err, errFlaky) {
		t.Fatalf("err %v after %d calls", err, calls)
	}
}

func TestCancelInsideAttemptStopsRetrying(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	f := &fake{get: func(string, func(io.Reader) error) error {
		calls++
		cancel()
		return errFlaky
	}}
	err := NewRetrying(f, fast).Get(ctx, "k", func(io.Reader) error { return nil })
	if calls != 1 || !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v after %d calls", err, calls)
	}
}

func TestListResumesWithoutRepeats(t *testing.T) {
	calls := 0
	f := &fake{list: func(_ string, fn func(ObjectInfo) error) error {
		calls++
		for _, k := range []string{"a", "b", "c"} {
			if err := fn(ObjectInfo{Key: k}); err != nil {
				return err
			}
			if calls == 1 && k == "b" {
				return errFlaky
			}
		}
		return nil
	}}
	var got []string
	err := NewRetrying(f, fast).List(context.Background(), "", func(oi ObjectInfo) error { got = append(got, oi.Key); return nil })
	if err != nil || strings.Join(got, "") != "abc" {
		t.Fatalf("got %v, %v", got, err)
	}
}

func TestListReturnsFnErrorUnchanged(t *testing.T) {
	calls := 0
	f := &fake{list: func(_ string, fn func(ObjectInfo) error) error {
		calls++
		return fn(ObjectInfo{Key: "a"})
	}}
	stop := errors.New("stop")
	err := NewRetrying(f, fast).List(context.Background(), "", func(ObjectInfo) error { return stop })
	if err != stop || calls != 1 {
		t.Fatalf("got %v after %d calls, want fn's error after 1", err, calls)
	}
}

func TestFullJitterBounds(t *testing.T) {
	b := &fullJitter{initial: 100 * time.Millisecond, max: time.Second}
	b.Reset()
	caps := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i, c := range caps {
		c *= time.Millisecond
		if d := b.NextBackOff(); d < 0 || d > c {
			t.Fatalf("wait %d = %v, want within [0, %v]", i, d, c)
		}
	}
}
