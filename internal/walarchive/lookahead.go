package walarchive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/sync/errgroup"

	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// Look-ahead archiving. PostgreSQL runs archive_command for one segment at
// a time, so a backlog drains at the speed of one upload after another.
// When wal-push is asked for segment S and PostgreSQL has already marked
// later segments ready (pg_wal/archive_status/*.ready), it starts a
// detached pusher (pgkeep wal-push-ahead) that uploads them, in order and
// in parallel, while PostgreSQL is still busy with S. After each durable
// upload the pusher writes a record, pg_wal/pgkeep/pushed/NAME, holding the
// identity of the file it read (device, inode, size, modification and
// change times), the content's checksum and a tag of the repository. When
// PostgreSQL then asks for one of those segments, wal-push compares its
// repository's tag and the file's identity with the record (one stat, no
// read) and answers success at once. PostgreSQL thus
// still hears "archived" only for content that is durably in the
// repository: a file written, replaced or renamed after the upload has
// another identity, and is pushed again from scratch.

// pushedDir is where look-ahead records live, inside pg_wal.
const pushedDir = "pgkeep/pushed"

// recordVersion starts every record; records of other versions are
// ignored (the segment is pushed again, which is always safe).
const recordVersion = "pgkeep-pushed-3"

// skipRecord marks a segment the pusher could not upload: wal-push stops
// waiting and pushes it itself, reporting the error.
const skipRecord = "pgkeep-skip\n"

func recordPath(walDir, name string) string { return filepath.Join(walDir, pushedDir, name) }

// RepoTag names a repository in look-ahead records, so that a record made
// while archiving to one repository never vouches for a push to another
// (after archive_command is pointed elsewhere, say). repo is the
// repository's URL and anything else that tells repositories apart (the
// S3 endpoint).
func RepoTag(repo string) string { return fmt.Sprintf("%016x", xxhash.Sum64String(repo)) }

func formatRecord(tag string, id fileID, xxh uint64) string {
	return fmt.Sprintf("%s %s %d %d %d %d %d %016x\n", recordVersion, tag, id.Dev, id.Ino, id.Size, id.MTime, id.CTime, xxh)
}

// writeRecord writes a record atomically (the record itself need not be
// durable: a lost record only means the segment is pushed again).
func writeRecord(walDir, name, content string) {
	p := recordPath(walDir, name)
	tmp := p + ".tmp"
	if os.WriteFile(tmp, []byte(content), 0o600) == nil {
		if os.Rename(tmp, p) != nil {
			os.Remove(tmp)
		}
	}
}

// checkRecord reads the record of the segment at path. It reports pushed
// when the record proves the file's current version is in the repository
// tag names, skipped when the pusher gave up on it; either way the record
// is consumed.
func checkRecord(path, tag string) (pushed, skipped bool) {
	walDir, name := filepath.Dir(path), filepath.Base(path)
	p := recordPath(walDir, name)
	rec, err := os.ReadFile(p)
	if err != nil {
		return false, false
	}
	if string(rec) == skipRecord {
		os.Remove(p)
		return false, true
	}
	if !strings.HasPrefix(string(rec), recordVersion+" ") {
		os.Remove(p)
		return false, false
	}
	fi, err := os.Stat(path)
	if err != nil {
		return false, false
	}
	id, ok := idOf(fi)
	os.Remove(p)
	if !ok {
		return false, false
	}
	var want fileID
	var recTag string
	var xxh uint64
	if _, err := fmt.Sscanf(string(rec), recordVersion+" %s %d %d %d %d %d %x\n", &recTag, &want.Dev, &want.Ino, &want.Size, &want.MTime, &want.CTime, &xxh); err != nil {
		return false, false
	}
	return recTag == tag && want == id, false
}

// WaitPushed reports whether a look-ahead upload stored the segment at path
// as it is now in the repository tag names (see RepoTag), waiting up to
// timeout for a running pusher that may still have it in hand; the record
// is consumed either way. With no pusher running, or when the pusher gave
// up on the segment, it returns at once. It needs no repository: wal-push
// asks it before opening one.
func WaitPushed(path, tag string, timeout time.Duration) bool {
	name := filepath.Base(path)
	if k, err := wal.Classify(name); err != nil || k != wal.KindSegment {
		return false
	}
	walDir := filepath.Dir(path)
	deadline := time.Now().Add(timeout)
	for {
		pushed, skipped := checkRecord(path, tag)
		if pushed {
			return true
		}
		if skipped || !pusherRunning(walDir) || time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
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

// cleanStale removes records older than a day (segments PostgreSQL never
// asked about, after a crash or a timeline change) and leftover temporary
// files.
func cleanStale(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && (time.Since(info.ModTime()) > 24*time.Hour ||
			strings.HasSuffix(e.Name(), ".tmp") && time.Since(info.ModTime()) > time.Minute) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// lockFile is the look-ahead pusher's lock, inside pg_wal.
const lockFile = "pgkeep/ahead.lock"

// aheadIdle is how long the pusher waits for new ready segments before it
// exits; the next wal-push that sees a backlog starts another.
const aheadIdle = time.Second

// PushAhead is the background look-ahead pusher (pgkeep wal-push-ahead,
// started detached by wal-push): it uploads the segments PostgreSQL has
// marked ready after segment after, in order, with workers in parallel,
// recording each durable upload, and goes on while new ones appear. Only
// one runs per pg_wal (a lock file); a second returns at once. Segments it
// cannot upload (another cluster's, unreadable, a storage error) get a skip
// record: PostgreSQL's own wal-push call then pushes them and reports why.
//
// tag names the repository in the records (see RepoTag).
func PushAhead(ctx context.Context, r *repo.Repo, tag, walDir, after string, workers int) error {
	if err := os.MkdirAll(filepath.Join(walDir, pushedDir), 0o700); err != nil {
		return err
	}
	l, ok, err := tryLock(PusherLock(walDir))
	if err != nil || !ok {
		return err // !ok: another pusher is at work
	}
	defer l.release()
	id, err := r.Identity(ctx)
	if err != nil {
		return err
	}
	cleanStale(filepath.Join(walDir, pushedDir))

	// Uploads run workers at a time; Go blocks while all are busy.
	var g errgroup.Group
	g.SetLimit(max(workers, 1))
	defer g.Wait()
	queued := map[string]bool{}
	idleSince := time.Now()
	for ctx.Err() == nil {
		var todo []string
		for _, n := range readySegments(walDir, after, 256) {
			if queued[n] {
				continue
			}
			if _, err := os.Stat(recordPath(walDir, n)); err == nil {
				continue
			}
			todo = append(todo, n)
		}
		if len(todo) == 0 {
			if time.Since(idleSince) > aheadIdle {
				return nil
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		after = todo[len(todo)-1]
		for _, n := range todo {
			queued[n] = true
			if ctx.Err() != nil {
				return ctx.Err()
			}
			g.Go(func() error {
				if err := pushAheadOne(ctx, r, id, tag, walDir, n); err != nil {
					writeRecord(walDir, n, skipRecord)
				}
				return nil
			})
		}
		idleSince = time.Now()
	}
	return ctx.Err()
}

// pushAheadOne uploads one ready segment and records it.
func pushAheadOne(ctx context.Context, r *repo.Repo, id *repo.Identity, tag, walDir, name string) error {
	path := filepath.Join(walDir, name)
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sum := newSegmentSummary(name, id)
	var tee io.Writer
	if sum != nil {
		tee = sum
	}
	enc, err := encodeOpen(f, r.WALCompression(), r.Cipher(), tee)
	if err != nil {
		return err
	}
	defer enc.release()
	hdr, err := wal.ParseSegmentHeader(enc.head)
	switch {
	case err != nil:
		return err
	case hdr.SysID != id.SystemIdentifier || uint64(hdr.SegSize) != id.WalSegSize || uint64(enc.sum.Size) != id.WalSegSize ||
		(id.PGMajor != 0 && hdr.Major != id.PGMajor):
		return errors.New("not a whole segment of the repository's cluster")
	case enc.id == fileID{}:
		return errors.New("file identity unknown")
	}
	if _, err := r.PutEncodedAt(ctx, repo.WAL(name), enc.buf, enc.buf.Len(), enc.sum); err != nil {
		return err
	}
	if sum != nil {
		storeSummary(ctx, r, name, sum) // best effort, as in Push
	}
	writeRecord(walDir, name, formatRecord(tag, enc.id, enc.sum.XXH64))
	return nil
}

func pusherRunning(walDir string) bool { return lockHeld(PusherLock(walDir)) }
