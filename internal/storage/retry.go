package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// RetryPolicy says how NewRetrying retries transient failures.
type RetryPolicy struct {
	// MaxAttempts is the number of attempts in all, including the first;
	// values below 1 mean 1 (no retry).
	MaxAttempts int
	// InitialInterval caps the first wait; each later cap doubles, up to
	// MaxInterval. The wait itself is drawn uniformly from [0, cap] (full
	// jitter), so many clients failing at once do not retry in lockstep.
	InitialInterval time.Duration
	MaxInterval     time.Duration
	// MaxElapsed stops retrying once the next attempt would start this long
	// after the first one; 0 means no limit (MaxAttempts still applies).
	MaxElapsed time.Duration
	// OnRetry, if set, is told about each failed attempt that is about to
	// be retried (attempt counts from 1). It must not block for long.
	OnRetry func(op, key string, attempt int, err error)
}

// DefaultRetryPolicy retries up to 10 attempts over at most two minutes,
// waiting up to 100 ms, 200 ms, ... 5 s (full jitter) between them.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{
		MaxAttempts:     10,
		InitialInterval: 100 * time.Millisecond,
		MaxInterval:     5 * time.Second,
		MaxElapsed:      2 * time.Minute,
	}
}

// retrying wraps a Storage and retries its transient failures.
type retrying struct {
	s Storage
	p RetryPolicy
}

var _ Storage = (*retrying)(nil)

// NewRetrying returns s with every operation retried on transient errors
// (those for which IsPermanent is false), with exponential backoff and full
// jitter, until it succeeds, fails permanently, the policy gives up, or ctx
// ends. A cancelled context stops retrying at once; the error then wraps
// both the context's error and the last failure. An error after several
// attempts says how many were made.
//
// Put is retried only when its body is an io.Seeker whose position can be
// read: each retry seeks it back to where the first attempt started. Any
// other body is consumed by the first attempt, so that attempt's error is
// returned as it is.
//
// A retried Put may return an error wrapping ErrExists although nobody else
// wrote the key: an earlier attempt can fail ambiguously (the connection
// dropped, or the store answered 500, after the store had applied the
// write), and the retry then finds the object in place. The wrapper cannot
// tell this apart from a real conflict, so it returns the ErrExists (saying
// that an earlier attempt failed) and leaves the decision to the caller,
// which must read the stored object and compare it with what it meant to
// write (repo.PutEncoded does; identical content is success).
//
// Get calls fn again on each retry (hence Get's idempotency contract). A
// List that fails midway is restarted and delivers only keys beyond the
// last one fn has seen, so fn sees each key once, in order.
func NewRetrying(s Storage, policy RetryPolicy) Storage {
	if policy.MaxAttempts < 1 {
		policy.MaxAttempts = 1
	}
	if policy.InitialInterval <= 0 {
		policy.InitialInterval = 100 * time.Millisecond
	}
	if policy.MaxInterval < policy.InitialInterval {
		policy.MaxInterval = policy.InitialInterval
	}
	return &retrying{s: s, p: policy}
}

// fullJitter is an exponential backoff with "full jitter": the n-th wait
// is uniform in [0, min(max, initial*2^n)].
type fullJitter struct {
	initial, max time.Duration
	ceiling      time.Duration
}

func (b *fullJitter) Reset() { b.ceiling = b.initial }

func (b *fullJitter) NextBackOff() time.Duration {
	c := b.ceiling
	if b.ceiling < b.max/2 {
		b.ceiling *= 2
	} else {
		b.ceiling = b.max
	}
	return rand.N(c + 1)
}

// do runs fn until it succeeds or retrying is pointless, and returns the
// error to report.
func (r *retrying) do(ctx context.Context, op, key string, fn func() error) error {
	attempt := 0
	var last error
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		attempt++
		last = fn()
		if last != nil && IsPermanent(last) {
			return struct{}{}, backoff.Permanent(last)
		}
		return struct{}{}, last
	},
		backoff.WithBackOff(&fullJitter{initial: r.p.InitialInterval, max: r.p.MaxInterval}),
		backoff.WithMaxTries(uint(r.p.MaxAttempts)),
		backoff.WithMaxElapsedTime(r.p.MaxElapsed),
		backoff.WithNotify(func(err error, _ time.Duration) {
			if r.p.OnRetry != nil {
				r.p.OnRetry(op, key, attempt, err)
			}
		}),
	)
	switch {
	case err == nil:
		return nil
	case last == nil: // not reached: fn runs at least once
		return err
	case IsPermanent(last):
		return last
	case ctx.Err() != nil:
		return fmt.Errorf("%s %s: %w after %d attempts; last error: %w", op, key, context.Cause(ctx), attempt, last)
	case attempt > 1:
		return fmt.Errorf("%w (gave up after %d attempts)", last, attempt)
	}
	return last
}

func (r *retrying) Put(ctx context.Context, key string, body io.Reader, size int64) error {
	seeker, ok := body.(io.Seeker)
	if !ok {
		return r.s.Put(ctx, key, body, size)
	}
	start, err := seeker.Seek(0, io.SeekCurrent)
	if err != nil {
		// Not really seekable (a pipe behind an *os.File, say).
		return r.s.Put(ctx, key, body, size)
	}
	attempt := 0
	var first error
	err = r.do(ctx, "put", key, func() error {
		attempt++
		if attempt > 1 {
			if _, err := seeker.Seek(start, io.SeekStart); err != nil {
				return Permanent(fmt.Errorf("rewinding the body of %s to retry: %w", key, err))
			}
		}
		err := r.s.Put(ctx, key, body, size)
		if err != nil && first == nil {
			first = err
		}
		return err
	})
	if attempt > 1 && errors.Is(err, ErrExists) {
		return fmt.Errorf("%w (an earlier attempt failed and may have stored it: %v)", err, first)
	}
	return err
}

func (r *retrying) Get(ctx context.Context, key string, fn func(io.Reader) error) error {
	return r.do(ctx, "get", key, func() error { return r.s.Get(ctx, key, fn) })
}

func (r *retrying) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	var info ObjectInfo
	err := r.do(ctx, "stat", key, func() error {
		var err error
		info, err = r.s.Stat(ctx, key)
		return err
	})
	return info, err
}

func (r *retrying) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	var (
		last    string // the last key delivered to fn
		started bool   // whether fn has seen any key
		fnErr   error  // fn's error, returned as it is
	)
	err := r.do(ctx, "list", prefix, func() error {
		return r.s.List(ctx, prefix, func(oi ObjectInfo) error {
			if started && oi.Key <= last {
				return nil // delivered before the listing restarted
			}
			if err := fn(oi); err != nil {
				fnErr = err
				return Permanent(err)
			}
			last, started = oi.Key, true
			return nil
		})
	})
	if fnErr != nil {
		return fnErr
	}
	return err
}

func (r *retrying) Delete(ctx context.Context, key string) error {
	return r.do(ctx, "delete", key, func() error { return r.s.Delete(ctx, key) })
}

func (r *retrying) Location() string { return r.s.Location() }
