package catalog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// Histories maps a timeline to its parsed history file (the ancestors it
// descends from, with their switch points). Timeline 1 has none.
type Histories map[uint32][]wal.HistoryEntry

// LoadHistories reads every archived timeline history file.
func LoadHistories(ctx context.Context, r *repo.Repo, ix *WALIndex) (Histories, error) {
	h := Histories{}
	for _, name := range ix.Histories {
		data, _, err := r.GetObject(ctx, repo.WAL(name))
		if errors.Is(err, envelope.ErrEncrypted) {
			return nil, fmt.Errorf("reading timeline history file %s (stored encrypted by an older pgkeep; newer ones are stored in the clear): %w", name, err)
		}
		if err != nil {
			return nil, fmt.Errorf("reading history file %s: %w", name, err)
		}
		entries, err := wal.ParseHistory(data)
		if err != nil {
			return nil, fmt.Errorf("history file %s: %w", name, err)
		}
		h[uint32(wal.TimelineOf(strings.TrimSuffix(name, ".history")))] = entries
	}
	return h, nil
}

// descends reports whether timeline t is tli or descends from it at or
// after lsn (so recovery from lsn on tli can follow it).
func (h Histories) descends(t, tli uint32, lsn wal.LSN) bool {
	if t == tli {
		return true
	}
	for _, e := range h[t] {
		if uint32(e.TLI) == tli {
			return e.SwitchLSN >= lsn
		}
	}
	return false
}

// Chain is the WAL recovery reads from a start point to the end of the
// archive, following timeline history the way recovery_target_timeline
// does ('latest' unless told otherwise).
type Chain struct {
	Target uint32    // the timeline recovery follows to its end
	First  string    // first segment (on the start timeline)
	Last   string    // last segment present without a gap
	LastAt time.Time // when Last was archived
	End    wal.LSN   // LSN just past Last
	// Missing is the first segment missing before the end of the archive
	// ("" when the path is whole), MissingTo the last one of that gap, and
	// Resume the first segment present after it.
	Missing, MissingTo, Resume string
	Newest                     string // the newest segment archived on the path
	// NewestAt is when the newest segment on the path was archived.
	NewestAt time.Time
	// Streamed names the segment after Last that the agent has streamed
	// in part: recovery replays its pieces [0, End) and the archive ends
	// there (End is then inside it). "" when there is none.
	Streamed string
	// Hole describes a hole between the streamed pieces of Missing (the
	// byte range), "" for a missing segment.
	Hole string
}

// Descends reports whether timeline t is tli or descends from it at or
// after lsn, so that recovery from lsn on tli can follow it.
func (h Histories) Descends(t, tli uint32, lsn wal.LSN) bool { return h.descends(t, tli, lsn) }

// ChainFrom follows the archive from start on timeline tli to the end of
// timeline target, or, with target 0, of the newest timeline that descends
// from tli at or after start (recovery_target_timeline = 'latest').
func (ix *WALIndex) ChainFrom(h Histories, tli uint32, start wal.LSN, target uint32) Chain {
	segSize := ix.SegSize
	if target == 0 {
		target = tli
		for _, t := range ix.Timelines {
			if t.Timeline > target && h.descends(t.Timeline, tli, start) {
				target = t.Timeline
			}
		}
		for t := range h { // a history file without segments yet
			if t > target && h.descends(t, tli, start) {
				target = t
			}
		}
	}
	hist := h[target]
	on := func(lsn wal.LSN) uint32 { return uint32(wal.TimelineOfLSN(hist, wal.TimeLineID(target), lsn)) }
	// has finds segment no on the path: on the timeline its end belongs to,
	// else on the one its start belongs to (the segment a switch happened
	// in is on both; the newer has it whole).
	has := func(no uint64) (uint32, bool) {
		for _, t := range []uint32{on(wal.SegmentStartLSN(no+1, segSize) - 1), on(wal.SegmentStartLSN(no, segSize))} {
			if ix.Timeline(t).HasComplete(no) {
				return t, true
			}
		}
		return 0, false
	}
	name := func(no uint64) string {
		return wal.SegmentName(wal.TimeLineID(on(wal.SegmentStartLSN(no+1, segSize)-1)), no, segSize)
	}
	no := wal.SegmentOf(start, segSize)
	c := Chain{Target: target}
	c.First = wal.SegmentName(wal.TimeLineID(tli), no, segSize)
	// The newest archived segment on any timeline of the path.
	var newest uint64
	var newestTLI uint32
	for _, t := range ix.Timelines {
		last, ok := t.LastAnyNo()
		if !ok {
			continue
		}
		if t.Timeline != target {
			onPath := false
			for _, e := range hist {
				if uint32(e.TLI) == t.Timeline {
					// An ancestor counts up to where the path left it;
					// what it wrote later is an abandoned branch.
					onPath, last = true, min(last, wal.SegmentOf(e.SwitchLSN, segSize))
				}
			}
			if !onPath {
				continue
			}
		}
		if newestTLI == 0 || last >= newest {
			newest, newestTLI = last, t.Timeline
		}
		if t.Newest.After(c.NewestAt) {
			c.NewestAt = t.Newest
		}
	}
	if newestTLI != 0 {
		c.Newest = wal.SegmentName(wal.TimeLineID(newestTLI), newest, segSize)
	}
	t0, ok := has(no)
	if !ok {
		c.Missing = c.First
		c.MissingTo, c.Resume = gapEnd(no, newest, has, name)
		return c
	}
	lastTLI := t0
	for {
		t, ok := has(no + 1)
		if !ok {
			break
		}
		no, lastTLI = no+1, t
	}
	c.Last = wal.SegmentName(wal.TimeLineID(lastTLI), no, segSize)
	c.LastAt = ix.Timeline(lastTLI).StoredAt(no)
	c.End = wal.SegmentStartLSN(no+1, segSize)
	if newestTLI == 0 || no >= newest {
		return c
	}
	// The segment after Last: streamed in part at the end of the archive
	// (recovery replays its pieces, and the archive ends there), or a gap.
	next := no + 1
	tail := ix.Timeline(on(wal.SegmentStartLSN(next+1, segSize) - 1)).StreamedAt(next)
	if tail == nil {
		tail = ix.Timeline(on(wal.SegmentStartLSN(next, segSize))).StreamedAt(next)
	}
	if tail != nil && tail.Hole {
		c.Missing, c.MissingTo = tail.Segment, tail.Segment
		c.Hole = fmt.Sprintf("bytes %#x..%#x of %s (LSN %s..%s) are missing between its streamed pieces", tail.End, tail.HoleEnd, tail.Segment,
			wal.SegmentStartLSN(next, segSize)+wal.LSN(tail.End), wal.SegmentStartLSN(next, segSize)+wal.LSN(tail.HoleEnd))
		if next < newest {
			_, c.Resume = gapEnd(next, newest, has, name)
		}
		return c
	}
	if tail != nil && next == newest && tail.End > 0 {
		c.Streamed = tail.Segment
		c.End = wal.SegmentStartLSN(next, segSize) + wal.LSN(tail.End)
		c.LastAt = tail.Newest
		return c
	}
	c.Missing = name(next)
	c.MissingTo, c.Resume = gapEnd(next, newest, has, name)
	return c
}

// gapEnd finds, from the missing segment first on, the last missing one
// and the first present after it (up to newest).
func gapEnd(first, newest uint64, has func(uint64) (uint32, bool), name func(uint64) string) (to, resume string) {
	for n := first + 1; n <= newest; n++ {
		if _, ok := has(n); ok {
			return name(n - 1), name(n)
		}
	}
	return name(max(first, newest)), ""
}
