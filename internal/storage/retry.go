package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// RetryPolicy says how NewRetrying retries transient failures.
type RetryPolicy struct {
	MaxAttempts     int           // attempts in all, at least 1
	InitialInterval time.Duration // first wait
	MaxInterval     time.Duration // longest wait
	MaxElapsed      time.Duration // give up once this much time has passed (0: no limit)
	// OnRetry, if set, is told about each failure that will be retried.
	OnRetry func(op, key string, attempt int, err error)
}

// DefaultRetryPolicy retries up to 10 attempts over at most two minutes,
// waiting 100 ms to 5 s between them, with jitter.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{MaxAttempts: 10, InitialInterval: 100 * time.Millisecond, MaxInterval: 5 * time.Second, MaxElapsed: 2 * time.Minute}
}

// retrying wraps a Storage and retries its transient failures.
type retrying struct {
	s Storage
	p RetryPolicy
}

var _ Storage = (*retrying)(nil)

// NewRetrying returns s with every operation retried on transient errors
// (those for which IsPermanent is false), with exponential backoff and
// jitter, until the policy gives up or the context ends.
//
// Put is retried only when its body is an io.Seeker (it is rewound to
// where it started). A retried Put may return ErrExists when an earlier
// attempt stored the object but its answer was lost; callers that write
// idempotently compare the stored content (repo.PutEncoded does).
func NewRetrying(s Storage, p RetryPolicy) Storage {
	if p.MaxAttempts < 1 {
		p.MaxAttempts = 1
	}
	return &retrying{s: s, p: p}
}

func (r *retrying) do(ctx context.Context, op, key string, fn func() error) error {
	attempt := 0
	b := &backoff.ExponentialBackOff{
		InitialInterval:     r.p.InitialInterval,
		RandomizationFactor: 0.5,
		Multiplier:          2,
		MaxInterval:         r.p.MaxInterval,
	}
	var last error
	_, err := backoff.Retry(ctx, func() (struct{}, error) {
		attempt++
		err := fn()
		if err == nil {
			return struct{}{}, nil
		}
		last = err
		if IsPermanent(err) || ctx.Err() != nil {
			return struct{}{}, backoff.Permanent(err)
		}
		if attempt < r.p.MaxAttempts && r.p.OnRetry != nil {
			r.p.OnRetry(op, key, attempt, err)
		}
		return struct{}{}, err
	}, backoff.WithBackOff(b), backoff.WithMaxTries(uint(r.p.MaxAttempts)), backoff.WithMaxElapsedTime(r.p.MaxElapsed))
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && last == nil {
		return ctx.Err()
	}
	if last != nil && !IsPermanent(last) && attempt > 1 {
		return fmt.Errorf("%w (gave up after %d attempts)", last, attempt)
	}
	if last != nil {
		return last
	}
	var pe *backoff.PermanentError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func (r *retrying) Put(ctx context.Context, key string, body io.Reader, size int64) error {
	seeker, canRewind := body.(io.Seeker)
	var start int64
	if canRewind {
		var err error
		if start, err = seeker.Seek(0, io.SeekCurrent); err != nil {
			canRewind = false
		}
	}
	first := true
	return r.do(ctx, "put", key, func() error {
		if !first {
			if _, err := seeker.Seek(start, io.SeekStart); err != nil {
				return Permanent(fmt.Errorf("rewinding body of %s: %w", key, err))
			}
		}
		first = false
		err := r.s.Put(ctx, key, body, size)
		if err != nil && !canRewind {
			return Permanent(err)
		}
		return err
	})
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
	// A listing that fails midway restarts; fn must tolerate seeing keys
	// again, so deliver only keys beyond the last one delivered.
	last := ""
	return r.do(ctx, "list", prefix, func() error {
		return r.s.List(ctx, prefix, func(oi ObjectInfo) error {
			if last != "" && oi.Key <= last {
				return nil
			}
			if err := fn(oi); err != nil {
				return Permanent(err)
			}
			last = oi.Key
			return nil
		})
	})
}

func (r *retrying) Delete(ctx context.Context, key string) error {
	return r.do(ctx, "delete", key, func() error { return r.s.Delete(ctx, key) })
}

func (r *retrying) Location() string { return r.s.Location() }
