// Package storagetest is the conformance suite every storage backend must
// pass. A backend's test calls Run with a constructor for an empty store.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/pgkeep/pgkeep/internal/storage"
)

// Options tune the suite for a backend.
type Options struct {
	// LargeSize is the size of the large-object test (to exercise
	// multipart uploads); 0 means 40 MiB.
	LargeSize int
}

// Run runs the suite. newStore must return an empty store each call.
func Run(t *testing.T, newStore func(t *testing.T) storage.Storage, opts Options) {
	if opts.LargeSize == 0 {
		opts.LargeSize = 40 << 20
	}
	ctx := context.Background()
	put := func(t *testing.T, s storage.Storage, key string, data []byte) {
		t.Helper()
		if err := s.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatalf("Put(%s): %v", key, err)
		}
	}
	get := func(t *testing.T, s storage.Storage, key string) []byte {
		t.Helper()
		var out []byte
		err := s.Get(ctx, key, func(r io.Reader) error {
			var err error
			out, err = io.ReadAll(r)
			return err
		})
		if err != nil {
			t.Fatalf("Get(%s): %v", key, err)
		}
		return out
	}

	t.Run("RoundTrip", func(t *testing.T) {
		s := newStore(t)
		for _, n := range []int{0, 1, 1000, 1 << 20, opts.LargeSize} {
			data := random(n)
			key := fmt.Sprintf("round/trip/%d", n)
			put(t, s, key, data)
			if got := get(t, s, key); !bytes.Equal(got, data) {
				t.Fatalf("%d bytes: read back %d different bytes", n, len(got))
			}
			info, err := s.Stat(ctx, key)
			if err != nil || info.Size != int64(n) || info.Key != key {
				t.Fatalf("Stat(%s) = %+v, %v", key, info, err)
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
		if got := get(t, s, "a/b"); string(got) != "first" {
			t.Fatalf("object overwritten: %q", got)
		}
	})

	t.Run("SizeMismatchStoresNothing", func(t *testing.T) {
		s := newStore(t)
		for name, size := range map[string]int64{"short": 10, "long": 3} {
			err := s.Put(ctx, "size/"+name, bytes.NewReader([]byte("12345")), size)
			if err == nil {
				t.Fatalf("%s body accepted", name)
			}
			if _, err := s.Stat(ctx, "size/"+name); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("%s body: object exists after failed Put: %v", name, err)
			}
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		s := newStore(t)
		called := false
		err := s.Get(ctx, "missing/key", func(io.Reader) error { called = true; return nil })
		if !errors.Is(err, storage.ErrNotFound) || called {
			t.Fatalf("Get missing: %v (fn called %v)", err, called)
		}
		if _, err := s.Stat(ctx, "missing/key"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Stat missing: %v", err)
		}
		if !storage.IsPermanent(err) {
			t.Fatal("ErrNotFound must be permanent")
		}
	})

	t.Run("List", func(t *testing.T) {
		s := newStore(t)
		keys := []string{"wal/00000001/B", "wal/00000001/A", "wal/00000002/C", "walrus", "backups/x/y", "wal/00000001/A.partial"}
		for _, k := range keys {
			put(t, s, k, []byte(k))
		}
		var got []string
		err := s.List(ctx, "wal/", func(oi storage.ObjectInfo) error {
			if oi.Size != int64(len(oi.Key)) {
				return fmt.Errorf("%s: size %d", oi.Key, oi.Size)
			}
			got = append(got, oi.Key)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"wal/00000001/A", "wal/00000001/A.partial", "wal/00000001/B", "wal/00000002/C"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("List(wal/) = %v, want %v", got, want)
		}
		var all []string
		s.List(ctx, "", func(oi storage.ObjectInfo) error { all = append(all, oi.Key); return nil })
		if len(all) != len(keys) {
			t.Fatalf("List() = %v", all)
		}
		stop := errors.New("stop")
		if err := s.List(ctx, "", func(storage.ObjectInfo) error { return stop }); !errors.Is(err, stop) {
			t.Fatalf("List did not return fn's error: %v", err)
		}
		var none []string
		if err := s.List(ctx, "nothing/", func(oi storage.ObjectInfo) error { none = append(none, oi.Key); return nil }); err != nil || len(none) != 0 {
			t.Fatalf("List(nothing/) = %v, %v", none, err)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		s := newStore(t)
		put(t, s, "d/e/f", []byte("x"))
		if err := s.Delete(ctx, "d/e/f"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Stat(ctx, "d/e/f"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("deleted object still there: %v", err)
		}
		if err := s.Delete(ctx, "d/e/f"); err != nil {
			t.Fatalf("deleting an absent object: %v", err)
		}
		put(t, s, "d/e/f", []byte("again")) // a deleted key can be written again
	})

	t.Run("CancelledPutStoresNothing", func(t *testing.T) {
		s := newStore(t)
		cctx, cancel := context.WithCancel(ctx)
		r := &cancelAfter{r: bytes.NewReader(random(4 << 20)), n: 1 << 20, cancel: cancel}
		err := s.Put(cctx, "cancelled", r, 4<<20)
		if err == nil {
			t.Fatal("Put succeeded after cancellation")
		}
		if _, err := s.Stat(ctx, "cancelled"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("object visible after a cancelled Put: %v", err)
		}
	})

	t.Run("ConcurrentPutsOneWins", func(t *testing.T) {
		s := newStore(t)
		const n = 8
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				data := bytes.Repeat([]byte{byte('a' + i)}, 1000)
				errs[i] = s.Put(ctx, "race", bytes.NewReader(data), int64(len(data)))
			}(i)
		}
		wg.Wait()
		wins := 0
		for _, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, storage.ErrExists):
				t.Fatalf("unexpected error: %v", err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d concurrent Puts succeeded, want exactly 1", wins)
		}
		got := get(t, s, "race")
		if len(got) != 1000 || !bytes.Equal(got, bytes.Repeat(got[:1], 1000)) {
			t.Fatal("the stored object mixes writers")
		}
	})

	t.Run("BadKeys", func(t *testing.T) {
		s := newStore(t)
		for _, k := range []string{"", "/abs", "a/../b", "a//b", "trailing/"} {
			if err := s.Put(ctx, k, bytes.NewReader(nil), 0); err == nil {
				t.Errorf("Put accepted key %q", k)
			}
		}
	})

	t.Run("Location", func(t *testing.T) {
		if newStore(t).Location() == "" {
			t.Fatal("empty Location")
		}
	})
}

func random(n int) []byte {
	r := rand.New(rand.NewPCG(uint64(n), 7))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// cancelAfter cancels a context after n bytes have been read.
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
