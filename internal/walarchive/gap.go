package walarchive

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// ErrGap means a requested segment is missing while WAL that recovery
// would replay after it is in the repository: a hole in the archive, not
// its end. wal-fetch reports it with an exit status that makes PostgreSQL
// stop recovery, so that it never promotes with the WAL after the hole
// silently lost.
var ErrGap = errors.New("gap in the WAL archive")

// ArchiveEndMarker is the file in a restored data directory that names the
// segment where the archive ends on purpose: a restore with a target
// before a gap writes it (the operator chose to restore up to the gap),
// and Fetch then answers "not found" for that segment instead of stopping
// recovery, so that WAL read-ahead cannot end recovery short of a target
// it can reach. It is removed with the prefetch spool when recovery ends.
const ArchiveEndMarker = "pgkeep_archive_end"

// endOnPurpose reports whether the restore of the data directory holding
// dest ended the archive at segment name on purpose.
func endOnPurpose(dest, name string) bool {
	spool := SpoolDir(dest)
	if spool == "" {
		return false
	}
	data, err := os.ReadFile(filepath.Join(filepath.Dir(spool), ArchiveEndMarker))
	return err == nil && strings.TrimSpace(string(data)) == name
}

// gapGrace is how long a fetch waits for a missing segment to appear when
// the later WAL that makes it a gap was stored only moments ago: uploads
// run in parallel (the look-ahead pusher), so segment N+1 can land a
// moment before segment N.
const gapGrace = 10 * time.Second

// recentWAL is what "moments ago" means for gapGrace.
const recentWAL = 2 * time.Minute

// laterWAL returns the first segment after seg that recovery on seg's
// timeline would go on to replay, if the repository holds any of it
// (whole, or streamed pieces): a segment with a higher number on seg's
// timeline, or on a timeline that descends from it at or after after (so
// the WAL of seg's timeline up to there is on that timeline's history).
// For a missing segment after is just past its start; for one streamed in
// part, just past the streamed end. Timelines that left seg's timeline
// before (abandoned branches seen from here) and .partial files do not
// count. It also returns when that segment was stored.
func laterWAL(ix *catalog.WALIndex, hist catalog.Histories, seg wal.Segment, after wal.LSN) (string, time.Time) {
	best, bestTLI, found := uint64(0), uint32(0), false
	for _, t := range ix.Timelines {
		if !hist.Descends(t.Timeline, uint32(seg.TLI), after) {
			continue
		}
		last, ok := t.LastAnyNo()
		if !ok || last <= seg.No {
			continue
		}
		// The first segment after seg on this timeline.
		for n := seg.No + 1; n <= last; n++ {
			if t.HasAny(n) {
				if !found || n < best {
					best, bestTLI, found = n, t.Timeline, true
				}
				break
			}
		}
	}
	if !found {
		return "", time.Time{}
	}
	return wal.SegmentName(wal.TimeLineID(bestTLI), best, ix.SegSize), ix.Timeline(bestTLI).StoredAt(best)
}

// fetchOrGap fetches segment name into dest. When the repository does not
// have it whole, it serves it from its streamed pieces if they are the end
// of the archive (zero-filled past the streamed end) or complete, and
// otherwise tells the end of the archive (ErrNotArchived) from a gap
// (ErrGap): a missing segment, a partly streamed one, or a hole between
// streamed pieces, with later WAL on the path. It waits up to gapGrace
// for WAL whose successor was stored moments ago.
func fetchOrGap(ctx context.Context, r *repo.Repo, name, dest string, segSize uint64) error {
	err := fetchInto(ctx, r, name, dest, segSize)
	if !errors.Is(err, ErrNotArchived) {
		return err
	}
	seg, perr := wal.ParseSegmentName(name, segSize)
	if perr != nil {
		return err
	}
	deadline := time.Now().Add(gapGrace)
	for {
		ix, hist, lerr := catalog.LoadWAL(ctx, r, segSize)
		if lerr != nil {
			// Cannot tell the end from a gap: not "not found".
			return fmt.Errorf("%s is not in the repository, and checking whether later WAL is: %w", name, lerr)
		}
		start := wal.SegmentStartLSN(seg.No, segSize)
		s := ix.Timeline(uint32(seg.TLI)).StreamedAt(seg.No)
		var problem string // why it is a gap
		var later string
		var at time.Time
		switch {
		case s != nil && s.Whole:
			// Stored whole since the first attempt.
			if err = fetchInto(ctx, r, name, dest, segSize); !errors.Is(err, ErrNotArchived) {
				return err
			}
		case s != nil && s.Complete(segSize):
			return serveStreamed(ctx, r, s, dest)
		case s != nil && s.Hole:
			problem = fmt.Sprintf("bytes %#x..%#x of %s (LSN %s..%s) are missing between its streamed pieces", s.End, s.HoleEnd, name,
				start+wal.LSN(s.End), start+wal.LSN(s.HoleEnd))
			at = s.Newest
		case s != nil:
			end := start + wal.LSN(s.End)
			later, at = laterWAL(ix, hist, seg, end+1)
			if later == "" {
				// The streamed end of the archive: recovery replays up to
				// the last streamed byte.
				return serveStreamed(ctx, r, s, dest)
			}
			problem = fmt.Sprintf("%s is streamed only up to LSN %s", name, end)
		default:
			later, at = laterWAL(ix, hist, seg, start+1)
			if later != "" {
				problem = fmt.Sprintf("%s is missing from %s", name, r.Location())
			}
		}
		if problem == "" || endOnPurpose(dest, name) {
			return fmt.Errorf("%s: %w", name, ErrNotArchived) // the true end of the archive, or the one chosen
		}
		if time.Since(at) > recentWAL || time.Now().After(deadline) {
			what := "WAL that recovery would replay after it is there"
			if later != "" {
				what += fmt.Sprintf(" (%s, stored %s)", later, at.UTC().Format(time.RFC3339))
			}
			return fmt.Errorf("%w: %s, but %s; "+
				"recovery stops here instead of promoting with that WAL lost. Put the missing WAL back into the repository, "+
				"or restore with a target before it (pgkeep restore --target-lsn %s)",
				ErrGap, problem, what, start)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
		err = fetchInto(ctx, r, name, dest, segSize)
		if !errors.Is(err, ErrNotArchived) {
			return err
		}
	}
}

// serveStreamed assembles a segment from its streamed pieces into dest.
func serveStreamed(ctx context.Context, r *repo.Repo, s *catalog.StreamedSegment, dest string) error {
	id, err := r.Identity(ctx)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", s.Segment, err)
	}
	return assemble(ctx, r, s, dest, id)
}
