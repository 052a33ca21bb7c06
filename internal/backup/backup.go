// Package backup takes base backups of a running PostgreSQL cluster into a
// repository: backup start in one held session, a parallel copy of the data
// directory and tablespaces, backup stop, a wait until the WAL the backup
// needs is archived and verified, and only then the completion record.
package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/pgcontrol"
	"github.com/pgkeep/pgkeep/internal/pgpage"
	"github.com/pgkeep/pgkeep/internal/pgstat"
	"github.com/pgkeep/pgkeep/internal/progress"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/units"
	"github.com/pgkeep/pgkeep/internal/wal"
	"github.com/pgkeep/pgkeep/internal/walarchive"
)

// Options configures a backup.
type Options struct {
	// ConnString is a libpq connection string; "" uses the standard libpq
	// environment (PGHOST, PGPORT, PGUSER, PGDATABASE...).
	ConnString string
	// PGData is the data directory; "" asks the server (data_directory).
	PGData string
	// Workers read, compress and upload in parallel (at least 1).
	Workers int
	// Label is stored with the backup; "" makes one.
	Label string
	// WALTimeout bounds the wait for the backup's WAL to be archived.
	WALTimeout time.Duration
	// ObjectSize is the content size of data objects (default 16 MiB).
	ObjectSize int64
	// Progress receives progress; nil means none.
	Progress progress.Reporter
	// Now returns the current time (tests); nil means time.Now.
	Now func() time.Time
	// Type is TypeFull, TypeIncremental or TypeAuto ("" means auto). An
	// incremental backup asked for where none can be taken (no earlier
	// backup, another timeline) is a full one, with the reason logged.
	Type string
	// MaxChain bounds how many incremental backups an auto backup stacks
	// on a full one (default DefaultMaxChain; negative: none).
	MaxChain int
	// FullEvery is the age of the newest full backup from which an auto
	// backup is a full one (default DefaultFullEvery).
	FullEvery time.Duration
}

const (
	defaultObjectSize = 16 << 20
	pageSize          = 8192
)

// Result describes a finished backup.
type Result struct {
	Manifest *catalog.Manifest
	// ChecksumFailures lists pages whose checksum did not verify, as
	// "path block N: reason". The backup is still complete: the pages are
	// stored as they are on disk.
	ChecksumFailures []string
	// Warnings are things the operator should fix (an archive_timeout
	// that leaves the RPO unbounded, say); the backup is still complete.
	Warnings []string
}

// ErrNotArchiving means the server does not archive WAL, so a backup could
// never become restorable.
var ErrNotArchiving = errors.New("WAL archiving is not enabled")

// ErrArchiverFailing means PostgreSQL's archiver keeps failing, so the WAL a
// backup needs does not reach the repository.
var ErrArchiverFailing = errors.New("WAL archiving is failing")

// Run takes a base backup into r.
func Run(ctx context.Context, r *repo.Repo, opts Options) (*Result, error) {
	if opts.Workers < 1 {
		opts.Workers = 1
	}
	if opts.ObjectSize <= 0 {
		opts.ObjectSize = defaultObjectSize
	}
	// Pieces of relation files start at chunk boundaries.
	opts.ObjectSize = (opts.ObjectSize + catalog.ChunkSize - 1) / catalog.ChunkSize * catalog.ChunkSize
	switch opts.Type {
	case "":
		opts.Type = TypeAuto
	case TypeAuto, TypeFull, TypeIncremental:
	default:
		return nil, fmt.Errorf("unknown backup type %q: use full, incremental or auto", opts.Type)
	}
	if opts.MaxChain == 0 {
		opts.MaxChain = DefaultMaxChain
	}
	if opts.FullEvery <= 0 {
		opts.FullEvery = DefaultFullEvery
	}
	if opts.WALTimeout <= 0 {
		opts.WALTimeout = 5 * time.Minute
	}
	if opts.Progress == nil {
		opts.Progress = progress.Nop{}
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	rep := opts.Progress

	// The newest backup, a parent candidate, is read while the server is
	// inspected.
	type newestBackup struct {
		m   *catalog.Manifest
		err error
	}
	newest := make(chan newestBackup, 1)
	if opts.Type != TypeFull {
		go func() {
			m, err := catalog.Newest(ctx, r)
			newest <- newestBackup{m, err}
		}()
	}

	conn, err := pgx.Connect(ctx, opts.ConnString)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL (set PGHOST, PGPORT, PGUSER): %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	srv, err := inspectServer(ctx, conn)
	if err != nil {
		return nil, err
	}
	pgdata := opts.PGData
	if pgdata == "" {
		pgdata = srv.dataDirectory
	}
	if err := checkDataDir(pgdata, srv); err != nil {
		return nil, err
	}
	// A failing archiver stalls all archiving behind the file it fails on,
	// so the WAL this backup needs could never arrive: say so before
	// writing anything.
	arch, err := pgstat.Read(ctx, conn, pgdata)
	if err != nil {
		return nil, err
	}
	if arch.Failing() {
		return nil, fmt.Errorf("%w: %s; fix archiving first (pgkeep status shows it too)", ErrArchiverFailing, arch.FailureText())
	}
	var warnings []string
	if w := arch.RPOWarning(0); w != "" {
		warnings = append(warnings, w)
		rep.Logf("WARNING: %s", w)
	}
	if _, err := r.EnsureIdentity(ctx, repo.Identity{SystemIdentifier: srv.systemID, PGMajor: srv.major, WalSegSize: srv.walSegSize}); err != nil {
		return nil, fmt.Errorf("checking repository %s: %w", r.Location(), err)
	}

	var parent *catalog.Manifest
	if opts.Type != TypeFull {
		nw := <-newest
		var why string
		switch {
		case errors.Is(nw.err, envelope.ErrCorrupt):
			// A damaged backup must not stop the next one: it is a full
			// one, and verify names the damage.
			why = fmt.Sprintf("the newest backup's manifest is damaged (%v); run pgkeep verify", nw.err)
			rep.Logf("WARNING: %s", why)
			warnings = append(warnings, why)
		case nw.err != nil:
			return nil, fmt.Errorf("reading the repository's newest backup: %w", nw.err)
		default:
			parent, why = chooseParent(nw.m, opts.Type, opts.MaxChain, opts.FullEvery, srv.timeline, now())
		}
		if parent == nil {
			rep.Logf("taking a full backup: %s", why)
			if opts.Type == TypeIncremental {
				warnings = append(warnings, "an incremental backup was asked for, but "+why+": this one is a full backup")
			}
		}
	}
	var geo geometry
	if parent != nil {
		ctl, err := pgcontrol.ReadFile(pgdata)
		if err != nil {
			return nil, fmt.Errorf("reading pg_control for the page layout: %w", err)
		}
		geo = geometry{blockSize: int64(ctl.BlockSize), relSegBlocks: ctl.RelSegSize}
	}

	startTime := now().UTC()
	id := catalog.NewID(startTime)
	// Ids are seconds apart; wait out a collision with a backup that
	// started in the same second.
	for {
		if taken, err := r.Exists(ctx, repo.Started(id)); err == nil && !taken {
			break
		} else if err != nil {
			return nil, fmt.Errorf("checking backup id: %w", err)
		}
		time.Sleep(time.Second)
		startTime = now().UTC()
		id = catalog.NewID(startTime)
	}
	label := opts.Label
	if label == "" {
		label = "pgkeep backup " + id
	}

	rep.Logf("backup %s: starting (checkpoint)", id)
	startLSN, err := srv.startBackup(ctx, conn, label)
	if err != nil {
		return nil, err
	}
	stopped := false
	defer func() {
		if !stopped {
			// Ending the session aborts a non-exclusive backup; say so
			// explicitly where we still can.
			srv.abortBackup(context.WithoutCancel(ctx), conn)
		}
	}()
	host, _ := os.Hostname()
	started := catalog.Started{ID: id, StartTime: startTime, StartLSN: startLSN.String(), Timeline: srv.timeline}
	if parent != nil {
		started.Parent = parent.ID
	}
	if err := catalog.WriteStarted(ctx, r, started); err != nil {
		return nil, fmt.Errorf("recording backup start: %w", err)
	}
	if parent != nil {
		rep.Logf("backup %s: started at LSN %s, incremental on %s (chain %d)", id, startLSN, parent.ID, parent.Chain+1)
	} else {
		rep.Logf("backup %s: started at LSN %s", id, startLSN)
	}

	// What changed since the parent is read while the data directory is
	// walked.
	changed := make(chan changes, 1)
	if parent != nil {
		go func() {
			var c changes
			c.sum, c.why, c.err = loadChanges(ctx, r, pgdata, srv.timeline, parent.Start(), startLSN, srv.walSegSize, srv.major, opts.Workers)
			changed <- c
		}()
	}
	tr, err := walkPGData(pgdata)
	if err != nil {
		return nil, err
	}
	sortLargestFirst(tr.files)
	spans := wholeFiles(tr.files)
	var inc *incPlan
	if parent != nil {
		var warning string
		if inc, warning, err = planChanges(ctx, <-changed, parent, tr.files, geo, opts.Workers, rep); err != nil {
			return nil, err
		}
		if warning != "" {
			warnings = append(warnings, warning)
		}
		spans = inc.spans
	}
	sortSpans(spans)
	jobs := pack(spans, opts.ObjectSize)
	var total int64
	for _, sp := range spans {
		total += sp.size
	}

	rep.Begin("backup "+id, total)
	c := &copier{r: r, id: id, files: tr.files, startLSN: startLSN, checksums: srv.dataChecksums, rep: rep}
	results, err := c.run(ctx, jobs, opts.Workers)
	rep.End()
	if err != nil {
		return nil, err
	}

	stopLSN, labelFile, spcmap, err := srv.stopBackup(ctx, conn)
	if err != nil {
		return nil, err
	}
	stopped = true
	stopTime := now().UTC()
	bl, err := pgcontrol.ParseBackupLabel([]byte(labelFile))
	if err == nil {
		err = bl.Validate(srv.walSegSize)
	}
	if err != nil {
		return nil, fmt.Errorf("the backup label the server returned: %w", err)
	}
	rep.Logf("backup %s: stopped at LSN %s; waiting for WAL %s..%s to be archived", id, stopLSN,
		wal.SegmentName(bl.StartTimeline, wal.SegmentOf(startLSN, srv.walSegSize), srv.walSegSize),
		wal.SegmentName(bl.StartTimeline, wal.PrevSegmentOf(stopLSN, srv.walSegSize), srv.walSegSize))

	segs := wal.SegmentRange(bl.StartTimeline, startLSN, stopLSN, srv.walSegSize)
	if len(segs) == 0 {
		return nil, fmt.Errorf("the server stopped the backup at LSN %s, not after its start %s", stopLSN, startLSN)
	}
	// The backup archives its finished segments itself only where that
	// is what PostgreSQL's archiver would do (archive_command runs pgkeep
	// wal-push) and the archiver has not failed since the backup began:
	// a broken or foreign archive_command must show, not be papered over.
	if now, err := pgstat.Read(ctx, conn, pgdata); err == nil && strings.Contains(now.Command, "wal-push") && now.FailedCount == arch.FailedCount {
		archiveReady(ctx, r, pgdata, segs, rep)
	}
	if err := waitForWAL(ctx, r, conn, pgdata, segs, opts.WALTimeout, rep); err != nil {
		return nil, fmt.Errorf("backup %s is not restorable: %w", id, err)
	}

	m := c.manifest(results, tr, inc)
	if parent != nil {
		if bl.StartTimeline != wal.TimeLineID(parent.Timeline) {
			return nil, fmt.Errorf("the server changed timeline during the backup (from %d to %d): run it again (it will be a full backup)", parent.Timeline, bl.StartTimeline)
		}
		referred, err := referredObjects(parent, inc.objs)
		if err != nil {
			return nil, err
		}
		m.Objects = append(m.Objects, referred...)
		m.Type, m.Parent, m.Chain, m.Full = TypeIncremental, parent.ID, parent.Chain+1, parent.FullOf()
		// expire keeps what a backup in progress builds on, but one that
		// planned from an older listing may have removed it meanwhile.
		for _, b := range chainOf(referred, parent.ID) {
			if ok, err := r.Exists(ctx, repo.Manifest(b)); err != nil {
				return nil, fmt.Errorf("checking backup %s, which this one builds on: %w", b, err)
			} else if !ok {
				return nil, fmt.Errorf("backup %s, which this one builds on, was removed while it ran (by pgkeep expire?): run the backup again", b)
			}
		}
	} else {
		m.Type = TypeFull
	}
	m.Format = catalog.ManifestFormat
	m.ID = id
	m.SystemIdentifier = strconv.FormatUint(srv.systemID, 10)
	m.PGVersionNum = srv.versionNum
	m.PGMajor = srv.major
	m.WalSegSize = srv.walSegSize
	m.Timeline = uint32(bl.StartTimeline)
	m.StartLSN = startLSN.String()
	m.StopLSN = stopLSN.String()
	m.StartWAL = segs[0]
	m.StopWAL = segs[len(segs)-1]
	m.StartTime = startTime
	m.StopTime = stopTime
	m.Label = label
	m.BackupLabel = labelFile
	m.TablespaceMap = spcmap
	m.DataChecksums = srv.dataChecksums
	m.Compression = r.Compression().String()
	m.Host = host
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("internal error: built an invalid manifest: %w", err)
	}
	if err := catalog.WriteManifest(ctx, r, m); err != nil {
		return nil, fmt.Errorf("writing the completion record of backup %s: %w", id, err)
	}
	kind := "full"
	if m.Incremental() {
		kind = "incremental on " + m.Parent
	}
	rep.Logf("backup %s: complete (%s): %s in %d files, %s read, %s stored, %s", id, kind,
		units.Bytes(m.Size), len(m.Files), units.Bytes(total), units.Bytes(m.Stored), units.Duration(m.Duration()))
	return &Result{Manifest: m, ChecksumFailures: c.failures, Warnings: warnings}, nil
}

// archiveReady pushes the backup's segments that PostgreSQL has finished
// but not archived yet (archive_status/NAME.ready, no NAME.done), as
// wal-push would: the last one, at least, is usually still waiting for the
// archiver, and an incremental backup would otherwise spend most of its
// time waiting for it. A finished segment is never written again, and one
// that is not archived is never recycled; a file that changes while it is
// read is refused anyway (walarchive.Push). Pushing is idempotent, so the
// archiver's own push of the same segment then finds it there, identical.
// Failures are only logged: waitForWAL still waits for the archiver.
func archiveReady(ctx context.Context, r *repo.Repo, pgdata string, segs []string, rep progress.Reporter) {
	status := filepath.Join(pgdata, "pg_wal", "archive_status")
	var g errgroup.Group
	g.SetLimit(4)
	for _, name := range segs {
		if _, err := os.Stat(filepath.Join(status, name+".ready")); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(status, name+".done")); err == nil {
			continue
		}
		g.Go(func() error {
			// No summary here: PostgreSQL's archiver still pushes the
			// segment, finds it stored and stores its summary then (Push
			// does on an identical re-push), and the backup does not wait
			// for a second write and fsync.
			if _, err := walarchive.Push(ctx, r, filepath.Join(pgdata, "pg_wal", name), walarchive.PushOptions{PGData: pgdata, NoSummary: true}); err != nil {
				rep.Logf("WARNING: archiving %s from the backup failed (waiting for PostgreSQL's archiver instead): %v", name, err)
			}
			return nil
		})
	}
	g.Wait()
}

// waitForWAL waits until every segment is in the repository and verifies
// each one by reading it back (without the key, its stored bytes). It
// gives up early when the archiver keeps failing meanwhile.
//
// The backup's own segments are usually archived within a fraction of a
// second, which is then most of an incremental backup's time: PostgreSQL's
// archive_status/NAME.done, which appears once archive_command succeeded,
// is watched every 10 ms, and the repository asked when it appears (and,
// for WAL that reaches the repository another way, the agent's streaming,
// at least twice a second).
func waitForWAL(ctx context.Context, r *repo.Repo, conn *pgx.Conn, pgdata string, segs []string, timeout time.Duration, rep progress.Reporter) error {
	deadline := time.Now().Add(timeout)
	var failedAtStart int64 = -1
	if a, err := pgstat.Read(ctx, conn, pgdata); err == nil {
		failedAtStart = a.FailedCount
	}
	const tick = 10 * time.Millisecond
	for _, name := range segs {
		done := filepath.Join(pgdata, "pg_wal", "archive_status", name+".done")
		lastAsked, lastStat := time.Time{}, time.Now()
		for {
			_, statErr := os.Stat(done)
			// .done with the segment not in the repository: another
			// archive_command; ask no more often than every 50 ms then.
			if since := time.Since(lastAsked); statErr == nil && since >= 50*time.Millisecond || since >= 500*time.Millisecond {
				lastAsked = time.Now()
				_, err := r.StoredSum(ctx, repo.WAL(name))
				if err == nil {
					break
				}
				if !errors.Is(err, storage.ErrNotFound) {
					return fmt.Errorf("verifying archived WAL %s: %w", name, err)
				}
			}
			if time.Since(lastStat) >= time.Second {
				lastStat = time.Now()
				a, aerr := pgstat.Read(ctx, conn, pgdata)
				if aerr == nil && failedAtStart >= 0 && a.Failing() && a.FailedCount >= failedAtStart+3 {
					return fmt.Errorf("%w: WAL segment %s cannot reach the repository: %s", ErrArchiverFailing, name, a.FailureText())
				}
				if time.Now().After(deadline) {
					hint := ""
					if aerr == nil {
						hint = fmt.Sprintf("; archive_command is %q", a.Command)
					}
					return fmt.Errorf("WAL segment %s did not reach the repository within %s%s", name, timeout, hint)
				}
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(tick):
			}
		}
	}
	return nil
}

// checkDataDir makes sure pgdata is the running server's data directory.
func checkDataDir(pgdata string, srv *server) error {
	major, err := pgcontrol.ReadVersionFile(pgdata)
	if err != nil {
		return fmt.Errorf("%s is not a PostgreSQL data directory readable here (%v); run pgkeep backup on the database host, with --pgdata or PGDATA", pgdata, err)
	}
	if major != srv.major {
		return fmt.Errorf("%s holds a PostgreSQL %d cluster, but the server we are connected to runs PostgreSQL %d: point --pgdata (or PGDATA) at its data directory", pgdata, major, srv.major)
	}
	if srv.dataDirectory != "" {
		a, errA := filepath.EvalSymlinks(pgdata)
		b, errB := filepath.EvalSymlinks(srv.dataDirectory)
		if errA == nil && errB == nil && a != b {
			return fmt.Errorf("--pgdata %s is not the data directory of the server we are connected to (%s)", pgdata, srv.dataDirectory)
		}
	}
	return nil
}

// copier copies the planned objects into the repository.
type copier struct {
	r         *repo.Repo
	id        string
	files     []srcFile
	startLSN  wal.LSN
	checksums bool
	rep       progress.Reporter

	mu       sync.Mutex
	failures []string
	vanished map[int]bool
}

// pieceResult is a piece as actually read.
type pieceResult struct {
	job    int
	file   int
	offset int64 // in the object
	fileOf int64 // in the file
	size   int64
	sum    envelope.Sum
	chunks []byte // for relation files
}

type objectResult struct {
	obj    catalog.Object
	pieces []pieceResult
}

func (c *copier) run(ctx context.Context, jobs []objectJob, workers int) ([]objectResult, error) {
	c.vanished = map[int]bool{}
	results := make([]objectResult, len(jobs))
	workers = min(workers, max(len(jobs), 1))
	// One set of buffers per worker, reused from object to object, so
	// memory is bounded by the workers, not the database.
	bufs := make(chan *copyBuffers, workers)
	for range workers {
		bufs <- &copyBuffers{out: &bytes.Buffer{}, read: make([]byte, 256<<10)}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for i := range jobs {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			b := <-bufs
			defer func() { bufs <- b }()
			res, err := c.object(gctx, jobs[i], b.out, b.read)
			results[i] = res
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return results, nil
}

// copyBuffers are one worker's buffers: the encoded object and reads.
type copyBuffers struct {
	out  *bytes.Buffer
	read []byte
}

// object builds, compresses and stores one data object.
func (c *copier) object(ctx context.Context, job objectJob, buf *bytes.Buffer, rbuf []byte) (objectResult, error) {
	buf.Reset()
	w, err := envelope.NewWriter(buf, c.r.Compression(), c.r.Cipher())
	if err != nil {
		return objectResult{}, err
	}
	var res objectResult
	var off int64
	for _, p := range job.pieces {
		pr, err := c.piece(p, w, rbuf)
		if err != nil {
			return objectResult{}, err
		}
		pr.offset = off
		off += pr.size
		res.pieces = append(res.pieces, pr)
	}
	sum, err := w.Close()
	if err != nil {
		return objectResult{}, err
	}
	key := repo.Data(c.id, job.seq)
	put, err := c.r.PutEncoded(ctx, key, buf.Bytes(), sum)
	if err != nil {
		return objectResult{}, fmt.Errorf("storing %s: %w", key, err)
	}
	res.obj = catalog.Object{Seq: job.seq, Size: sum.Size, Stored: put.Stored, XXH64: sum.String()}
	// Shrink oversized buffers so memory stays bounded.
	if buf.Cap() > 64<<20 {
		*buf = bytes.Buffer{}
	}
	return res, nil
}

// piece copies one file range into w, verifying page checksums.
func (c *copier) piece(p pieceJob, w io.Writer, rbuf []byte) (pieceResult, error) {
	f := c.files[p.file]
	pr := pieceResult{file: p.file, fileOf: p.offset}
	fh, err := os.Open(f.abs)
	if errors.Is(err, os.ErrNotExist) {
		c.mu.Lock()
		c.vanished[p.file] = true
		c.mu.Unlock()
		return pr, nil
	}
	if err != nil {
		return pr, fmt.Errorf("reading %s: %w", f.abs, err)
	}
	defer fh.Close()
	h := envelope.NewHasher()
	pos := p.offset
	end := p.offset + p.size
	if f.isRel && (pos%catalog.ChunkSize != 0 || len(rbuf)%catalog.ChunkSize != 0) {
		return pr, fmt.Errorf("internal error: piece of %s at %d is not chunk-aligned", f.rel, pos)
	}
	for pos < end {
		n, rerr := fh.ReadAt(rbuf[:min(int64(len(rbuf)), end-pos)], pos)
		if n > 0 {
			chunk := rbuf[:n]
			if f.isRel && c.checksums {
				c.verifyPages(fh, f, pos, chunk)
			}
			if f.isRel {
				// Reads are whole chunks from a chunk boundary, but at
				// the end of the file.
				pr.chunks = catalog.AppendChunkSums(pr.chunks, chunk)
			}
			h.Write(chunk)
			if _, err := w.Write(chunk); err != nil {
				return pr, err
			}
			c.rep.Advance(int64(n))
			pos += int64(n)
		}
		if rerr == io.EOF {
			break // the file shrank: WAL replay restores what follows
		}
		if rerr != nil {
			return pr, fmt.Errorf("reading %s: %w", f.abs, rerr)
		}
	}
	pr.size = pos - p.offset
	pr.sum = h.Sum()
	return pr, nil
}

// verifyPages checks the checksums of the whole pages in chunk, which
// starts at file offset pos. Pages changed since the backup started are
// skipped: they may be torn in our read and WAL replay rewrites them.
func (c *copier) verifyPages(fh *os.File, f srcFile, pos int64, chunk []byte) {
	const relSegBlocks = 131072 // 1 GiB segments of 8 KiB pages
	for i := 0; i+pageSize <= len(chunk); i += pageSize {
		page := chunk[i : i+pageSize]
		blk := f.relSeg*relSegBlocks + uint32((pos+int64(i))/pageSize)
		if err := pgpage.Verify(page, blk); err == nil || pgpage.PageLSN(page) >= c.startLSN {
			continue
		}
		// Re-read once: a concurrent write may have torn our copy.
		again := make([]byte, pageSize)
		if _, err := fh.ReadAt(again, pos+int64(i)); err == nil {
			if err := pgpage.Verify(again, blk); err == nil || pgpage.PageLSN(again) >= c.startLSN {
				continue
			}
		}
		err := pgpage.Verify(page, blk)
		msg := fmt.Sprintf("%s block %d: %v", f.rel, (pos+int64(i))/pageSize, err)
		c.mu.Lock()
		c.failures = append(c.failures, msg)
		c.mu.Unlock()
		c.rep.Logf("WARNING: page checksum failure in %s", msg)
	}
}

// manifest assembles the file list from what was actually read and, for
// an incremental backup (inc not nil), what it refers to.
func (c *copier) manifest(results []objectResult, tr *tree, inc *incPlan) *catalog.Manifest {
	m := &catalog.Manifest{Contents: catalog.Contents{Dirs: tr.dirs, Tablespaces: tr.tablespaces}}
	pieces := map[int][]catalog.Piece{}
	for _, res := range results {
		m.Objects = append(m.Objects, res.obj)
		m.Stored += res.obj.Stored
		for _, p := range res.pieces {
			if p.size == 0 {
				continue
			}
			pieces[p.file] = append(pieces[p.file], catalog.Piece{
				Object: res.obj.Seq, Offset: p.offset, FileOffset: p.fileOf, Size: p.size, XXH64: p.sum.String(), Chunks: p.chunks,
			})
		}
	}
	if inc != nil {
		for i, refs := range inc.refs {
			pieces[i] = append(pieces[i], refs...)
		}
	}
	for i, f := range c.files {
		if c.vanished[i] {
			continue
		}
		ps := pieces[i]
		sort.Slice(ps, func(a, b int) bool { return ps[a].FileOffset < ps[b].FileOffset })
		var size int64
		for _, p := range ps {
			size = max(size, p.FileOffset+p.Size)
		}
		m.Files = append(m.Files, catalog.File{Path: f.rel, Size: size, Mode: uint32(f.mode), MTime: f.mtime, Pieces: ps})
		m.Size += size
	}
	sort.Slice(m.Files, func(a, b int) bool { return m.Files[a].Path < m.Files[b].Path })
	return m
}
