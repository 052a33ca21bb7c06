package backup

// Incremental backups. An incremental backup builds on its parent, the
// newest complete backup of the cluster: for each relation file it stores
// only the 128 KiB chunks (catalog.ChunkSize) in which some block changed
// since the parent's start LSN, and its manifest refers to the parent's
// copy of every other chunk, by data object (of whichever backup of the
// chain holds it) and offset. References are flattened: they always name
// the backup whose object holds the bytes, so a restore never walks the
// chain, and a manifest alone says everything its backup needs.
//
// What changed comes from the WAL summaries wal-push stores beside each
// segment (package walsum), for the segments from the parent's start to
// this backup's start, the last ones from pg_wal where they are not
// archived yet. Where a summary is missing, the relation files are read
// whole and their chunks compared with the parent's checksums instead.
//
// The rules, and why each is safe (docs/design.md, "Incremental backups"):
//   - a chunk is copied when a summary names one of its blocks, when it
//     lies at or beyond its fork's limit block (created, truncated or
//     dropped since the parent), when its database was created or dropped
//     as a whole (CREATE DATABASE copies files without WAL), when the
//     parent has no chunk of the same length there (the file grew: new
//     and zero-extended pages, which PostgreSQL does not WAL-log), or when
//     the file is not in the parent at all (a new relfilenode: SET LOGGED,
//     VACUUM FULL, a new table);
//   - free space map forks and every file that is not a relation file
//     (pg_control, pg_xact, configuration) are copied whole: the FSM is
//     not WAL-logged reliably, and the others are small;
//   - a block the WAL did not touch since the parent's start is, on disk,
//     what the parent read (the parent read it after its own start), or
//     differs only in hint bits, which replay does not need and which,
//     with data checksums or wal_log_hints, are WAL-logged as full-page
//     images anyway; a block changed after this backup's start is
//     rewritten by replay from this backup's own start, as in a full
//     backup.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/progress"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/units"
	"github.com/pgkeep/pgkeep/internal/wal"
	"github.com/pgkeep/pgkeep/internal/walsum"
)

// Backup types (Options.Type).
const (
	TypeFull        = "full"
	TypeIncremental = "incremental"
	TypeAuto        = "auto" // incremental while the chain is short and its full young
)

// Defaults of Options.MaxChain and Options.FullEvery.
const (
	DefaultMaxChain  = 7
	DefaultFullEvery = 7 * 24 * time.Hour
)

// chooseParent decides whether the backup builds on newest, the newest
// complete backup (nil: there is none), and returns it, or nil and why the
// backup is a full one. timeline is the server's.
func chooseParent(newest *catalog.Manifest, typ string, maxChain int, fullEvery time.Duration, timeline uint32, now time.Time) (*catalog.Manifest, string) {
	if typ == TypeFull {
		return nil, "a full backup was asked for"
	}
	p := newest
	switch {
	case p == nil:
		return nil, "there is no earlier backup to build on"
	case p.Sealed:
		return nil, fmt.Sprintf("the repository is encrypted and this host has no key to read what backup %s holds", p.ID)
	case p.Timeline != timeline:
		return nil, fmt.Sprintf("the newest backup, %s, is of timeline %d and the server is on timeline %d", p.ID, p.Timeline, timeline)
	case !hasChunkSums(p):
		return nil, fmt.Sprintf("the newest backup, %s, was taken by a pgkeep without chunk checksums", p.ID)
	}
	if typ == TypeIncremental {
		return p, ""
	}
	if p.Chain+1 > maxChain {
		return nil, fmt.Sprintf("backup %s ends a chain of %d incremental backups (--max-chain %d)", p.ID, p.Chain, maxChain)
	}
	full := p.FullOf()
	started, ok := catalog.IDTime(full)
	if !ok {
		return nil, fmt.Sprintf("the chain of backup %s names no full backup (run pgkeep verify)", p.ID)
	}
	if age := now.Sub(started); age >= fullEvery {
		return nil, fmt.Sprintf("the newest full backup, %s, is %s old (--full-every %s)", full, units.Duration(age), units.Duration(fullEvery))
	}
	return p, ""
}

// hasChunkSums reports whether the relation files of m carry chunk
// checksums, which incremental backups refer to.
func hasChunkSums(m *catalog.Manifest) bool {
	for _, f := range m.Files {
		if _, _, ok := relationOf(f.Path); !ok {
			continue
		}
		for _, p := range f.Pieces {
			if p.Chunks == nil {
				return false
			}
		}
	}
	return true
}

// loadChanges merges the WAL summaries of the segments of timeline tli
// from the one holding from to the one holding to: from the repository,
// or, for those not archived yet, from pg_wal. It returns nil and the
// reason when some part of the range has no usable summary.
func loadChanges(ctx context.Context, r *repo.Repo, pgdata string, tli uint32, from, to wal.LSN, segSize uint64, major, workers int) (*walsum.Summary, string, error) {
	first, last := wal.SegmentOf(from, segSize), wal.SegmentOf(to, segSize)
	if last < first {
		return nil, "the parent starts after this backup", nil
	}
	total := walsum.New()
	var prev *walsum.Summary
	var prevName string
	const batch = 64
	for lo := first; lo <= last; lo += batch {
		hi := min(lo+batch-1, last)
		sums := make([]*walsum.Summary, hi-lo+1)
		why := make([]string, len(sums))
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(max(workers, 4))
		for i := range sums {
			g.Go(func() error {
				var err error
				sums[i], why[i], err = segmentChanges(gctx, r, pgdata, wal.SegmentName(wal.TimeLineID(tli), lo+uint64(i), segSize), lo+uint64(i), segSize, major)
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return nil, "", err
		}
		for i, s := range sums {
			name := wal.SegmentName(wal.TimeLineID(tli), lo+uint64(i), segSize)
			if s == nil {
				return nil, fmt.Sprintf("segment %s has no WAL summary (%s)", name, why[i]), nil
			}
			if prev != nil {
				if !prev.Join(s, major) {
					return nil, fmt.Sprintf("the WAL summary of %s is incomplete", prevName), nil
				}
				total.Merge(prev)
			}
			prev, prevName = s, name
		}
	}
	// The last segment's cut record is past this backup's start, which
	// replay covers: its summary need not be complete.
	prev.Complete = true
	total.Merge(prev)
	return total, "", nil
}

// segmentChanges returns the summary of one segment, or nil and why not.
func segmentChanges(ctx context.Context, r *repo.Repo, pgdata, name string, no, segSize uint64, major int) (*walsum.Summary, string, error) {
	data, _, err := r.GetObject(ctx, repo.Summary(name))
	switch {
	case err == nil:
		s, derr := walsum.Decode(data)
		if derr == nil {
			return s, "", nil
		}
		err = derr
	case errors.Is(err, storage.ErrNotFound):
	case errors.Is(err, envelope.ErrCorrupt):
		// Damaged: pg_wal may still have the segment, or the files are
		// compared instead.
	default:
		return nil, "", fmt.Errorf("reading the WAL summary of %s: %w", name, err)
	}
	// Not archived yet (the segment this backup starts in, at least) or
	// archived by a pgkeep that made no summaries: pg_wal may have it.
	seg, lerr := os.ReadFile(filepath.Join(pgdata, "pg_wal", name))
	if lerr != nil {
		if err != nil {
			return nil, fmt.Sprintf("the stored one is unreadable: %v", err), nil
		}
		return nil, "not in the repository, not in pg_wal", nil
	}
	s, serr := walsum.Segment(seg, wal.SegmentStartLSN(no, segSize), major)
	if serr != nil {
		return nil, fmt.Sprintf("reading it in pg_wal: %v", serr), nil
	}
	return s, "", nil
}

// parentChunk is where the parent holds one chunk of a file.
type parentChunk struct {
	piece *catalog.Piece // nil: the parent has no such chunk
	idx   int            // chunk index within the piece
	size  int64
}

// chunkTable lays out the parent's chunks of f by file chunk index.
func chunkTable(f *catalog.File) []parentChunk {
	t := make([]parentChunk, catalog.ChunkCount(f.Size))
	for i := range f.Pieces {
		p := &f.Pieces[i]
		if p.Chunks == nil || p.FileOffset%catalog.ChunkSize != 0 {
			continue
		}
		base := int(p.FileOffset / catalog.ChunkSize)
		for k := range catalog.ChunkCount(p.Size) {
			if base+k < len(t) {
				t[base+k] = parentChunk{piece: p, idx: k, size: min(catalog.ChunkSize, p.Size-int64(k)*catalog.ChunkSize)}
			}
		}
	}
	return t
}

// incPlan is what an incremental backup copies and what it refers to.
type incPlan struct {
	spans []pieceJob                 // ranges to read and store
	refs  map[int][]catalog.Piece    // per file: pieces held by earlier backups
	scan  []int                      // files to compare with the parent by reading them
	objs  map[catalog.ObjectRef]bool // the earlier backups' objects referred to
}

// geometry is the cluster's page layout.
type geometry struct {
	blockSize    int64  // BLCKSZ
	relSegBlocks uint32 // RELSEG_SIZE
}

// planIncremental decides, file by file, what to copy and what to refer
// to. changes nil means the summaries do not cover the range: relation
// files the parent has are then left for compareChunks.
func planIncremental(files []srcFile, parent *catalog.Manifest, changes *walsum.Summary, geo geometry) *incPlan {
	pl := &incPlan{refs: map[int][]catalog.Piece{}, objs: map[catalog.ObjectRef]bool{}}
	inParent := map[string]*catalog.File{}
	for i := range parent.Files {
		inParent[parent.Files[i].Path] = &parent.Files[i]
	}
	for i, f := range files {
		pf := inParent[f.rel]
		if !f.isRel || f.fork.Fork == walsum.FSMFork || pf == nil {
			pl.spans = append(pl.spans, pieceJob{file: i, size: f.size})
			continue
		}
		if changes == nil {
			pl.scan = append(pl.scan, i)
			continue
		}
		c, whole := changes.Lookup(f.fork)
		if whole {
			pl.spans = append(pl.spans, pieceJob{file: i, size: f.size})
			continue
		}
		table := chunkTable(pf)
		pl.emit(i, f.size, parent.ID, table, func(ci int, size int64) bool {
			if c == nil {
				return false
			}
			first := f.relSeg*geo.relSegBlocks + uint32(int64(ci)*catalog.ChunkSize/geo.blockSize)
			return c.AnyIn(first, uint32((size+geo.blockSize-1)/geo.blockSize))
		})
	}
	return pl
}

// emit plans file i of the given size: chunks the parent has at the same
// size and changed reports unchanged are referred to, the others copied.
func (pl *incPlan) emit(i int, size int64, parentID string, table []parentChunk, changed func(ci int, size int64) bool) {
	n := catalog.ChunkCount(size)
	keep := make([]bool, n)
	for ci := range n {
		cs := min(catalog.ChunkSize, size-int64(ci)*catalog.ChunkSize)
		keep[ci] = ci < len(table) && table[ci].piece != nil && table[ci].size == cs && !changed(ci, cs)
	}
	for ci := 0; ci < n; {
		start := ci
		if !keep[ci] {
			for ci < n && !keep[ci] {
				ci++
			}
			off := int64(start) * catalog.ChunkSize
			pl.spans = append(pl.spans, pieceJob{file: i, offset: off, size: min(int64(ci)*catalog.ChunkSize, size) - off})
			continue
		}
		// A run of unchanged chunks in one piece of the parent.
		pc := table[ci]
		for ci < n && keep[ci] && table[ci].piece == pc.piece && table[ci].idx == pc.idx+(ci-start) {
			ci++
		}
		p := pc.piece
		ref := catalog.Piece{
			Object:     p.Object,
			Backup:     p.ObjectOf(parentID),
			Offset:     p.Offset + int64(pc.idx)*catalog.ChunkSize,
			FileOffset: int64(start) * catalog.ChunkSize,
			Chunks:     p.Chunks[8*pc.idx : 8*(pc.idx+ci-start)],
		}
		for k := start; k < ci; k++ {
			ref.Size += table[k].size
		}
		if pc.idx == 0 && ref.Size == p.Size {
			ref.XXH64 = p.XXH64 // the whole piece
		}
		pl.refs[i] = append(pl.refs[i], ref)
		pl.objs[catalog.ObjectRef{Backup: ref.Backup, Seq: ref.Object}] = true
	}
}

// compareChunks reads the files pl.scan lists, without WAL summaries to
// go by, and plans each by comparing its chunks with the parent's
// checksums.
func (pl *incPlan) compareChunks(ctx context.Context, files []srcFile, parent *catalog.Manifest, workers int) error {
	inParent := map[string]*catalog.File{}
	for i := range parent.Files {
		inParent[parent.Files[i].Path] = &parent.Files[i]
	}
	sums := make([][]byte, len(pl.scan))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(workers, 1))
	for k, i := range pl.scan {
		g.Go(func() error {
			if gctx.Err() != nil {
				return gctx.Err()
			}
			s, err := fileChunkSums(files[i].abs)
			sums[k] = s
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for k, i := range pl.scan {
		table := chunkTable(inParent[files[i].rel])
		s := sums[k]
		pl.emit(i, files[i].size, parent.ID, table, func(ci int, size int64) bool {
			if 8*ci+8 > len(s) {
				return true // the file shrank while we read it
			}
			return table[ci].piece.Chunk(table[ci].idx) != binary.LittleEndian.Uint64(s[8*ci:])
		})
	}
	pl.scan = nil
	return nil
}

// fileChunkSums reads a file and returns its chunk checksums (nil for a
// file that is gone: the walk saw it, WAL replay removes it).
func fileChunkSums(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer fh.Close()
	buf := make([]byte, 8*catalog.ChunkSize)
	var out []byte
	for {
		n, err := io.ReadFull(fh, buf)
		out = catalog.AppendChunkSums(out, buf[:n])
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
	}
}

// referredObjects returns the objects of earlier backups pl refers to, as
// the parent's manifest describes them.
func referredObjects(parent *catalog.Manifest, used map[catalog.ObjectRef]bool) ([]catalog.Object, error) {
	var out []catalog.Object
	for _, o := range parent.Objects {
		ref := catalog.ObjectRef{Backup: o.Backup, Seq: o.Seq}
		if ref.Backup == "" {
			ref.Backup = parent.ID
		}
		if !used[ref] {
			continue
		}
		o.Backup = ref.Backup
		out = append(out, o)
		delete(used, ref)
	}
	if len(used) > 0 {
		return nil, fmt.Errorf("%w: backup %s refers to objects its manifest does not list", envelope.ErrCorrupt, parent.ID)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Backup != out[j].Backup {
			return out[i].Backup < out[j].Backup
		}
		return out[i].Seq < out[j].Seq
	})
	return out, nil
}

// changes is what loadChanges found.
type changes struct {
	sum *walsum.Summary
	why string
	err error
}

// planChanges plans an incremental backup on parent: from the WAL
// summaries where they cover the range (ch), by comparing chunks
// otherwise.
func planChanges(ctx context.Context, ch changes, parent *catalog.Manifest, files []srcFile, geo geometry, workers int, rep progress.Reporter) (*incPlan, string, error) {
	if ch.err != nil {
		return nil, "", ch.err
	}
	changes, why := ch.sum, ch.why
	pl := planIncremental(files, parent, changes, geo)
	var warning string
	if changes == nil {
		var n int64
		for _, i := range pl.scan {
			n += files[i].size
		}
		warning = fmt.Sprintf("%s: read all %s of relation files to find what changed since backup %s", why, units.Bytes(n), parent.ID)
		rep.Logf("WARNING: %s", warning)
		if err := pl.compareChunks(ctx, files, parent, workers); err != nil {
			return nil, "", err
		}
	}
	var all, copy int64
	for _, f := range files {
		all += f.size
	}
	for _, sp := range pl.spans {
		copy += sp.size
	}
	how := "the WAL summaries"
	if changes == nil {
		how = "comparing chunk checksums"
	}
	rep.Logf("%s: %s of %s changed since backup %s", how, units.Bytes(copy), units.Bytes(all), parent.ID)
	return pl, warning, nil
}

// chainOf lists the backups an incremental one depends on: its parent
// and every backup whose objects it refers to.
func chainOf(referred []catalog.Object, parent string) []string {
	seen := map[string]bool{parent: true}
	out := []string{parent}
	for _, o := range referred {
		if !seen[o.Backup] {
			seen[o.Backup] = true
			out = append(out, o.Backup)
		}
	}
	sort.Strings(out)
	return out
}
