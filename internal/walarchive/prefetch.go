package walarchive

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/wal"
	"golang.org/x/sync/errgroup"
)

// Prefetch keeps recovery fed. PostgreSQL asks restore_command for one
// segment at a time and replays it before asking for the next, so fetching
// on demand leaves replay waiting on the network for every segment. After
// wal-fetch serves segment S it records S in the spool and, unless one is
// running, starts a detached prefetcher (pgkeep wal-prefetch) that
// downloads the next segments in parallel into PGDATA/pgkeep_prefetch,
// verifying each before renaming it into the spool, and stays ahead of
// what wal-fetch serves for as long as recovery asks; the next wal-fetch
// calls move a spooled segment into place without touching the network.
// A lock file keeps one prefetcher at a time. The spool is removed at the
// end of recovery (recovery_end_command runs pgkeep wal-prefetch --clean)
// and by the first wal-push after promotion.

// SpoolDir returns the prefetch spool of the data directory holding the
// pg_wal directory of dest ("" if dest is not in a pg_wal directory).
func SpoolDir(dest string) string {
	abs, err := filepath.Abs(dest)
	if err != nil {
		return ""
	}
	walDir := filepath.Dir(abs)
	if filepath.Base(walDir) != "pg_wal" {
		return ""
	}
	return filepath.Join(filepath.Dir(walDir), PrefetchDir)
}

// takeSpooled moves a spooled, already verified segment to dest. It
// reports false if the spool does not have it.
func takeSpooled(spool, name, dest string) bool {
	if spool == "" {
		return false
	}
	src := filepath.Join(spool, name)
	if err := os.Rename(src, dest); err == nil {
		return true
	} else if !errors.Is(err, syscall.EXDEV) {
		return false
	}
	// pg_wal on another file system: copy, then drop the spooled file.
	in, err := os.Open(src)
	if err != nil {
		return false
	}
	defer in.Close()
	tmp := dest + ".pgkeep-partial"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return false
	}
	_, cerr := io.Copy(out, in)
	if err := out.Close(); cerr == nil {
		cerr = err
	}
	if cerr != nil || os.Rename(tmp, dest) != nil {
		os.Remove(tmp)
		return false
	}
	os.Remove(src)
	return true
}

// pruneSpool removes spooled segments recovery has gone past.
func pruneSpool(spool, served string) {
	entries, err := os.ReadDir(spool)
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		if k, err := wal.Classify(n); err == nil && k == wal.KindSegment && n[8:] <= served[8:] {
			os.Remove(filepath.Join(spool, n))
		}
	}
}

// PrefetchOptions tune Prefetch.
type PrefetchOptions struct {
	// Count is how many segments to keep ahead of the one last served.
	Count int
	// Workers download in parallel.
	Workers int
	// Follow keeps the prefetcher running while recovery goes on: it
	// watches what wal-fetch serves (the spool's served record) and keeps
	// Count segments ahead, until recovery ends or nothing is served for
	// this long. 0: fetch one window and return.
	Follow time.Duration
}

// servedRecord is the spool's record of the segment wal-fetch served last.
const servedRecord = ".served"

// noteServed records in the spool that name was served (best effort: a
// lost record only makes the prefetcher wait for the next one).
func noteServed(spool, name string) {
	tmp := filepath.Join(spool, servedRecord+".tmp")
	if os.WriteFile(tmp, []byte(name), 0o600) == nil {
		os.Rename(tmp, filepath.Join(spool, servedRecord))
	}
}

// lastServed reads the spool's served record ("" if none or unreadable).
func lastServed(spool string) string {
	b, err := os.ReadFile(filepath.Join(spool, servedRecord))
	if err != nil {
		return ""
	}
	if k, err := wal.Classify(string(b)); err != nil || k != wal.KindSegment {
		return ""
	}
	return string(b)
}

// PrefetcherRunning reports whether a prefetcher holds pgdata's spool.
func PrefetcherRunning(pgdata string) bool { return lockHeld(PrefetchLock(pgdata)) }

// Prefetch downloads the segments after name into the spool of pgdata,
// opts.Count at a time with opts.Workers in parallel, stopping at the end
// of the archive; with opts.Follow it goes on as recovery asks for more
// (see PrefetchOptions). One process start per segment was what fetching
// added to replay: a prefetcher that follows is started once. It returns
// at once if another prefetcher holds the spool's lock.
func Prefetch(ctx context.Context, r *repo.Repo, pgdata, name string, opts PrefetchOptions) error {
	spool := filepath.Join(pgdata, PrefetchDir)
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return err
	}
	l, ok, err := tryLock(PrefetchLock(pgdata))
	if err != nil || !ok {
		return err // !ok: another prefetcher is at work
	}
	defer l.release()
	id, err := r.Identity(ctx)
	if err != nil {
		return err
	}
	served, lastProgress := name, time.Now()
	for {
		if err := prefetchWindow(ctx, r, spool, pgdata, served, opts, id.WalSegSize); err != nil {
			return err
		}
		if opts.Follow <= 0 {
			break
		}
		// Wait for recovery to ask for a later segment.
		for {
			if !inRecovery(pgdata) || ctx.Err() != nil {
				break
			}
			if s := lastServed(spool); s > served {
				served, lastProgress = s, time.Now()
				break
			}
			if time.Since(lastProgress) > opts.Follow {
				return nil // recovery is not asking: the next wal-fetch starts another
			}
			time.Sleep(10 * time.Millisecond)
		}
		if !inRecovery(pgdata) || ctx.Err() != nil {
			break
		}
	}
	if !inRecovery(pgdata) {
		// Recovery ended while we worked: leave nothing behind.
		return CleanSpool(pgdata)
	}
	return ctx.Err()
}

// prefetchWindow downloads the opts.Count segments after served that the
// spool does not have, stopping at the end of the archive.
func prefetchWindow(ctx context.Context, r *repo.Repo, spool, pgdata, served string, opts PrefetchOptions, segSize uint64) error {
	var mu sync.Mutex
	end := "" // the first segment the archive does not have
	var g errgroup.Group
	g.SetLimit(max(opts.Workers, 1))
	next := served
	var err error
	for range opts.Count {
		if next, err = wal.NextSegmentName(next, segSize); err != nil {
			return err
		}
		n := next
		g.Go(func() error {
			mu.Lock()
			stop := end != "" && n > end
			mu.Unlock()
			if stop || !inRecovery(pgdata) {
				return nil
			}
			if _, err := os.Stat(filepath.Join(spool, n)); err == nil {
				return nil
			}
			// A failure only costs the next wal-fetch a download.
			if err := fetchInto(ctx, r, n, filepath.Join(spool, n), segSize); errors.Is(err, ErrNotArchived) {
				mu.Lock()
				if end == "" || n < end {
					end = n
				}
				mu.Unlock()
			}
			return nil
		})
	}
	g.Wait()
	return nil
}

// inRecovery reports whether pgdata still has a signal file: PostgreSQL
// removes them when recovery ends.
func inRecovery(pgdata string) bool {
	for _, f := range []string{"recovery.signal", "standby.signal"} {
		if _, err := os.Stat(filepath.Join(pgdata, f)); err == nil {
			return true
		}
	}
	return false
}

// CleanSpool removes the prefetch spool of pgdata, and the marker of an
// archive ended on purpose (ArchiveEndMarker): recovery is over.
func CleanSpool(pgdata string) error {
	os.Remove(filepath.Join(pgdata, ArchiveEndMarker))
	return os.RemoveAll(filepath.Join(pgdata, PrefetchDir))
}
