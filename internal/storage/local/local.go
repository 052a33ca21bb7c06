// Package local is the file:// storage backend: a directory tree on a
// local or network file system.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/pgkeep/pgkeep/internal/storage"
)

// tempPrefix marks files being written; List never shows them.
const tempPrefix = ".tmp-"

// Store keeps objects as files under a root directory.
type Store struct {
	root string
}

var _ storage.Storage = (*Store)(nil)

// New returns a Store rooted at root. root is created (0700) if missing,
// but its parent must exist: a mistyped path should not silently make a
// new tree.
func New(root string) (*Store, error) {
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("repository path %q must be absolute", root)
	}
	st, err := os.Stat(root)
	switch {
	case err == nil && !st.IsDir():
		return nil, fmt.Errorf("%s is not a directory", root)
	case errors.Is(err, fs.ErrNotExist):
		if _, perr := os.Stat(filepath.Dir(root)); perr != nil {
			return nil, storage.Permanent(fmt.Errorf("no pgkeep repository at %s, and none can be created there: %w", root, perr))
		}
		// Created lazily by the first Put; reads of a missing root answer
		// "not found", which repo turns into "no repository here".
	case err != nil:
		return nil, classify(fmt.Errorf("checking repository %s: %w", root, err))
	}
	return &Store{root: root}, nil
}

// Location returns the file URL of the root.
func (s *Store) Location() string { return "file://" + s.root }

func (s *Store) path(key string) (string, error) {
	if err := storage.ValidateKey(key); err != nil {
		return "", storage.Permanent(err)
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// classify marks permission and other non-transient file system errors as
// permanent.
func classify(err error) error {
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) || errors.Is(err, syscall.ENOSPC) ||
		errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.ENOTDIR) {
		return storage.Permanent(err)
	}
	return err
}

// Put writes a temp file, fsyncs it, links it to its final name (which
// fails if the name exists: no overwrite, ever) and fsyncs the directory.
func (s *Store) Put(ctx context.Context, key string, body io.Reader, size int64) error {
	final, err := s.path(key)
	if err != nil {
		return err
	}
	dir := filepath.Dir(final)
	if err := s.mkdirAll(dir); err != nil {
		return classify(fmt.Errorf("creating directory for %s: %w", key, err))
	}
	tmp, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return classify(fmt.Errorf("storing %s: %w", key, err))
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // after a successful link this removes the temp name only
	n, err := io.Copy(tmp, &ctxReader{ctx: ctx, r: io.LimitReader(body, size+1)})
	if err == nil && n != size {
		err = storage.Permanent(fmt.Errorf("body has %d bytes, expected %d", n, size))
	}
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return classify(fmt.Errorf("storing %s: %w", key, err))
	}
	if err := os.Link(tmpName, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("storing %s: %w", key, storage.ErrExists)
		}
		return classify(fmt.Errorf("storing %s: %w", key, err))
	}
	if err := syncDir(dir); err != nil {
		return classify(fmt.Errorf("storing %s: %w", key, err))
	}
	return nil
}

// mkdirAll creates dir and its missing parents, fsyncing each parent so
// the new entries survive a crash.
func (s *Store) mkdirAll(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	parent := filepath.Dir(dir)
	if dir != s.root && parent != dir {
		if err := s.mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(parent)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// Get opens the file and passes it to fn.
func (s *Store) Get(ctx context.Context, key string, fn func(io.Reader) error) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s: %w", key, storage.ErrNotFound)
		}
		return classify(fmt.Errorf("reading %s: %w", key, err))
	}
	defer f.Close()
	return fn(&ctxReader{ctx: ctx, r: f})
}

// Stat returns the file's size and time.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	p, err := s.path(key)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	st, err := os.Stat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return storage.ObjectInfo{}, fmt.Errorf("%s: %w", key, storage.ErrNotFound)
		}
		return storage.ObjectInfo{}, classify(fmt.Errorf("stat %s: %w", key, err))
	}
	return storage.ObjectInfo{Key: key, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// List walks the tree in lexical key order.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	// Start at the deepest directory the prefix names.
	start := s.root
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		start = filepath.Join(s.root, filepath.FromSlash(prefix[:i]))
	}
	var keys []storage.ObjectInfo
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || strings.HasPrefix(d.Name(), tempPrefix) {
			return nil
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // deleted while listing
			}
			return err
		}
		keys = append(keys, storage.ObjectInfo{Key: key, Size: info.Size(), ModTime: info.ModTime()})
		return nil
	})
	if err != nil {
		return classify(fmt.Errorf("listing %s: %w", prefix, err))
	}
	// WalkDir orders by path, where "/" sorts before other characters of
	// a name; keys sort lexically as strings.
	sort.Slice(keys, func(i, j int) bool { return keys[i].Key < keys[j].Key })
	for _, k := range keys {
		if err := fn(k); err != nil {
			return err
		}
	}
	return nil
}

// Delete removes the file and any directories it leaves empty.
func (s *Store) Delete(ctx context.Context, key string) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return classify(fmt.Errorf("deleting %s: %w", key, err))
	}
	for dir := filepath.Dir(p); dir != s.root && strings.HasPrefix(dir, s.root); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break // not empty, or gone
		}
	}
	return nil
}

// ctxReader stops reading when the context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
