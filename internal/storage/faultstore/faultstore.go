// Package faultstore wraps a storage.Storage to count its calls and to
// make chosen ones fail, for tests of the code above the storage contract
// (in the manner of pebble's vfs/errorfs). Injectors decide, per call,
// whether it fails: on the Nth call, for keys matching a prefix, for one
// operation, or any combination. It exists for tests only.
package faultstore

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"

	"github.com/pgkeep/pgkeep/internal/storage"
)

// Op is a Storage operation.
type Op string

// The operations.
const (
	Put    Op = "put"
	Get    Op = "get"
	Stat   Op = "stat"
	List   Op = "list"
	Delete Op = "delete"
)

// Injector decides whether a call fails: it returns the error to return
// instead of making the call, or nil.
type Injector interface {
	Inject(op Op, key string) error
}

// InjectorFunc is a function as an Injector.
type InjectorFunc func(op Op, key string) error

// Inject calls f.
func (f InjectorFunc) Inject(op Op, key string) error { return f(op, key) }

// Match selects calls: by operation ("" any) and key prefix ("" any).
type Match struct {
	Op     Op
	Prefix string
}

func (m Match) matches(op Op, key string) bool {
	return (m.Op == "" || m.Op == op) && strings.HasPrefix(key, m.Prefix)
}

// OnNth fails the nth matching call (counting from 1) with err, once.
func OnNth(n int, m Match, err error) Injector {
	var mu sync.Mutex
	seen := 0
	return InjectorFunc(func(op Op, key string) error {
		if !m.matches(op, key) {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		seen++
		if seen == n {
			return err
		}
		return nil
	})
}

// Always fails every matching call with err.
func Always(m Match, err error) Injector {
	return InjectorFunc(func(op Op, key string) error {
		if m.matches(op, key) {
			return err
		}
		return nil
	})
}

// LostAnswer makes the nth matching call happen, then return err as if
// its answer was lost (a connection dropped after the store applied a
// write): what the write-once comparison after a retried Put is for.
func LostAnswer(n int, m Match, err error) Injector {
	var mu sync.Mutex
	seen := 0
	return afterFunc(func(op Op, key string) error {
		if !m.matches(op, key) {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		seen++
		if seen == n {
			return err
		}
		return nil
	})
}

// afterFunc is an Injector consulted after the call succeeded.
type afterFunc func(op Op, key string) error

func (afterFunc) Inject(Op, string) error               { return nil }
func (f afterFunc) injectAfter(op Op, key string) error { return f(op, key) }

type afterInjector interface{ injectAfter(op Op, key string) error }

// ErrInjected is the error tests usually inject: transient (the retrying
// wrapper retries it).
var ErrInjected = errors.New("injected fault")

// Store is a Storage that counts its calls and fails the ones its
// injectors choose. Injectors may be added while it is in use.
type Store struct {
	inner storage.Storage

	mu     sync.Mutex
	inj    []Injector
	counts map[Op]map[string]int // op -> key -> calls
}

var _ storage.Storage = (*Store)(nil)

// New wraps inner.
func New(inner storage.Storage, inj ...Injector) *Store {
	return &Store{inner: inner, inj: inj, counts: map[Op]map[string]int{}}
}

// Inject adds injectors.
func (s *Store) Inject(inj ...Injector) {
	s.mu.Lock()
	s.inj = append(s.inj, inj...)
	s.mu.Unlock()
}

// Reset removes every injector and forgets the counts.
func (s *Store) Reset() {
	s.mu.Lock()
	s.inj, s.counts = nil, map[Op]map[string]int{}
	s.mu.Unlock()
}

// Calls returns how many op calls (all operations when op is "") were made
// on keys starting with prefix, failed ones included.
func (s *Store) Calls(op Op, prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for o, keys := range s.counts {
		if op != "" && o != op {
			continue
		}
		for k, c := range keys {
			if strings.HasPrefix(k, prefix) {
				n += c
			}
		}
	}
	return n
}

// after consults the injectors that act once the call has succeeded.
func (s *Store) after(op Op, key string, err error) error {
	if err != nil {
		return err
	}
	s.mu.Lock()
	inj := append([]Injector(nil), s.inj...)
	s.mu.Unlock()
	for _, i := range inj {
		if a, ok := i.(afterInjector); ok {
			if err := a.injectAfter(op, key); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Store) before(op Op, key string) error {
	s.mu.Lock()
	if s.counts[op] == nil {
		s.counts[op] = map[string]int{}
	}
	s.counts[op][key]++
	inj := append([]Injector(nil), s.inj...)
	s.mu.Unlock()
	for _, i := range inj {
		if err := i.Inject(op, key); err != nil {
			return err
		}
	}
	return nil
}

// Put implements storage.Storage.
func (s *Store) Put(ctx context.Context, key string, body io.Reader, size int64) error {
	if err := s.before(Put, key); err != nil {
		return err
	}
	return s.after(Put, key, s.inner.Put(ctx, key, body, size))
}

// Get implements storage.Storage.
func (s *Store) Get(ctx context.Context, key string, fn func(io.Reader) error) error {
	if err := s.before(Get, key); err != nil {
		return err
	}
	return s.after(Get, key, s.inner.Get(ctx, key, fn))
}

// Stat implements storage.Storage.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if err := s.before(Stat, key); err != nil {
		return storage.ObjectInfo{}, err
	}
	return s.inner.Stat(ctx, key)
}

// List implements storage.Storage.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	if err := s.before(List, prefix); err != nil {
		return err
	}
	return s.inner.List(ctx, prefix, fn)
}

// Delete implements storage.Storage.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.before(Delete, key); err != nil {
		return err
	}
	return s.after(Delete, key, s.inner.Delete(ctx, key))
}

// Location implements storage.Storage.
func (s *Store) Location() string { return s.inner.Location() }
