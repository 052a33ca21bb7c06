package faultstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"testing"

	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/storage/local"
	"github.com/pgkeep/pgkeep/internal/storage/storagetest"
)

// The wrapper with no injector is a Storage like any other: it passes the
// conformance suite.
func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Storage {
		st, err := local.New(filepath.Join(t.TempDir(), "repo"))
		if err != nil {
			t.Fatal(err)
		}
		return New(st)
	})
}

func TestInjectors(t *testing.T) {
	ctx := context.Background()
	st, _ := local.New(filepath.Join(t.TempDir(), "repo"))
	s := New(st, OnNth(2, Match{Op: Put, Prefix: "wal/"}, ErrInjected))
	put := func(key string) error { return s.Put(ctx, key, bytes.NewReader([]byte("x")), 1) }
	if err := put("wal/1"); err != nil {
		t.Fatal(err)
	}
	if err := put("backups/1"); err != nil {
		t.Fatal("a call the injector does not match failed")
	}
	if err := put("wal/2"); !errors.Is(err, ErrInjected) {
		t.Fatalf("second matching put: %v", err)
	}
	if err := put("wal/3"); err != nil {
		t.Fatal("OnNth fails once")
	}
	if n := s.Calls(Put, "wal/"); n != 3 {
		t.Fatalf("counted %d puts under wal/", n)
	}
	s.Inject(Always(Match{Op: Get}, ErrInjected))
	if err := s.Get(ctx, "wal/1", func(io.Reader) error { return nil }); !errors.Is(err, ErrInjected) {
		t.Fatalf("Always: %v", err)
	}
}
