// Package walarchive moves WAL files between PostgreSQL and the repository:
// Push for archive_command, Fetch for restore_command.
package walarchive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/pgkeep/pgkeep/internal/pgcontrol"
	"github.com/pgkeep/pgkeep/internal/pgversion"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// ErrNotArchived means the requested WAL file is not in the repository.
// Fetch returns it only when the store positively said so.
var ErrNotArchived = errors.New("not in the archive")

// PushOptions configures Push.
type PushOptions struct {
	// PGData is the cluster's data directory, used to read pg_control when
	// the repository is created and to check history files. "" means: the
	// directory above pg_wal when path is inside one.
	PGData string
	// StartAhead, if set, is called when PostgreSQL has marked further
	// segments ready after this one; it starts the background look-ahead
	// pusher (see PushAhead).
	StartAhead func(walDir, after string)
	// IdentityCache, if set, is a file where the repository's identity
	// record is kept between calls (see cachedIdentity), so that a push
	// does not fetch it every time.
	IdentityCache string
	// NoSummary skips the WAL summary (summary.go).
	NoSummary bool
}

// PushResult describes an archived file.
type PushResult struct {
	Name    string
	Key     repo.Key
	Size    int64 // bytes of the WAL file
	Stored  int64 // bytes stored
	Existed bool  // it was already archived with identical content
	// SummaryErr is why the segment's WAL summary could not be stored (the
	// segment itself is archived; an incremental backup then reads more).
	SummaryErr error
}

// clusterInfo is what a push knows about the cluster that produced a file.
type clusterInfo struct {
	sysID   uint64
	major   int
	segSize uint64
	source  string // where it came from, for messages
}

// Push archives the WAL file at path: a segment, a .partial segment, a
// .backup history file or a .history timeline file. It returns only once
// the object is durably in the repository. An identical file already in the
// repository is success (Existed); different content under the same name is
// an error wrapping repo.ErrConflict and nothing is overwritten. A file from
// another cluster than the repository's is refused (repo.ErrForeignCluster).
func Push(ctx context.Context, r *repo.Repo, path string, opts PushOptions) (PushResult, error) {
	name := filepath.Base(path)
	kind, err := wal.Classify(name)
	if err != nil {
		return PushResult{}, fmt.Errorf("%s is not a WAL file PostgreSQL archives: %w", path, err)
	}
	walDir := filepath.Dir(path)
	f, err := os.Open(path)
	if err != nil {
		return PushResult{}, fmt.Errorf("reading WAL file: %w", err)
	}
	defer f.Close()
	// The repository's identity record: from the local cache when it is
	// fresh, else from the repository. A repository that does not exist
	// yet is created from this file's facts, before anything is encoded
	// (a repository it creates may encrypt).
	have, fromCache, err := cachedIdentity(ctx, r, opts.IdentityCache)
	if errors.Is(err, repo.ErrNoRepository) {
		head := make([]byte, headSize)
		n, _ := f.ReadAt(head, 0)
		st, serr := f.Stat()
		if serr != nil {
			return PushResult{}, fmt.Errorf("reading WAL file: %w", serr)
		}
		info, ierr := identify(kind, head[:n], st.Size(), path, opts.PGData)
		if ierr != nil {
			return PushResult{}, ierr
		}
		have, err = r.EnsureIdentity(ctx, repo.Identity{SystemIdentifier: info.sysID, PGMajor: info.major, WalSegSize: info.segSize})
		if err != nil && errors.Is(err, repo.ErrForeignCluster) {
			return PushResult{}, fmt.Errorf("refusing to archive %s (cluster identified by %s): %w", name, info.source, err)
		}
		if err == nil {
			cacheIdentity(opts.IdentityCache, have)
		}
	}
	if err != nil {
		return PushResult{}, fmt.Errorf("checking repository %s: %w", r.Location(), err)
	}
	if kind == wal.KindSegment && opts.StartAhead != nil && filepath.Base(walDir) == "pg_wal" {
		if names := readySegments(walDir, name, 1); len(names) > 0 {
			opts.StartAhead(walDir, name)
		}
	}
	// Timeline history files stay readable without the key (they hold
	// timeline numbers and switch points: what status and expire follow),
	// like the other metadata of docs/design.md §10.
	ci := r.Cipher()
	if kind == wal.KindTimelineHistory {
		ci = nil
	}
	// One read of the file: the envelope, its head for the checks, and
	// for a segment the summary of the blocks its records touch.
	var sum *segmentSummary
	var tee io.Writer
	if kind == wal.KindSegment && !opts.NoSummary {
		if sum = newSegmentSummary(name, have); sum != nil {
			tee = sum
		}
	}
	enc, err := encodeOpen(f, r.WALCompression(), ci, tee)
	if err != nil {
		return PushResult{}, err
	}
	defer enc.release()
	info, err := identify(kind, enc.head, enc.sum.Size, path, opts.PGData)
	if err != nil {
		return PushResult{}, err
	}
	facts := repo.Identity{SystemIdentifier: info.sysID, PGMajor: info.major, WalSegSize: info.segSize}
	if err := have.Matches(facts); err != nil {
		// A cached record never decides a refusal: the repository's own
		// record does (it may have been repaired since).
		if fromCache {
			forgetIdentity(opts.IdentityCache)
			if have, err = r.Identity(ctx); err != nil {
				return PushResult{}, fmt.Errorf("checking repository %s: %w", r.Location(), err)
			}
			err = have.Matches(facts)
		}
		if err != nil {
			return PushResult{}, fmt.Errorf("refusing to archive %s (cluster identified by %s): %w", name, info.source, err)
		}
		cacheIdentity(opts.IdentityCache, have)
	}
	key := repo.WAL(name)
	if kind == wal.KindSegment || kind == wal.KindPartial {
		// After promotion, the archiver runs: the restore prefetch spool
		// is no longer needed.
		removePrefetchSpool(filepath.Dir(walDir))
	}
	res, err := r.PutEncodedAt(ctx, key, enc.buf, enc.buf.Len(), enc.sum)
	if err != nil {
		if errors.Is(err, repo.ErrConflict) {
			return PushResult{}, fmt.Errorf("refusing to archive %s: %w", name, err)
		}
		return PushResult{}, fmt.Errorf("archiving %s: %w", name, err)
	}
	out := PushResult{Name: name, Key: key, Size: enc.sum.Size, Stored: res.Stored, Existed: res.Existed}
	if sum != nil {
		out.SummaryErr = storeSummary(ctx, r, name, sum)
	}
	return out, nil
}

// identify works out which cluster produced a WAL file. Segments carry
// their system identifier and size in the first page's long header; for
// history files, and to learn the major version, pg_control is read.
// head is the file's start, size its length.
func identify(kind wal.Kind, head []byte, size int64, path, pgdata string) (clusterInfo, error) {
	if pgdata == "" {
		if dir := filepath.Dir(path); filepath.Base(dir) == "pg_wal" {
			pgdata = filepath.Dir(dir)
		}
	}
	if kind == wal.KindSegment || kind == wal.KindPartial {
		hdr, err := wal.ParseSegmentHeader(head)
		if err != nil {
			return clusterInfo{}, fmt.Errorf("%s: %w", path, err)
		}
		if kind == wal.KindSegment && uint64(size) != uint64(hdr.SegSize) {
			return clusterInfo{}, fmt.Errorf("%s is %d bytes but its header says segments are %d bytes; is it being written?", path, size, hdr.SegSize)
		}
		// A recycled segment file keeps the content of the segment it was
		// (PostgreSQL renames old segments to future names): stored under
		// this name, it would stand in for the real segment, whose push
		// then conflicts with it.
		name := filepath.Base(path)
		if seg, err := wal.ParseSegmentName(name[:24], uint64(hdr.SegSize)); err == nil {
			if want := wal.SegmentStartLSN(seg.No, uint64(hdr.SegSize)); hdr.PageAddr != want {
				return clusterInfo{}, fmt.Errorf("refusing to archive %s: its first page is of WAL at %s, not of this segment (%s): a recycled or misnamed file, not a segment PostgreSQL finished", name, hdr.PageAddr, want)
			}
		}
		// The page magic names the major that wrote the segment.
		return clusterInfo{sysID: hdr.SysID, major: hdr.Major, segSize: uint64(hdr.SegSize), source: "the segment's page header"}, nil
	}
	// History files carry nothing about their cluster: pg_control says.
	var ctl *pgcontrol.ControlFile
	ctlErr := errors.New("no data directory known (set PGDATA or --pgdata)")
	if pgdata != "" {
		ctl, ctlErr = pgcontrol.ReadFile(pgdata)
	}
	if errors.Is(ctlErr, pgversion.ErrUnsupported) {
		return clusterInfo{}, fmt.Errorf("refusing to archive %s: %w", filepath.Base(path), ctlErr)
	}
	if ctl == nil {
		return clusterInfo{}, fmt.Errorf("cannot tell which cluster %s belongs to: reading pg_control: %w", filepath.Base(path), ctlErr)
	}
	major, err := ctl.MajorVersion()
	if err != nil {
		return clusterInfo{}, fmt.Errorf("reading pg_control in %s: %w", pgdata, err)
	}
	return clusterInfo{sysID: ctl.SystemIdentifier, major: major, segSize: uint64(ctl.WalSegSize),
		source: "pg_control in " + pgdata}, nil
}

// FetchOptions configures Fetch.
type FetchOptions struct {
	// StartPrefetch, if set, is called after a segment was served, to
	// start a background prefetch of the segments after it.
	StartPrefetch func(pgdata, served string)
}

// Fetch restores the archived WAL file name into dest, for restore_command.
// It writes dest only with verified content, atomically (a temporary file
// renamed into place). If the repository positively does not have the file
// and it lies at the end of the archive, it returns an error wrapping
// ErrNotArchived; a segment missing while later WAL that recovery would
// replay is there is a gap (ErrGap). Every other failure (unreachable
// storage, no repository at that location, corruption) is a different
// error too, because PostgreSQL takes "not found" as the end of the archive.
//
// open is called only when the segment is not in the prefetch spool: a
// spooled segment costs no storage client.
func Fetch(ctx context.Context, open func() (*repo.Repo, error), name, dest string, opts FetchOptions) error {
	kind, err := wal.Classify(name)
	if err != nil {
		return fmt.Errorf("%q is not a WAL file name: %w", name, err)
	}
	if fetchSpooled(kind, name, dest, opts) {
		return nil
	}
	spool := ""
	if kind == wal.KindSegment {
		spool = SpoolDir(dest)
	}
	r, err := open()
	if err != nil {
		return err
	}
	id, err := r.Identity(ctx)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", name, err)
	}
	fetch := fetchInto
	if kind == wal.KindSegment {
		fetch = fetchOrGap
	}
	if err := fetch(ctx, r, name, dest, id.WalSegSize); err != nil {
		return err
	}
	if spool != "" {
		served(spool, name, opts)
	}
	return nil
}

// served is what follows serving segment name from the spool or the
// repository: the spool forgets what recovery went past and records name
// for the prefetcher, which is started unless one is running.
func served(spool, name string, opts FetchOptions) {
	pruneSpool(spool, name)
	os.MkdirAll(spool, 0o700)
	noteServed(spool, name)
	if opts.StartPrefetch != nil && !PrefetcherRunning(filepath.Dir(spool)) {
		opts.StartPrefetch(filepath.Dir(spool), name)
	}
}

// fetchSpooled serves a segment the prefetcher has already downloaded and
// verified, moving it from the spool to dest, and starts the next
// prefetch. It reports false when the spool does not have it (or name is
// not a segment, or dest is not in a pg_wal directory).
func fetchSpooled(kind wal.Kind, name, dest string, opts FetchOptions) bool {
	if kind != wal.KindSegment {
		return false
	}
	spool := SpoolDir(dest)
	if !takeSpooled(spool, name, dest) {
		return false
	}
	served(spool, name, opts)
	return true
}

// fetchInto downloads, verifies and atomically writes one WAL file.
func fetchInto(ctx context.Context, r *repo.Repo, name, dest string, segSize uint64) error {
	kind, _ := wal.Classify(name)
	tmp := dest + ".pgkeep-partial"
	err := r.ReadObject(ctx, repo.WAL(name), func(rd io.Reader) error {
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("creating %s: %w", tmp, err)
		}
		_, cerr := io.Copy(f, rd)
		if err := f.Close(); cerr == nil && err != nil {
			cerr = fmt.Errorf("writing %s: %w", tmp, err)
		}
		return cerr
	}, nil)
	if err != nil {
		os.Remove(tmp)
		if errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("%s: %w", name, ErrNotArchived)
		}
		return fmt.Errorf("fetching %s: %w", name, err)
	}
	if kind == wal.KindSegment {
		st, err := os.Stat(tmp)
		if err != nil {
			os.Remove(tmp)
			return err
		}
		if uint64(st.Size()) != segSize {
			os.Remove(tmp)
			return fmt.Errorf("fetching %s: archived segment is %d bytes, the repository's segment size is %d", name, st.Size(), segSize)
		}
	}
	if err := os.Rename(tmp, dest); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("fetching %s: %w", name, err)
	}
	return nil
}

// removePrefetchSpool removes the wal-fetch prefetch spool
// (PGDATA/pgkeep_prefetch): once a cluster archives, it has been promoted
// and the spool is stale.
func removePrefetchSpool(pgdata string) {
	_, spoolErr := os.Lstat(filepath.Join(pgdata, PrefetchDir))
	_, markErr := os.Lstat(filepath.Join(pgdata, ArchiveEndMarker))
	if spoolErr == nil || markErr == nil {
		CleanSpool(pgdata)
	}
}

// PrefetchDir is the wal-fetch prefetch spool, relative to PGDATA.
const PrefetchDir = "pgkeep_prefetch"
