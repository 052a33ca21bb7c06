// Package local is the file:// storage backend: a directory tree on a
// local or network file system, one file per object.
//
// An object becomes visible atomically and is never overwritten: Put writes
// a temporary file (named ".tmp-*", which List never shows) in the target
// directory, fsyncs it, hard-links it to its final name (link(2) fails if
// the name exists, so a concurrent or repeated Put cannot replace an
// object), removes the temporary name and fsyncs the directory. The file
// system must therefore support hard links (every POSIX one does).
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/pgkeep/pgkeep/internal/freelist"

	"github.com/pgkeep/pgkeep/internal/storage"
)

// tempPrefix marks files being written; List never shows them and no key
// element may start with it.
const tempPrefix = ".tmp-"

// Modes of what the store creates: objects can hold database contents.
const (
	fileMode = 0o600
	dirMode  = 0o700
)

// dropCacheSize is the size from which Put drops an object's pages from
// the page cache once it is durable (posix_fadvise DONTNEED). Objects are
// read back rarely, and then cold by another process (a restore, a
// wal-fetch on another machine), so their pages serve nobody, and keeping
// them evicts the database's. It is also cheaper: the next object's
// writes reuse the pages just freed instead of pages the VM has never
// touched, which on these machines made a WAL drain of full segments
// take about 20% less CPU (115 against 150 ms a segment, medians of six
// interleaved pairs of drains). Small objects (manifests, summaries,
// markers) stay cached: they are what listings and the next command read.
const dropCacheSize = 1 << 20

// copyBufSize bounds the buffer Put copies through.
const copyBufSize = 1 << 20

// copyBufs are Put's buffers of copyBufSize, reused for the life of the
// process (a WAL pusher or a backup puts object after object).
var copyBufs = freelist.List[*[]byte]{New: func() *[]byte { b := make([]byte, copyBufSize); return &b }}

// Store keeps objects as files under a root directory.
type Store struct {
	root string
}

var _ storage.Storage = (*Store)(nil)

// New returns a Store rooted at root, an absolute path. root itself is
// created (0700) by the first Put if it is missing, but its parent must
// exist now: a mistyped path must not silently grow a new tree. Until
// then reads answer ErrNotFound and List lists nothing, which callers
// report as "no repository here".
func New(root string) (*Store, error) {
	if !filepath.IsAbs(root) {
		return nil, storage.Permanent(fmt.Errorf("repository path %q must be absolute", root))
	}
	root = filepath.Clean(root)
	st, err := os.Stat(root)
	switch {
	case err == nil && !st.IsDir():
		return nil, storage.Permanent(fmt.Errorf("repository path %s is not a directory", root))
	case errors.Is(err, fs.ErrNotExist):
		parent := filepath.Dir(root)
		if pst, perr := os.Stat(parent); perr != nil || !pst.IsDir() {
			return nil, storage.Permanent(fmt.Errorf("no pgkeep repository at %s, and none can be created there: directory %s does not exist", root, parent))
		}
	case err != nil:
		return nil, classify("opening repository", root, err)
	}
	return &Store{root: root}, nil
}

// Location returns the file URL of the root.
func (s *Store) Location() string { return "file://" + s.root }

// path returns the file that holds key.
func (s *Store) path(key string) (string, error) {
	if err := storage.ValidateKey(key); err != nil {
		return "", storage.Permanent(err)
	}
	for _, el := range strings.Split(key, "/") {
		if strings.HasPrefix(el, tempPrefix) {
			return "", storage.Permanent(fmt.Errorf("object key %q has an element starting with %q, reserved for temporary files", key, tempPrefix))
		}
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// classify wraps err with op and key, and marks as permanent the file
// system errors that retrying cannot fix, with advice.
func classify(op, key string, err error) error {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return storage.Permanent(fmt.Errorf("%s %s: %w: the repository must be readable and writable by the user pgkeep runs as (uid %d)", op, key, err, os.Geteuid()))
	case errors.Is(err, syscall.EROFS):
		return storage.Permanent(fmt.Errorf("%s %s: %w: the repository is on a read-only file system", op, key, err))
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return storage.Permanent(fmt.Errorf("%s %s: %w: free space in the repository's file system", op, key, err))
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.ENAMETOOLONG):
		return storage.Permanent(fmt.Errorf("%s %s: %w", op, key, err))
	}
	return fmt.Errorf("%s %s: %w", op, key, err)
}

// absent reports whether err from opening or stat-ing an object's path
// means that the object positively does not exist: the name is missing, or
// a directory on its path is a file.
func absent(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// Put writes a temp file, fsyncs it, links it to its final name (which
// fails if the name exists: no overwrite, ever) and fsyncs the directory.
// Missing directories are created (0700) and their parents fsynced. On any
// failure, including a cancelled ctx or a body that does not hold exactly
// size bytes, nothing is stored and no temporary file is left.
func (s *Store) Put(ctx context.Context, key string, body io.Reader, size int64) error {
	final, err := s.path(key)
	if err != nil {
		return err
	}
	if size < 0 {
		return storage.Permanent(fmt.Errorf("storing %s: negative size %d", key, size))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storing %s: %w", key, err)
	}
	dir := filepath.Dir(final)
	tmp, err := s.createTemp(dir)
	if err != nil {
		return classify("storing", key, err)
	}
	tmpName := tmp.Name()
	// After a successful link this removes the temporary name only.
	defer os.Remove(tmpName)

	var buf []byte
	if size+1 >= copyBufSize {
		bp := copyBufs.Get()
		defer copyBufs.Put(bp)
		buf = *bp
	} else {
		buf = make([]byte, size+1)
	}
	n, err := io.CopyBuffer(writerOnly{tmp}, &ctxReader{ctx: ctx, r: io.LimitReader(body, size+1)}, buf)
	if err == nil && n != size {
		err = storage.Permanent(fmt.Errorf("the body holds %s bytes, not %d as declared", countString(n, size), size))
	}
	if err == nil {
		err = tmp.Sync()
	}
	if err == nil && n >= dropCacheSize {
		// Durable now (see dropCacheSize); a failure only keeps the pages.
		unix.Fadvise(int(tmp.Fd()), 0, 0, unix.FADV_DONTNEED)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return classify("storing", key, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storing %s: %w", key, err)
	}
	if err := os.Link(tmpName, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			if st, serr := os.Lstat(final); serr == nil && st.IsDir() {
				return storage.Permanent(fmt.Errorf("storing %s: %s is a directory", key, final))
			}
			return fmt.Errorf("storing %s: %w", key, storage.ErrExists)
		}
		return classify("storing", key, err)
	}
	if err := syncDir(dir); err != nil {
		// The object is in place but perhaps not durable: report it, so
		// the caller does not build on it. A retry answers ErrExists and
		// the caller compares content.
		return classify("storing", key, fmt.Errorf("syncing directory %s: %w", dir, err))
	}
	return nil
}

// countString says how many bytes a body held, given that at most size+1
// were read.
func countString(n, size int64) string {
	if n > size {
		return "more than " + fmt.Sprint(size)
	}
	return fmt.Sprint(n)
}

// createTemp creates a temporary file (0600) in dir, creating dir first if
// needed. A concurrent Delete may remove a directory it just created, when
// empty; it then tries again.
func (s *Store) createTemp(dir string) (*os.File, error) {
	for attempt := 0; ; attempt++ {
		if err := s.mkdirAll(dir); err != nil {
			return nil, fmt.Errorf("creating directory %s: %w", dir, err)
		}
		f, err := os.CreateTemp(dir, tempPrefix+"*")
		if err == nil || !errors.Is(err, fs.ErrNotExist) || attempt == 2 {
			return f, err
		}
	}
}

// mkdirAll creates dir and its missing parents up to the root (whose parent
// must exist), fsyncing each new directory's parent so the new entries
// survive a crash.
func (s *Store) mkdirAll(dir string) error {
	st, err := os.Stat(dir)
	if err == nil {
		if !st.IsDir() {
			return fmt.Errorf("%s: %w", dir, syscall.ENOTDIR)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if dir != s.root && parent != dir {
		if err := s.mkdirAll(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, dirMode); err != nil {
		if errors.Is(err, fs.ErrExist) {
			if st, serr := os.Stat(dir); serr == nil && st.IsDir() {
				return nil // created concurrently
			}
		}
		return err
	}
	return syncDir(parent)
}

// syncDir fsyncs a directory, so entries added to or removed from it
// survive a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		return err // EINVAL/ENOTSUP: a file system that cannot sync directories
	}
	return nil
}

// Get opens the file and passes it to fn; reads stop when ctx ends.
func (s *Store) Get(ctx context.Context, key string, fn func(io.Reader) error) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	f, err := os.Open(p)
	if err != nil {
		if absent(err) {
			return fmt.Errorf("reading %s: %w", key, storage.ErrNotFound)
		}
		return classify("reading", key, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil {
		return classify("reading", key, err)
	} else if st.IsDir() {
		return fmt.Errorf("reading %s: %w", key, storage.ErrNotFound)
	}
	return fn(&ctxReader{ctx: ctx, r: f})
}

// Stat returns the file's size and modification time.
func (s *Store) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	p, err := s.path(key)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	st, err := os.Stat(p)
	if err == nil && st.IsDir() {
		err = fs.ErrNotExist // a directory is a prefix, not an object
	}
	if err != nil {
		if absent(err) {
			return storage.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, storage.ErrNotFound)
		}
		return storage.ObjectInfo{}, classify("stat", key, err)
	}
	return storage.ObjectInfo{Key: key, Size: st.Size(), ModTime: st.ModTime()}, nil
}

// List walks the tree under the deepest directory that prefix names,
// reading one directory at a time and calling fn in lexical key order.
// Only regular files are objects; temporary files, symbolic links and other
// special files are skipped.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	dir, keyDir, rest := s.root, "", prefix
	if i := strings.LastIndex(prefix, "/"); i >= 0 {
		if storage.ValidateKey(prefix[:i]) != nil {
			return nil // no well-formed key starts with this prefix
		}
		keyDir, rest = prefix[:i+1], prefix[i+1:]
		dir = filepath.Join(s.root, filepath.FromSlash(prefix[:i]))
	}
	return s.walk(ctx, dir, keyDir, rest, fn)
}

// walk lists the objects in dir (whose keys start with keyDir) whose names
// start with namePrefix, recursively.
func (s *Store) walk(ctx context.Context, dir, keyDir, namePrefix string, fn func(storage.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("listing %s: %w", keyDir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		if absent(err) {
			return nil // no such prefix, or deleted while listing
		}
		return classify("listing", keyDir, err)
	}
	// ReadDir sorts by name, but a directory's keys continue with "/",
	// which sorts after "." and "-": "a.x" < "a/b". Sort by what keys
	// begin with.
	sortName := func(e fs.DirEntry) string {
		if e.IsDir() {
			return e.Name() + "/"
		}
		return e.Name()
	}
	slices.SortFunc(entries, func(a, b fs.DirEntry) int { return strings.Compare(sortName(a), sortName(b)) })
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, namePrefix) || strings.HasPrefix(name, tempPrefix) {
			continue
		}
		switch {
		case e.IsDir():
			if err := s.walk(ctx, filepath.Join(dir, name), keyDir+name+"/", "", fn); err != nil {
				return err
			}
		case e.Type().IsRegular():
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("listing %s: %w", keyDir, err)
			}
			info, err := e.Info()
			if err != nil {
				if absent(err) {
					continue // deleted while listing
				}
				return classify("listing", keyDir+name, err)
			}
			if err := fn(storage.ObjectInfo{Key: keyDir + name, Size: info.Size(), ModTime: info.ModTime()}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete removes the file, then the directories it leaves empty (up to,
// not including, the root). Deleting an absent object succeeds.
func (s *Store) Delete(ctx context.Context, key string) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("deleting %s: %w", key, err)
	}
	if err := os.Remove(p); err != nil && !absent(err) {
		return classify("deleting", key, err)
	}
	for dir := filepath.Dir(p); dir != s.root && strings.HasPrefix(dir, s.root+string(filepath.Separator)); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break // not empty (or already gone)
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

// writerOnly hides an *os.File's ReadFrom, so io.CopyBuffer uses the
// buffer it is given (and the ctxReader) instead of its own 32 KiB one.
type writerOnly struct{ io.Writer }
