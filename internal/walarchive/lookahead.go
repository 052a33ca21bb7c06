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
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"

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
	began := time.Now()
	deadline := began.Add(timeout)
	for {
		pushed, skipped := checkRecord(path, tag)
		if pushed {
			return true
		}
		if skipped || markedDone(path) || !pusherRunning(walDir) || time.Now().After(deadline) {
			return false
		}
		// Every 2 ms at first; a call the pusher puts off (see
		// PushAhead) waits longer, and wakes less often.
		if time.Since(began) < 200*time.Millisecond {
			time.Sleep(2 * time.Millisecond)
		} else {
			time.Sleep(10 * time.Millisecond)
		}
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
//
// With mark set, the pusher marks segments it stored archived itself (see
// markArchived); with nil, every segment waits for PostgreSQL's own call.
func PushAhead(ctx context.Context, r *repo.Repo, tag, walDir, after string, workers int, mark *Marking) error {
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

	// Uploads run workers at a time, oldest segment first. While the
	// pusher may mark segments archived, it holds back its answer to the
	// call PostgreSQL's archiver is waiting on (the record of that
	// segment, stored by then) for up to holdAnswer, or until nothing else
	// is pending: every segment stored meanwhile is marked and needs no
	// call of its own, where answering at once would have the archiver
	// start the next call right away, for the next segment in hand.
	sem := make(chan struct{}, max(workers, 1))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var held *heldAnswer
	release := func(force bool) {
		mu.Lock()
		defer mu.Unlock()
		if held != nil && (force || time.Since(held.since) >= holdAnswer) {
			writeRecord(walDir, held.name, held.record)
			held = nil
		}
	}
	defer func() {
		wg.Wait()
		release(true)
	}()
	queued := map[string]bool{}
	var pending []string
	idleSince := time.Now()
	for ctx.Err() == nil {
		for _, n := range readySegments(walDir, after, 256) {
			after = n
			if queued[n] {
				continue
			}
			if _, err := os.Stat(recordPath(walDir, n)); err == nil {
				continue
			}
			queued[n] = true
			pending = append(pending, n)
		}
		release(len(pending) == 0)
		if len(pending) == 0 {
			if time.Since(idleSince) > aheadIdle {
				return nil
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		n := pending[0]
		pending = pending[1:]
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			fid, record, err := pushAheadOne(ctx, r, id, walDir, n, tag)
			if err != nil {
				writeRecord(walDir, n, skipRecord)
				return
			}
			if mark == nil || !mark.Allowed(ctx) {
				writeRecord(walDir, n, record)
				return
			}
			// The archiver's title and archive_status are read last,
			// after Allowed (which may ask the server), to keep the window
			// before the rename short.
			busy := mark.archiving()
			if n == busy {
				mu.Lock()
				if held != nil {
					writeRecord(walDir, held.name, held.record)
				}
				held = &heldAnswer{name: n, record: record, since: time.Now()}
				mu.Unlock()
				return
			}
			writeRecord(walDir, n, record)
			if markable(walDir, n, busy) {
				markArchived(walDir, n, fid)
			}
		}()
		idleSince = time.Now()
	}
	return ctx.Err()
}

// heldAnswer is a record the pusher holds back (see PushAhead).
type heldAnswer struct {
	name, record string
	since        time.Time
}

// holdAnswer bounds how long the pusher holds back the answer to the call
// the archiver is waiting on, well within the 5 s wal-push waits for a
// pusher.
const holdAnswer = 2 * time.Second

// pushAheadOne uploads one ready segment; it returns the identity of the
// file it read and the record to write for it.
func pushAheadOne(ctx context.Context, r *repo.Repo, id *repo.Identity, walDir, name, tag string) (fileID, string, error) {
	path := filepath.Join(walDir, name)
	f, err := os.Open(path)
	if err != nil {
		return fileID{}, "", err
	}
	defer f.Close()
	sum := newSegmentSummary(name, id)
	var tee io.Writer
	if sum != nil {
		tee = sum
	}
	enc, err := encodeOpen(f, r.WALCompression(), r.Cipher(), tee)
	if err != nil {
		return fileID{}, "", err
	}
	defer enc.release()
	hdr, err := wal.ParseSegmentHeader(enc.head)
	switch {
	case err != nil:
		return fileID{}, "", err
	case hdr.SysID != id.SystemIdentifier || uint64(hdr.SegSize) != id.WalSegSize || uint64(enc.sum.Size) != id.WalSegSize ||
		(id.PGMajor != 0 && hdr.Major != id.PGMajor):
		return fileID{}, "", errors.New("not a whole segment of the repository's cluster")
	case enc.id == fileID{}:
		return fileID{}, "", errors.New("file identity unknown")
	}
	if _, err := r.PutEncodedAt(ctx, repo.WAL(name), enc.buf, enc.buf.Len(), enc.sum); err != nil {
		return fileID{}, "", err
	}
	if sum != nil {
		storeSummary(ctx, r, name, sum) // best effort, as in Push
	}
	return enc.id, formatRecord(tag, enc.id, enc.sum.XXH64), nil
}

// Marking segments archived. PostgreSQL starts archive_command for one
// ready segment at a time, and each wal-push call costs a process start
// even when the pusher has stored the segment already (on the slower
// machines of this project, more than half of what the pusher itself
// spends on a segment). So when archive_command is pgkeep wal-push alone
// (Marking.Allowed), the pusher does for a segment it stored what the archiver
// does after a successful call: it renames archive_status/NAME.ready to
// NAME.done, and PostgreSQL skips it (its archiver checks that a ready
// file is still there before it starts the command, since PostgreSQL 15
// explicitly for this case; earlier versions scan the directory for each
// file). Two segments are never marked:
//
//   - the segment the archiver is archiving, which its process title
//     names ("postgres: archiver archiving NAME"); when the title does not
//     say (between two calls, or with update_process_title off), the
//     oldest ready segment, which the archiver may be picking: that call
//     waits for the pusher's record, as without marking;
//   - the newest, so that the archiver archives the last segment of a
//     backlog itself and pg_stat_archiver's last_archived_wal reaches it
//     (monitoring and scripts wait for it); archived_count counts only
//     the segments PostgreSQL archived itself.
//
// If the archiver nevertheless picked the segment a moment before the
// rename, its call finds no record (markArchived removes it) but the
// segment marked done, stops waiting, and pushes it itself: the archived
// copy is identical, so that succeeds; PostgreSQL then logs a warning that
// the ready file was gone.

// markedDone reports whether the segment at path is marked archived
// (NAME.done, no NAME.ready): no record will come for it, so a call that
// waits for one stops. That is not proof of anything in the call's own
// repository (a wal-push run by hand may name another): the call pushes
// the segment itself.
func markedDone(path string) bool {
	status := filepath.Join(filepath.Dir(path), "archive_status", filepath.Base(path))
	if _, err := os.Stat(status + ".ready"); !errors.Is(err, os.ErrNotExist) {
		return false
	}
	_, err := os.Stat(status + ".done")
	return err == nil
}

// Marking is what lets the look-ahead pusher mark segments archived.
type Marking struct {
	// Allowed reports whether marking is allowed now: it must report
	// true only while PostgreSQL's archive_command is pgkeep wal-push
	// alone, for the pusher's repository. Calls are serialised.
	Allowed func(context.Context) bool
	// ArchiverPID is PostgreSQL's archiver (0: unknown); its process title
	// tells which file it is archiving.
	ArchiverPID int
}

// archiving is the file the archiver's process title says it is
// archiving, "" when it does not say.
func (m *Marking) archiving() string {
	if m.ArchiverPID <= 0 {
		return ""
	}
	title, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", m.ArchiverPID))
	if err != nil {
		return ""
	}
	return archivingIn(string(title))
}

// archivingIn reads the file name out of an archiver's process title
// ("postgres: archiver archiving NAME", possibly with the cluster name
// after "postgres:", and padded with NULs or blanks); "" if it names none.
func archivingIn(title string) string {
	if !strings.HasPrefix(title, "postgres:") {
		return ""
	}
	_, rest, ok := strings.Cut(title, " archiver ")
	if !ok {
		return ""
	}
	// PostgreSQL 12 pads the process's name with blanks.
	if rest, ok = strings.CutPrefix(strings.TrimLeft(rest, " "), "archiving "); !ok {
		return ""
	}
	if i := strings.IndexAny(rest, "\x00 "); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// markable reports whether name is a ready segment that is neither the
// newest one nor busy, the file the archiver is archiving; with busy
// unknown (""), not the oldest ready segment either.
func markable(walDir, name, busy string) bool {
	if name == busy {
		return false
	}
	entries, err := os.ReadDir(filepath.Join(walDir, "archive_status"))
	if err != nil {
		return false
	}
	var ready, lower, higher bool
	for _, e := range entries {
		seg, ok := strings.CutSuffix(e.Name(), ".ready")
		if !ok {
			continue
		}
		if k, err := wal.Classify(seg); err != nil || k != wal.KindSegment {
			continue
		}
		switch {
		case seg == name:
			ready = true
		case seg < name:
			lower = true
		default:
			higher = true
		}
	}
	return ready && higher && (lower || busy != "")
}

// markArchived renames the ready file of the segment the pusher stored to
// .done, if the segment file is still the one it read (id), and removes
// its record, which no call will consume. Nothing is lost if the rename
// does not survive a crash: PostgreSQL archives the segment again.
func markArchived(walDir, name string, id fileID) bool {
	fi, err := os.Stat(filepath.Join(walDir, name))
	if err != nil {
		return false
	}
	if now, ok := idOf(fi); !ok || now != id {
		return false
	}
	status := filepath.Join(walDir, "archive_status", name)
	if os.Rename(status+".ready", status+".done") != nil {
		return false
	}
	os.Remove(recordPath(walDir, name))
	return true
}

func pusherRunning(walDir string) bool { return lockHeld(PusherLock(walDir)) }
