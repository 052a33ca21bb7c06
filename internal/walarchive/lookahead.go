package walarchive

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// Look-ahead archiving. PostgreSQL runs archive_command for one segment at
// a time, so a backlog drains at the speed of one upload after another.
// When wal-push is asked for segment S, it also uploads the next segments
// that PostgreSQL has marked ready (pg_wal/archive_status/*.ready), in
// parallel, and records each durable upload in pg_wal/pgkeep/pushed/NAME
// with the content's size and checksum. When PostgreSQL then asks for one
// of those segments, wal-push hashes the file, and if it matches the record
// it answers success at once, without the network. PostgreSQL still hears
// "archived" only for content that is durably in the repository.

// pushedDir is where look-ahead records live, inside pg_wal.
const pushedDir = "pgkeep/pushed"

func recordPath(walDir, name string) string { return filepath.Join(walDir, pushedDir, name) }

func formatRecord(s envelope.Sum) string { return fmt.Sprintf("%d %016x\n", s.Size, s.XXH64) }

// alreadyPushed reports whether a look-ahead record proves that data (the
// segment's current content) is in the repository. It removes the record.
func alreadyPushed(walDir, name string, data []byte) bool {
	p := recordPath(walDir, name)
	rec, err := os.ReadFile(p)
	if err != nil {
		return false
	}
	os.Remove(p)
	return string(rec) == formatRecord(envelope.SumOf(data))
}

// readySegments lists segments after name that PostgreSQL has marked ready
// for archiving, in order, at most n.
func readySegments(walDir, name string, n int) []string {
	entries, err := os.ReadDir(filepath.Join(walDir, "archive_status"))
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		seg, ok := strings.CutSuffix(e.Name(), ".ready")
		if !ok || seg <= name {
			continue
		}
		if k, err := wal.Classify(seg); err != nil || k != wal.KindSegment {
			continue
		}
		out = append(out, seg)
	}
	sort.Strings(out)
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// lookAhead uploads the given segments in parallel with workers and
// records each success. Failures are left for PostgreSQL's own call to
// retry and report.
func lookAhead(ctx context.Context, r *repo.Repo, walDir string, names []string, workers int) {
	if len(names) == 0 {
		return
	}
	os.MkdirAll(filepath.Join(walDir, pushedDir), 0o700)
	cleanStale(filepath.Join(walDir, pushedDir))
	next := make(chan string)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range next {
				data, err := os.ReadFile(filepath.Join(walDir, name))
				if err != nil {
					continue
				}
				if hdr, err := ParseSegmentHeader(data); err != nil || uint64(len(data)) != uint64(hdr.SegSize) {
					continue
				}
				res, err := r.PutObject(ctx, repo.WALKey(name), data)
				if err != nil {
					continue
				}
				tmp := recordPath(walDir, name) + ".tmp"
				if os.WriteFile(tmp, []byte(formatRecord(res.Sum)), 0o600) == nil {
					os.Rename(tmp, recordPath(walDir, name))
				}
			}
		}()
	}
	for _, n := range names {
		next <- n
	}
	close(next)
	wg.Wait()
}

// cleanStale removes records older than a day (segments PostgreSQL never
// asked about, after a crash or a timeline change).
func cleanStale(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > 24*time.Hour {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// AlreadyPushed reports whether a look-ahead upload already stored the
// segment at path with its current content (and consumes the record). It
// needs no repository: wal-push checks it before opening one.
func AlreadyPushed(path string) bool {
	name := filepath.Base(path)
	if k, err := wal.Classify(name); err != nil || k != wal.KindSegment {
		return false
	}
	if _, err := os.Stat(recordPath(filepath.Dir(path), name)); err != nil {
		return false
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	return alreadyPushed(filepath.Dir(path), name, data)
}

// lockFile is the look-ahead pusher's lock, inside pg_wal.
const lockFile = "pgkeep/ahead.lock"

// PushAhead is the background look-ahead pusher (pgkeep wal-push-ahead,
// started detached by wal-push): it uploads the segments PostgreSQL has
// marked ready after segment after, count at a time with workers in
// parallel, recording each durable upload, and goes on while new ones
// appear. Only one runs per pg_wal (a lock file); a second returns at once.
func PushAhead(ctx context.Context, r *repo.Repo, walDir, after string, count, workers int) error {
	if err := os.MkdirAll(filepath.Join(walDir, pushedDir), 0o700); err != nil {
		return err
	}
	lock, err := os.OpenFile(filepath.Join(walDir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return nil // another pusher is at work
	}
	if _, err := r.Identity(ctx); err != nil {
		return err
	}
	cleanStale(filepath.Join(walDir, pushedDir))
	for round := 0; round < 1000; round++ {
		var todo []string
		for _, n := range readySegments(walDir, after, count*4) {
			if _, err := os.Stat(recordPath(walDir, n)); err != nil {
				todo = append(todo, n)
			}
			if len(todo) == count {
				break
			}
		}
		if len(todo) == 0 {
			return nil
		}
		lookAhead(ctx, r, walDir, todo, workers)
		after = todo[len(todo)-1]
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// WaitPushed waits up to timeout for a running look-ahead pusher to record
// the segment at path, and reports whether it did (the record is consumed,
// as by AlreadyPushed). With no pusher running it returns false at once.
func WaitPushed(path string, timeout time.Duration) bool {
	walDir := filepath.Dir(path)
	deadline := time.Now().Add(timeout)
	for {
		if AlreadyPushed(path) {
			return true
		}
		if !pusherRunning(walDir) || time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func pusherRunning(walDir string) bool {
	lock, err := os.OpenFile(filepath.Join(walDir, lockFile), os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return true
	}
	syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	return false
}
