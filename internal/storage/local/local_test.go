package local

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Storage {
		s, err := New(filepath.Join(t.TempDir(), "repo"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, storagetest.Options{})
}

func TestNoTempFilesLeft(t *testing.T) {
	root := filepath.Join(t.TempDir(), "repo")
	s, _ := New(root)
	s.Put(context.Background(), "a/b", bytes.NewReader([]byte("abc")), 10) // fails: short body
	s.Put(context.Background(), "a/c", bytes.NewReader([]byte("abc")), 3)
	s.Put(context.Background(), "a/c", bytes.NewReader([]byte("abd")), 3) // fails: exists
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if strings.HasPrefix(d.Name(), tempPrefix) {
			t.Errorf("temp file left behind: %s", p)
		}
		return nil
	})
}

func TestNewRefusesMissingParent(t *testing.T) {
	if _, err := New("/nonexistent-parent/repo"); err == nil {
		t.Fatal("a repository under a missing parent was accepted")
	}
	if _, err := New("relative/repo"); err == nil {
		t.Fatal("a relative path was accepted")
	}
}

func TestLocalFailuresArePermanent(t *testing.T) {
	// A key whose parent is a file cannot be stored however often it is
	// retried.
	root := filepath.Join(t.TempDir(), "repo")
	s, _ := New(root)
	ctx := context.Background()
	if err := s.Put(ctx, "x", bytes.NewReader([]byte("z")), 1); err != nil {
		t.Fatal(err)
	}
	err := s.Put(ctx, "x/y", bytes.NewReader([]byte("z")), 1)
	if err == nil || !storage.IsPermanent(err) {
		t.Fatalf("want a permanent error, got %v", err)
	}
}
