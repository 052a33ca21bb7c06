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
// timeline would go on to replay, if the repository holds one: a segment
// with a higher number on seg's timeline, or on a timeline that descends
// from it past the start of seg (so seg's content is on that timeline's
// history). Timelines that left seg's timeline before seg (abandoned
// branches seen from here) and .partial files do not count. It also
// returns when that segment was stored.
func laterWAL(ctx context.Context, r *repo.Repo, seg wal.Segment, segSize uint64) (string, time.Time, error) {
	ix, hist, err := catalog.LoadWAL(ctx, r, segSize)
	if err != nil {
		return "", time.Time{}, err
	}
	after := wal.SegmentStartLSN(seg.No, segSize) + 1
	best, bestTLI, found := uint64(0), uint32(0), false
	for _, t := range ix.Timelines {
		if !hist.Descends(t.Timeline, uint32(seg.TLI), after) {
			continue
		}
		last, ok := t.LastNo()
		if !ok || last <= seg.No {
			continue
		}
		// The first segment after seg on this timeline.
		for n := seg.No + 1; n <= last; n++ {
			if t.Has(n) {
				if !found || n < best {
					best, bestTLI, found = n, t.Timeline, true
				}
				break
			}
		}
	}
	if !found {
		return "", time.Time{}, nil
	}
	return wal.SegmentName(wal.TimeLineID(bestTLI), best, segSize), ix.Timeline(bestTLI).ArchivedAt(best), nil
}

// fetchOrGap fetches segment name into dest; when the repository does not
// have it, it tells the end of the archive (ErrNotArchived) from a gap
// (ErrGap), waiting up to gapGrace for a segment whose successor was
// stored moments ago.
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
		later, at, lerr := laterWAL(ctx, r, seg, segSize)
		if lerr != nil {
			// Cannot tell the end from a gap: not "not found".
			return fmt.Errorf("%s is not in the repository, and checking whether later WAL is: %w", name, lerr)
		}
		if later == "" || endOnPurpose(dest, name) {
			return err // the true end of the archive, or the one chosen
		}
		if time.Since(at) > recentWAL || time.Now().After(deadline) {
			return fmt.Errorf("%w: %s is missing from %s, but WAL that recovery would replay after it is there (%s, stored %s); "+
				"recovery stops here instead of promoting with that WAL lost. Put the missing segment back into the repository, "+
				"or restore with a target before it (pgkeep restore --target-lsn %s)",
				ErrGap, name, r.Location(), later, at.UTC().Format(time.RFC3339), wal.SegmentStartLSN(seg.No, segSize))
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
