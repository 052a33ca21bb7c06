package local

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Storage {
		return newStore(t)
	})
}

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := New(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tempFiles returns the temporary files under root.
func tempFiles(t *testing.T, root string) []string {
	t.Helper()
	var found []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), tempPrefix) {
			found = append(found, p)
		}
		return nil
	})
	return found
}

func TestNoTempFilesLeft(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Put(ctx, "a/c", strings.NewReader("abc"), 3); err != nil {
		t.Fatal(err)
	}
	failing := []struct {
		name string
		put  func() error
	}{
		{"short body", func() error { return s.Put(ctx, "a/b", strings.NewReader("abc"), 10) }},
		{"long body", func() error { return s.Put(ctx, "a/b", strings.NewReader("abcdef"), 3) }},
		{"exists", func() error { return s.Put(ctx, "a/c", strings.NewReader("abd"), 3) }},
		{"cancelled", func() error { return s.Put(cancelled, "a/d", strings.NewReader("abd"), 3) }},
		{"body error", func() error { return s.Put(ctx, "a/e", io.MultiReader(strings.NewReader("ab"), errReader{}), 3) }},
	}
	for _, f := range failing {
		if err := f.put(); err == nil {
			t.Errorf("%s: Put succeeded", f.name)
		}
	}
	if left := tempFiles(t, s.root); len(left) > 0 {
		t.Fatalf("temporary files left behind: %v", left)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk read error") }

func TestNew(t *testing.T) {
	dir := t.TempDir()
	if _, err := New(filepath.Join(dir, "missing-parent", "repo")); err == nil || !storage.IsPermanent(err) {
		t.Fatalf("a repository under a missing parent: %v", err)
	}
	if _, err := New("relative/repo"); err == nil {
		t.Fatal("a relative path was accepted")
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := New(file); err == nil {
		t.Fatal("a file was accepted as the repository directory")
	}

	// The root is created by the first Put, not by New, with mode 0700,
	// and files are 0600.
	root := filepath.Join(dir, "repo")
	s, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("New created the root: %v", err)
	}
	if _, err := s.Stat(context.Background(), "x"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Stat in a missing root: %v", err)
	}
	if err := s.List(context.Background(), "", func(storage.ObjectInfo) error { return errors.New("listed") }); err != nil {
		t.Fatalf("List of a missing root: %v", err)
	}
	if err := s.Put(context.Background(), "a/b/c", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		mode fs.FileMode
	}{{root, 0o700}, {filepath.Join(root, "a"), 0o700}, {filepath.Join(root, "a", "b"), 0o700}, {filepath.Join(root, "a", "b", "c"), 0o600}} {
		st, err := os.Stat(c.path)
		if err != nil || st.Mode().Perm() != c.mode {
			t.Errorf("%s: mode %v, %v; want %v", c.path, st.Mode().Perm(), err, c.mode)
		}
	}
}

func TestPathInTheWay(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if err := s.Put(ctx, "x", strings.NewReader("z"), 1); err != nil {
		t.Fatal(err)
	}
	// A key whose parent is a file cannot be stored however often it is
	// retried; it does not exist either.
	if err := s.Put(ctx, "x/y", strings.NewReader("z"), 1); err == nil || !storage.IsPermanent(err) || errors.Is(err, storage.ErrExists) {
		t.Fatalf("Put under a file: want a permanent error, got %v", err)
	}
	if _, err := s.Stat(ctx, "x/y"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Stat under a file: %v", err)
	}
	if err := s.Get(ctx, "x/y", func(io.Reader) error { return nil }); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Get under a file: %v", err)
	}

	// A directory is a prefix, not an object.
	if err := s.Put(ctx, "d/e", strings.NewReader("z"), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, "d"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Stat of a directory: %v", err)
	}
	if err := s.Get(ctx, "d", func(io.Reader) error { return nil }); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Get of a directory: %v", err)
	}
	if err := s.Put(ctx, "d", strings.NewReader("z"), 1); err == nil || errors.Is(err, storage.ErrExists) {
		t.Fatalf("Put over a directory: %v", err)
	}
}

func TestListSkipsTempAndSpecialFiles(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	if err := s.Put(ctx, "wal/a", strings.NewReader("a"), 1); err != nil {
		t.Fatal(err)
	}
	// A crash can leave a temporary file behind.
	os.WriteFile(filepath.Join(s.root, "wal", tempPrefix+"123"), []byte("partial"), 0o600)
	os.Symlink("a", filepath.Join(s.root, "wal", "link"))
	var keys []string
	if err := s.List(ctx, "", func(oi storage.ObjectInfo) error { keys = append(keys, oi.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(keys, ",") != "wal/a" {
		t.Fatalf("List = %v, want only wal/a", keys)
	}
	if err := s.Put(ctx, "wal/"+tempPrefix+"x", strings.NewReader("a"), 1); err == nil {
		t.Fatal("a key naming a temporary file was accepted")
	}
}

func TestListOrderAcrossDirectories(t *testing.T) {
	// "a.x" < "a/b" < "a0" as strings, although a directory walk in
	// name order visits a/ first.
	s := newStore(t)
	ctx := context.Background()
	for _, k := range []string{"a0", "a/b", "a.x", "a-y", "a/b.c", "a/b0"} {
		if err := s.Put(ctx, k, strings.NewReader("v"), 1); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	s.List(ctx, "a", func(oi storage.ObjectInfo) error { keys = append(keys, oi.Key); return nil })
	want := "a-y,a.x,a/b,a/b.c,a/b0,a0"
	if got := strings.Join(keys, ","); got != want {
		t.Fatalf("List(a) = %s, want %s", got, want)
	}
}

func TestDeleteRemovesEmptyDirectories(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	s.Put(ctx, "a/b/c", strings.NewReader("v"), 1)
	s.Put(ctx, "a/d", strings.NewReader("v"), 1)
	if err := s.Delete(ctx, "a/b/c"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.root, "a", "b")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("empty directory a/b kept: %v", err)
	}
	if err := s.Delete(ctx, "a/d"); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(s.root); err != nil || !st.IsDir() {
		t.Fatalf("the root was removed: %v", err)
	}
}

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		errno syscall.Errno
		says  string
	}{
		{syscall.EACCES, "uid"},
		{syscall.EPERM, "uid"},
		{syscall.EROFS, "read-only"},
		{syscall.ENOSPC, "free space"},
	} {
		err := classify("storing", "wal/x", &fs.PathError{Op: "open", Path: "/repo/wal/x", Err: c.errno})
		if !storage.IsPermanent(err) || !strings.Contains(err.Error(), c.says) || !strings.Contains(err.Error(), "storing wal/x") {
			t.Errorf("%v: %v", c.errno, err)
		}
	}
	if err := classify("reading", "k", &fs.PathError{Op: "read", Path: "/repo/k", Err: syscall.EIO}); storage.IsPermanent(err) {
		t.Errorf("EIO should be retried: %v", err)
	}
}

func TestCancelledGetStopsReading(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	data := bytes.Repeat([]byte("x"), 1<<20)
	if err := s.Put(ctx, "big", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	err := s.Get(ctx, "big", func(r io.Reader) error {
		cancel()
		_, err := io.ReadAll(r)
		return err
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Get after cancel: %v", err)
	}
}

// TestPutDropsLargeObjectsFromCache: an object of dropCacheSize or more
// leaves the page cache once stored (its pages are not resident), a small
// one stays; both read back whole.
func TestPutDropsLargeObjectsFromCache(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	big := bytes.Repeat([]byte("pgkeep drops what it stored "), 4<<20/28)
	small := []byte("a manifest")
	for key, data := range map[string][]byte{"big": big, "small": small} {
		if err := s.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
	}
	resident := func(key string) (in, pages int) {
		p, err := s.path(key)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		st, _ := f.Stat()
		m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Munmap(m)
		vec := make([]byte, (len(m)+os.Getpagesize()-1)/os.Getpagesize())
		if _, _, e := syscall.Syscall(syscall.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
			t.Fatal(e)
		}
		for _, v := range vec {
			in += int(v & 1)
		}
		return in, len(vec)
	}
	if in, pages := resident("big"); in > pages/10 {
		t.Errorf("%d of the big object's %d pages still in the page cache", in, pages)
	}
	if in, pages := resident("small"); in != pages {
		t.Errorf("the small object was dropped from the page cache (%d of %d pages)", in, pages)
	}
	for key, data := range map[string][]byte{"big": big, "small": small} {
		var got []byte
		err := s.Get(ctx, key, func(r io.Reader) (err error) {
			got, err = io.ReadAll(r)
			return err
		})
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s read back %d bytes (%v), want %d", key, len(got), err, len(data))
		}
	}
}
