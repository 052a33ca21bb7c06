// Package storagetest is the conformance suite every storage backend must
// pass: it checks the contracts written on storage.Storage. A backend's
// test calls Run with a constructor for an empty store.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/storage"
)

// LargeSize is the size of the suite's large objects: big enough to need
// several parts of a multipart upload when the backend's part size is
// small (a backend under test should use the smallest it allows).
const LargeSize = 40 << 20

// midSize is the size of the objects that concurrent and failing large
// writes use: above a 5 MiB part size, smaller than LargeSize for speed.
const midSize = 12 << 20

// Run runs the suite. newStore must return a new, empty store each call.
func Run(t *testing.T, newStore func(t *testing.T) storage.Storage) {
	ctx := context.Background()

	t.Run("RoundTrip", func(t *testing.T) {
		s := newStore(t)
		before := time.Now().Add(-time.Minute)
		for _, n := range []int{0, 1, 1000, 1 << 20, LargeSize} {
			for _, plain := range []bool{false, true} {
				if plain && n != 1<<20 && n != LargeSize {
					continue
				}
				data := random(n, 1)
				key := fmt.Sprintf("round/trip/%d/plain-%v", n, plain)
				var body io.Reader = bytes.NewReader(data)
				if plain {
					// Not a *bytes.Reader, nor a Seeker: the generic path.
					body = struct{ io.Reader }{body}
				}
				if err := s.Put(ctx, key, body, int64(n)); err != nil {
					t.Fatalf("Put(%s): %v", key, err)
				}
				if got := Get(t, s, key); !bytes.Equal(got, data) {
					t.Fatalf("%s: read back %d bytes that differ from the %d written", key, len(got), n)
				}
				info, err := s.Stat(ctx, key)
				if err != nil || info.Size != int64(n) || info.Key != key {
					t.Fatalf("Stat(%s) = %+v, %v", key, info, err)
				}
				if info.ModTime.Before(before) || info.ModTime.After(time.Now().Add(time.Minute)) {
					t.Fatalf("Stat(%s): modification time %v is not about now", key, info.ModTime)
				}
			}
		}
	})

	t.Run("NoOverwrite", func(t *testing.T) {
		s := newStore(t)
		put(t, s, "a/b", []byte("first"))
		err := s.Put(ctx, "a/b", bytes.NewReader([]byte("second")), 6)
		if !errors.Is(err, storage.ErrExists) {
			t.Fatalf("second Put: %v, want ErrExists", err)
		}
		if got := Get(t, s, "a/b"); string(got) != "first" {
			t.Fatalf("object overwritten: %q", got)
		}
		// Also when the second write is large (multipart).
		big := random(midSize, 2)
		if err := s.Put(ctx, "a/b", bytes.NewReader(big), int64(len(big))); !errors.Is(err, storage.ErrExists) {
			t.Fatalf("second, large Put: %v, want ErrExists", err)
		}
		if got := Get(t, s, "a/b"); string(got) != "first" {
			t.Fatalf("object overwritten by a large Put: %d bytes", len(got))
		}
	})

	t.Run("SizeMismatchStoresNothing", func(t *testing.T) {
		s := newStore(t)
		small, big := []byte("12345"), random(midSize, 3)
		cases := []struct {
			name string
			data []byte
			size int64
		}{
			{"short", small, 10},
			{"long", small, 3},
			{"empty-declared", small, 0},
			{"large-short", big, midSize + 1},
			{"large-long", big, midSize - 1},
		}
		for _, c := range cases {
			for _, plain := range []bool{false, true} {
				key := fmt.Sprintf("size/%s/plain-%v", c.name, plain)
				var body io.Reader = bytes.NewReader(c.data)
				if plain {
					body = struct{ io.Reader }{body}
				}
				if err := s.Put(ctx, key, body, c.size); err == nil {
					t.Fatalf("%s: a body of %d bytes was accepted as %d", key, len(c.data), c.size)
				} else if errors.Is(err, storage.ErrExists) || errors.Is(err, storage.ErrNotFound) {
					t.Fatalf("%s: misleading error %v", key, err)
				}
				if _, err := s.Stat(ctx, key); !errors.Is(err, storage.ErrNotFound) {
					t.Fatalf("%s: object exists after a failed Put: %v", key, err)
				}
			}
		}
		listNothing(t, s, "size/")
	})

	t.Run("NotFound", func(t *testing.T) {
		s := newStore(t)
		put(t, s, "present/key", []byte("x"))
		for _, key := range []string{"missing/key", "present/key/below", "present", "missing"} {
			called := false
			err := s.Get(ctx, key, func(io.Reader) error { called = true; return nil })
			if !errors.Is(err, storage.ErrNotFound) || called {
				t.Fatalf("Get(%s) of a missing object: %v (fn called: %v)", key, err, called)
			}
			if !storage.IsPermanent(err) {
				t.Fatalf("Get(%s): not-found must not be retried", key)
			}
			if _, err := s.Stat(ctx, key); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("Stat(%s) of a missing object: %v", key, err)
			}
		}
	})

	t.Run("GetReturnsFnError", func(t *testing.T) {
		s := newStore(t)
		put(t, s, "k", []byte("data"))
		mine := errors.New("checksum mismatch")
		if err := s.Get(ctx, "k", func(io.Reader) error { return mine }); !errors.Is(err, mine) {
			t.Fatalf("Get did not return fn's error: %v", err)
		}
		// Get twice: each call starts from the beginning.
		for range 2 {
			if got := Get(t, s, "k"); string(got) != "data" {
				t.Fatalf("read %q", got)
			}
		}
	})

	t.Run("List", func(t *testing.T) {
		s := newStore(t)
		keys := []string{"wal/00000001/B", "wal/00000001/A", "wal/00000002/C", "walrus", "backups/x/y",
			"wal/00000001/A.partial", "wal/00000001/A-0", "wal0"}
		for _, k := range keys {
			put(t, s, k, []byte(k))
		}
		check := func(prefix string, want ...string) {
			t.Helper()
			var got []string
			err := s.List(ctx, prefix, func(oi storage.ObjectInfo) error {
				if oi.Size != int64(len(oi.Key)) {
					return fmt.Errorf("%s: size %d, want %d", oi.Key, oi.Size, len(oi.Key))
				}
				if oi.ModTime.IsZero() {
					return fmt.Errorf("%s: no modification time", oi.Key)
				}
				got = append(got, oi.Key)
				return nil
			})
			if err != nil {
				t.Fatalf("List(%q): %v", prefix, err)
			}
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Fatalf("List(%q) = %v, want %v", prefix, got, want)
			}
		}
		check("wal/", "wal/00000001/A", "wal/00000001/A-0", "wal/00000001/A.partial", "wal/00000001/B", "wal/00000002/C")
		check("wal/00000001/A", "wal/00000001/A", "wal/00000001/A-0", "wal/00000001/A.partial")
		check("wal", "wal/00000001/A", "wal/00000001/A-0", "wal/00000001/A.partial", "wal/00000001/B", "wal/00000002/C", "wal0", "walrus")
		check("", "backups/x/y", "wal/00000001/A", "wal/00000001/A-0", "wal/00000001/A.partial", "wal/00000001/B", "wal/00000002/C", "wal0", "walrus")
		check("backups/x/y", "backups/x/y")
		check("nothing/")
		check("wal/00000003/")

		stop := errors.New("stop")
		calls := 0
		if err := s.List(ctx, "", func(storage.ObjectInfo) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
			t.Fatalf("List did not stop with fn's error: %v after %d calls", err, calls)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		s := newStore(t)
		put(t, s, "d/e/f", []byte("x"))
		put(t, s, "d/e/g", []byte("y"))
		if err := s.Delete(ctx, "d/e/f"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, "d/e/f"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("deleted object still there: %v", err)
		}
		if got := Get(t, s, "d/e/g"); string(got) != "y" {
			t.Fatalf("a neighbour of the deleted object changed: %q", got)
		}
		for _, k := range []string{"d/e/f", "never/was"} {
			if err := s.Delete(ctx, k); err != nil {
				t.Fatalf("deleting absent %s: %v", k, err)
			}
		}
		put(t, s, "d/e/f", []byte("again")) // a deleted key can be written again
		if got := Get(t, s, "d/e/f"); string(got) != "again" {
			t.Fatalf("rewritten object reads %q", got)
		}
	})

	t.Run("CancelledPutStoresNothing", func(t *testing.T) {
		s := newStore(t)
		for _, n := range []int{4 << 20, midSize} {
			key := fmt.Sprintf("cancelled/%d", n)
			cctx, cancel := context.WithCancel(ctx)
			r := &cancelAfter{r: bytes.NewReader(random(n, 4)), n: 1 << 20, cancel: cancel}
			err := s.Put(cctx, key, r, int64(n))
			cancel()
			if err == nil {
				t.Fatalf("%s: Put succeeded after cancellation", key)
			}
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("%s: error does not say the context was cancelled: %v", key, err)
			}
			if _, err := s.Stat(ctx, key); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("%s: object visible after a cancelled Put: %v", key, err)
			}
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.Put(cctx, "cancelled/before", bytes.NewReader([]byte("x")), 1); err == nil {
			t.Fatal("Put with a cancelled context succeeded")
		}
		listNothing(t, s, "cancelled/")
	})

	t.Run("ConcurrentPutsOneWins", func(t *testing.T) {
		s := newStore(t)
		for _, c := range []struct{ writers, size int }{{8, 1000}, {3, midSize}} {
			key := fmt.Sprintf("race/%d", c.size)
			var wg sync.WaitGroup
			errs := make([]error, c.writers)
			datas := make([][]byte, c.writers)
			for i := range c.writers {
				datas[i] = random(c.size, uint64(100+i))
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[i] = s.Put(ctx, key, bytes.NewReader(datas[i]), int64(c.size))
				}()
			}
			wg.Wait()
			winner := -1
			for i, err := range errs {
				switch {
				case err == nil && winner >= 0:
					t.Fatalf("%s: writers %d and %d both succeeded", key, winner, i)
				case err == nil:
					winner = i
				case !errors.Is(err, storage.ErrExists):
					t.Fatalf("%s: writer %d: %v, want success or ErrExists", key, i, err)
				}
			}
			if winner < 0 {
				t.Fatalf("%s: no writer succeeded: %v", key, errs)
			}
			if got := Get(t, s, key); !bytes.Equal(got, datas[winner]) {
				t.Fatalf("%s: the stored object is not the winner's", key)
			}
		}
	})

	t.Run("BadKeys", func(t *testing.T) {
		s := newStore(t)
		for _, k := range []string{"", "/abs", "a/../b", "a//b", "trailing/", ".", "a/./b"} {
			if err := s.Put(ctx, k, bytes.NewReader(nil), 0); err == nil || !storage.IsPermanent(err) {
				t.Errorf("Put(%q): %v, want a permanent error", k, err)
			}
			if _, err := s.Stat(ctx, k); err == nil || errors.Is(err, storage.ErrNotFound) {
				t.Errorf("Stat(%q): %v, want a bad-key error", k, err)
			}
		}
		listNothing(t, s, "")
	})

	t.Run("Location", func(t *testing.T) {
		if newStore(t).Location() == "" {
			t.Fatal("empty Location")
		}
	})
}

func put(t *testing.T, s storage.Storage, key string, data []byte) {
	t.Helper()
	if err := s.Put(context.Background(), key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put(%s): %v", key, err)
	}
}

// Get reads the whole object under key, failing t on any error.
func Get(t *testing.T, s storage.Storage, key string) []byte {
	t.Helper()
	var out []byte
	err := s.Get(context.Background(), key, func(r io.Reader) error {
		var err error
		out, err = io.ReadAll(r)
		return err
	})
	if err != nil {
		t.Fatalf("Get(%s): %v", key, err)
	}
	return out
}

func listNothing(t *testing.T, s storage.Storage, prefix string) {
	t.Helper()
	err := s.List(context.Background(), prefix, func(oi storage.ObjectInfo) error {
		return fmt.Errorf("unexpected object %s", oi.Key)
	})
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
}

// random returns n reproducible pseudo-random bytes.
func random(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(uint64(n), seed))
	b := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b[:n:n]
}

// cancelAfter cancels a context once n bytes have been read, and goes on
// yielding data, as a body that does not watch the context would.
type cancelAfter struct {
	r      io.Reader
	n      int
	read   int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.read >= c.n {
		c.cancel()
	}
	n, err := c.r.Read(p)
	c.read += n
	return n, err
}
