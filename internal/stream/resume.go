package stream

import (
	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// Resume is where streaming (re)starts, from what the repository holds.
type Resume struct {
	// TLI is the timeline to ask the server for; SegNo the segment to
	// start at (streaming starts at its first byte, as pg_receivewal and
	// a standby's walreceiver do).
	TLI   wal.TimeLineID
	SegNo uint64
	// Stored is how many bytes of that segment the repository already
	// holds in streamed pieces: they are received again but not stored
	// again.
	Stored uint64
	// Empty: the repository holds no WAL on the server's history; the
	// caller chooses where to start (the slot's restart_lsn).
	Empty bool
}

// ResumePoint computes where streaming resumes for a server on timeline
// serverTLI with history hist (its ancestors and their switch points):
// after the newest segment on the server's history that the repository
// holds complete (whole, or in streamed pieces), counting a segment only on
// the timeline that holds its last byte on that history (the segment a
// switch happened in belongs to the new timeline: the old one's copy ends
// at the switch point). It is a pure function of the WAL index.
func ResumePoint(ix *catalog.WALIndex, serverTLI wal.TimeLineID, hist []wal.HistoryEntry) Resume {
	segSize := ix.SegSize
	on := func(lsn wal.LSN) wal.TimeLineID { return wal.TimelineOfLSN(hist, serverTLI, lsn) }
	onPath := func(t uint32) bool {
		if t == uint32(serverTLI) {
			return true
		}
		for _, e := range hist {
			if uint32(e.TLI) == t {
				return true
			}
		}
		return false
	}
	best, found := uint64(0), false
	for _, t := range ix.Timelines {
		if !onPath(t.Timeline) {
			continue
		}
		nos := t.Nos()
		for i := len(nos) - 1; i >= 0; i-- {
			no := nos[i]
			if found && no <= best {
				break
			}
			if t.HasComplete(no) && uint32(on(wal.SegmentStartLSN(no+1, segSize)-1)) == t.Timeline {
				best, found = no, true
				break
			}
		}
	}
	if !found {
		// Nothing complete: the first segment the agent began, in part.
		for _, t := range ix.Timelines {
			if !onPath(t.Timeline) {
				continue
			}
			for _, no := range t.Nos() {
				if s := t.StreamedAt(no); s != nil && uint32(on(wal.SegmentStartLSN(no+1, segSize)-1)) == t.Timeline {
					return Resume{TLI: wal.TimeLineID(t.Timeline), SegNo: no, Stored: s.End}
				}
			}
		}
		return Resume{Empty: true}
	}
	next := best + 1
	tli := on(wal.SegmentStartLSN(next+1, segSize) - 1)
	r := Resume{TLI: tli, SegNo: next}
	if s := ix.Timeline(uint32(tli)).StreamedAt(next); s != nil {
		r.Stored = s.End
	}
	return r
}
