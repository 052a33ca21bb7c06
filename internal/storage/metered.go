package storage

import (
	"context"
	"errors"
	"io"
)

// Meter is told the outcome of every Put attempt that goes through a
// metered store: the bytes of each one that stored an object, and each
// failure. It must be safe for concurrent use and must not block.
type Meter interface {
	// Uploaded reports that size bytes were stored under key.
	Uploaded(key string, size int64)
	// UploadFailed reports a Put of key that failed with err. An object
	// that already existed (ErrExists: a write-once store answering a
	// retry or an identical re-push) is not a failure and is not reported.
	UploadFailed(key string, err error)
}

// NewMetered wraps s so that m hears about every Put. Composed under the
// retrying wrapper it sees each attempt, so transient failures that a
// retry then fixed are counted too.
func NewMetered(s Storage, m Meter) Storage { return &metered{Storage: s, m: m} }

type metered struct {
	Storage
	m Meter
}

func (s *metered) Put(ctx context.Context, key string, body io.Reader, size int64) error {
	err := s.Storage.Put(ctx, key, body, size)
	switch {
	case err == nil:
		s.m.Uploaded(key, size)
	case !errors.Is(err, ErrExists):
		s.m.UploadFailed(key, err)
	}
	return err
}

// ErrorKind classifies a storage error for counting: "canceled" (the
// context ended), "permanent" (retrying cannot help: refused credentials,
// a missing bucket, a corrupt object) or "transient" (what the retrying
// wrapper retries: the network, throttling, a server error).
func ErrorKind(err error) string {
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	case IsPermanent(err):
		return "permanent"
	}
	return "transient"
}
