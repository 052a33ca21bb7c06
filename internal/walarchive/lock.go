package walarchive

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// The background helpers (the look-ahead pusher, the prefetcher) run one
// at a time per directory, under a lock file. The lock is flock(2) on the
// file, so it goes away with the process however it ends; the file holds
// the holder's pid, so that whoever started the helpers (a benchmark, a
// test) can stop exactly those (LockHolder).

// lock is a held lock file.
type lock struct{ f *os.File }

// tryLock takes the lock file at path without waiting. ok is false when
// another process holds it.
func tryLock(path string) (l *lock, ok bool, err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("opening lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, false, nil
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &lock{f: f}, true, nil
}

// release gives the lock up.
func (l *lock) release() { l.f.Close() }

// lockHeld reports whether some process holds the lock file at path.
func lockHeld(path string) bool {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return true
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// LockHolder returns the pid of the process holding the lock file at path
// (0 when none holds it).
func LockHolder(path string) int {
	if !lockHeld(path) {
		return 0
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

// PusherLock and PrefetchLock are the lock files of the background
// helpers: the look-ahead pusher's in pg_wal, the prefetcher's in the
// data directory's spool.
func PusherLock(walDir string) string   { return walDir + "/" + lockFile }
func PrefetchLock(pgdata string) string { return pgdata + "/" + PrefetchDir + "/.lock" }
