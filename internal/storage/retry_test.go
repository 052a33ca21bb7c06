package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// fake is a hand-written Storage double with function fields.
type fake struct {
	put  func(key string, body io.Reader, size int64) error
	get  func(key string, fn func(io.Reader) error) error
	list func(prefix string, fn func(ObjectInfo) error) error
}

func (f *fake) Put(_ context.Context, key string, body io.Reader, size int64) error {
	return f.put(key, body, size)
}
func (f *fake) Get(_ context.Context, key string, fn func(io.Reader) error) error {
	return f.get(key, fn)
}
func (f *fake) Stat(context.Context, string) (ObjectInfo, error) { return ObjectInfo{}, ErrNotFound }
func (f *fake) List(_ context.Context, prefix string, fn func(ObjectInfo) error) error {
	return f.list(prefix, fn)
}
func (f *fake) Delete(context.Context, string) error { return nil }
func (f *fake) Location() string                     { return "fake://" }

var fast = RetryPolicy{MaxAttempts: 5, InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond, MaxElapsed: 5 * time.Second}

var errFlaky = errors.New("connection reset")

func TestRetryPutRewinds(t *testing.T) {
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
	if err := NewRetrying(f, fast).Put(context.Background(), "k", bytes.NewReader([]byte("hello")), 5); err != nil {
		t.Fatal(err)
	}
	if calls != 3 || strings.Join(bodies, ",") != "hello,hello,hello" {
		t.Fatalf("calls %d, bodies %v: body not rewound", calls, bodies)
	}
}

func TestRetryPutWithoutSeekerIsNotRetried(t *testing.T) {
	calls := 0
	f := &fake{put: func(string, io.Reader, int64) error { calls++; return errFlaky }}
	err := NewRetrying(f, fast).Put(context.Background(), "k", io.MultiReader(strings.NewReader("x")), 1)
	if !errors.Is(err, errFlaky) || calls != 1 {
		t.Fatalf("err %v after %d calls", err, calls)
	}
}

func TestRetryGivesUpAndSaysSo(t *testing.T) {
	calls := 0
	f := &fake{get: func(string, func(io.Reader) error) error { calls++; return errFlaky }}
	err := NewRetrying(f, fast).Get(context.Background(), "k", func(io.Reader) error { return nil })
	if !errors.Is(err, errFlaky) || calls != fast.MaxAttempts || !strings.Contains(err.Error(), "attempts") {
		t.Fatalf("err %v after %d calls", err, calls)
	}
	if errors.Is(err, ErrNotFound) {
		t.Fatal("a transient failure turned into not-found")
	}
}

func TestPermanentIsNotRetried(t *testing.T) {
	for _, perm := range []error{ErrNotFound, ErrExists, Permanent(errors.New("access denied"))} {
		calls := 0
		f := &fake{get: func(string, func(io.Reader) error) error { calls++; return perm }}
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
			return errFlaky
		}
		return nil
	}}
	err := NewRetrying(f, fast).Get(context.Background(), "k", func(r io.Reader) error { fnCalls++; return nil })
	if err != nil || fnCalls != 2 {
		t.Fatalf("err %v, fn called %d times", err, fnCalls)
	}
}

func TestCancelStopsRetrying(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	f := &fake{get: func(string, func(io.Reader) error) error {
		calls++
		cancel()
		return errFlaky
	}}
	slow := fast
	slow.InitialInterval = time.Second
	NewRetrying(f, slow).Get(ctx, "k", func(io.Reader) error { return nil })
	if calls != 1 {
		t.Fatalf("%d calls after cancellation", calls)
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
