// Package storage defines the blob store that a pgkeep repository lives in,
// and the contracts every backend must honour.
//
// Backends (package local and package s3) implement Storage and classify
// their own errors; they never retry on their own. Retrying, with backoff and
// jitter, is the job of the wrapper in this package (NewRetrying), composed
// around a backend in one place (package repo).
//
// Keys are slash-separated relative paths such as
// "wal/00000001/000000010000000000000001". They never start with a slash,
// never contain "." or ".." elements, and never end with a slash.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// ErrNotFound is returned (possibly wrapped) when an object does not exist.
// A backend MUST return it only when the store positively answered that the
// object is absent, never for a transport or permission failure: pgkeep
// wal-fetch turns it into "no such file", which PostgreSQL takes as the end
// of the archive.
var ErrNotFound = errors.New("object not found")

// ErrExists is returned (possibly wrapped) by Put when an object with the
// key already exists. The existing object is left untouched.
var ErrExists = errors.New("object already exists")

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// Storage is a flat, write-once object store.
type Storage interface {
	// Put stores size bytes read from body under key. The object appears
	// atomically: a reader sees either no object or all of it, never a
	// prefix, also when the process dies midway. Put never overwrites: if
	// key already exists it MUST return an error wrapping ErrExists and
	// leave the existing object unchanged. On return without error the
	// object is durable.
	//
	// body is read from its current position; if it also implements
	// io.Seeker, wrappers may rewind it to retry. size MUST equal the number
	// of bytes body yields; a mismatch is an error and stores nothing.
	Put(ctx context.Context, key string, body io.Reader, size int64) error

	// Get calls fn with a reader over the object's whole content. fn may be
	// called more than once (a retrying wrapper calls it again after a
	// transient failure), so it MUST be idempotent and start from scratch on
	// each call. If the object does not exist, Get returns an error wrapping
	// ErrNotFound without calling fn. An error returned by fn is returned by
	// Get unchanged (possibly wrapped).
	Get(ctx context.Context, key string, fn func(r io.Reader) error) error

	// Stat returns the object's size and modification time, or an error
	// wrapping ErrNotFound.
	Stat(ctx context.Context, key string) (ObjectInfo, error)

	// List calls fn for every object whose key starts with prefix, in
	// lexical key order. It stops and returns fn's error if fn fails. Keys of
	// objects being written (temporary files, incomplete multipart uploads)
	// are never listed.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error

	// Delete removes the object. Deleting an absent object is not an error.
	Delete(ctx context.Context, key string) error

	// Location describes where the store is, for messages. It MUST NOT
	// contain credentials.
	Location() string
}

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that a retry cannot fix (bad credentials, a
// missing bucket, a corrupt object). Backends use it to classify errors;
// the retrying wrapper gives up at once on such errors.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether retrying err is pointless: it is marked
// Permanent, wraps ErrNotFound or ErrExists, or the context ended.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p) ||
		errors.Is(err, ErrNotFound) ||
		errors.Is(err, ErrExists) ||
		errors.Is(err, context.Canceled) ||
		errors.Is(err, context.DeadlineExceeded)
}

// ValidateKey reports whether key is a well-formed object key.
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("empty object key")
	}
	if strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") {
		return fmt.Errorf("object key %q must not start or end with a slash", key)
	}
	for _, el := range strings.Split(key, "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("object key %q has an empty, \".\" or \"..\" element", key)
		}
	}
	return nil
}
