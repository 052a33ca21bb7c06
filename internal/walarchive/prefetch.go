package walarchive

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// Prefetch keeps recovery fed. PostgreSQL asks restore_command for one
// segment at a time and replays it before asking for the next, so fetching
// on demand leaves replay waiting on the network for every segment. After
// wal-fetch serves segment S it starts a detached prefetcher (pgkeep
// wal-prefetch) that downloads the next segments in parallel into
// PGDATA/pgkeep_prefetch, verifying each before renaming it into the
// spool; the next wal-fetch calls move a spooled segment into place
// without touching the network. A lock file keeps one prefetcher at a
// time. The spool is removed at the end of recovery (recovery_end_command
// runs pgkeep wal-prefetch --clean) and by the first wal-push after
// promotion.

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

// NextSegments names the count segments after name on its timeline.
func NextSegments(name string, count int, segSize uint64) ([]string, error) {
	seg, err := wal.ParseSegmentName(name, segSize)
	if err != nil {
		return nil, err
	}
	var out []string
	for i := 1; i <= count; i++ {
		out = append(out, wal.SegmentName(seg.TLI, seg.No+uint64(i), segSize))
	}
	return out, nil
}

// Prefetch downloads up to count segments after name into the spool of
// pgdata, with workers in parallel, stopping at the end of the archive. It
// returns at once if another prefetcher holds the spool's lock.
func Prefetch(ctx context.Context, r *repo.Repo, pgdata, name string, count, workers int) error {
	spool := filepath.Join(pgdata, PrefetchDir)
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(spool, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return nil // another prefetcher is at work
	}
	id, err := r.Identity(ctx)
	if err != nil {
		return err
	}
	names, err := NextSegments(name, count, id.WalSegSize)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	next := make(chan string)
	var mu sync.Mutex
	end := "" // the first segment the archive does not have
	for w := 0; w < max(workers, 1); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range next {
				mu.Lock()
				stop := end != "" && n > end
				mu.Unlock()
				if stop || !inRecovery(pgdata) {
					continue
				}
				if _, err := os.Stat(filepath.Join(spool, n)); err == nil {
					continue
				}
				err := fetchInto(ctx, r, n, filepath.Join(spool, n), id.WalSegSize)
				if errors.Is(err, ErrNotArchived) {
					mu.Lock()
					if end == "" || n < end {
						end = n
					}
					mu.Unlock()
				}
			}
		}()
	}
	for _, n := range names {
		next <- n
	}
	close(next)
	wg.Wait()
	if !inRecovery(pgdata) {
		// Recovery ended while we worked: leave nothing behind.
		return CleanSpool(pgdata)
	}
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
