package catalog

import (
	"sort"
	"strings"
	"time"

	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// Gap is a run of missing segments on a timeline, inclusive.
type Gap struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// TimelineWAL is the WAL the repository holds on one timeline.
type TimelineWAL struct {
	Timeline uint32    `json:"timeline"`
	First    string    `json:"first"`
	Last     string    `json:"last"`
	Segments int       `json:"segments"`
	Gaps     []Gap     `json:"gaps"`
	Partial  []string  `json:"partial,omitempty"`
	Newest   time.Time `json:"newest_archived_at"`
	Bytes    int64     `json:"stored_bytes"`
	// Streamed are the segments the agent has streamed pieces of and that
	// are not stored whole: the streamed end of the archive (and, after a
	// timeline switch, the partial last segment of the timeline left).
	Streamed []*StreamedSegment `json:"streamed,omitempty"`
	// GarbagePieces counts the pieces of segments stored whole: expire
	// removes them.
	GarbagePieces int `json:"garbage_pieces,omitempty"`

	segs        map[uint64]time.Time // segment number -> when it was archived
	streams     map[uint64]*StreamedSegment
	first, last uint64
	segSize     uint64
}

// WALIndex summarises the archived WAL.
type WALIndex struct {
	SegSize   uint64         `json:"wal_segment_size"`
	Timelines []*TimelineWAL `json:"timelines"`
	Histories []string       `json:"history_files"`
	Backups   []string       `json:"backup_history_files,omitempty"`
	Bytes     int64          `json:"stored_bytes"`
	Newest    time.Time      `json:"newest_archived_at"`
	// Objects are every object listed under wal/, strays included.
	Objects []repo.WALObject `json:"-"`
}

// IndexWAL builds the index of the archived WAL files objs (as
// repo.ListWAL or repo.Scan list them).
func IndexWAL(objs []repo.WALObject, segSize uint64) *WALIndex {
	ix := &WALIndex{SegSize: segSize, Objects: objs}
	byTLI := map[uint32]*TimelineWAL{}
	get := func(tli uint32) *TimelineWAL {
		t := byTLI[tli]
		if t == nil {
			t = NewTimelineWAL(tli, segSize)
			byTLI[tli] = t
		}
		return t
	}
	for _, o := range objs {
		if o.Stray {
			continue // not ours; verify reports strays
		}
		ix.Bytes += o.Size
		if o.ModTime.After(ix.Newest) {
			ix.Newest = o.ModTime
		}
		if o.Piece != nil {
			seg, err := wal.ParseSegmentName(o.Piece.Segment, segSize)
			if err == nil && o.Piece.End <= segSize {
				t := get(uint32(seg.TLI))
				t.AddPiece(seg.No, *o.Piece, o.ModTime)
				t.Bytes += o.Size
			}
			continue
		}
		switch o.Kind {
		case wal.KindTimelineHistory:
			ix.Histories = append(ix.Histories, o.Name)
		case wal.KindBackupHistory:
			ix.Backups = append(ix.Backups, o.Name)
		case wal.KindPartial:
			seg, err := wal.ParseSegmentName(strings.TrimSuffix(o.Name, ".partial"), segSize)
			if err == nil {
				get(uint32(seg.TLI)).Partial = append(get(uint32(seg.TLI)).Partial, o.Name)
			}
		case wal.KindSegment:
			seg, err := wal.ParseSegmentName(o.Name, segSize)
			if err != nil {
				continue
			}
			t := get(uint32(seg.TLI))
			t.Add(seg.No, o.ModTime)
			t.Bytes += o.Size
		}
	}
	for _, t := range byTLI {
		t.computeStreamed()
		t.computeGaps()
		ix.Timelines = append(ix.Timelines, t)
	}
	sort.Slice(ix.Timelines, func(i, j int) bool { return ix.Timelines[i].Timeline < ix.Timelines[j].Timeline })
	return ix
}

// Timeline returns the WAL on tli, or nil.
func (ix *WALIndex) Timeline(tli uint32) *TimelineWAL {
	for _, t := range ix.Timelines {
		if t.Timeline == tli {
			return t
		}
	}
	return nil
}

// Has reports whether segment no is archived on this timeline.
func (t *TimelineWAL) Has(no uint64) bool {
	if t == nil {
		return false
	}
	_, ok := t.segs[no]
	return ok
}

// ArchivedAt returns when segment no was stored (zero if it is not).
func (t *TimelineWAL) ArchivedAt(no uint64) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.segs[no]
}

// LastNo returns the number of the newest segment; ok is false for a
// timeline without segments.
func (t *TimelineWAL) LastNo() (no uint64, ok bool) {
	if t == nil || t.Segments == 0 {
		return 0, false
	}
	return t.last, true
}

// NewTimelineWAL returns an empty TimelineWAL (for building indexes in
// tests and tools); Add fills it.
func NewTimelineWAL(tli uint32, segSize uint64) *TimelineWAL {
	return &TimelineWAL{Timeline: tli, segs: map[uint64]time.Time{}, streams: map[uint64]*StreamedSegment{}, segSize: segSize}
}

// Add records segment no, archived at t.
func (t *TimelineWAL) Add(no uint64, at time.Time) {
	if _, ok := t.segs[no]; ok {
		return
	}
	t.segs[no] = at
	t.Segments++
	if at.After(t.Newest) {
		t.Newest = at
	}
	tli := wal.TimeLineID(t.Timeline)
	if t.Segments == 1 || no < t.first {
		t.first = no
		t.First = wal.SegmentName(tli, no, t.segSize)
	}
	if no > t.last || t.Segments == 1 {
		t.last = no
		t.Last = wal.SegmentName(tli, no, t.segSize)
	}
}

// computeGaps fills Gaps from the recorded segments.
func (t *TimelineWAL) computeGaps() {
	nos := make([]uint64, 0, len(t.segs))
	for n := range t.segs {
		nos = append(nos, n)
	}
	last, _ := t.LastAnyNo()
	for n, st := range t.streams {
		// Complete in streamed pieces, or the streamed tail.
		if !st.Whole && (st.Complete(t.segSize) || n == last) {
			nos = append(nos, n)
		}
	}
	sort.Slice(nos, func(i, j int) bool { return nos[i] < nos[j] })
	t.Gaps = []Gap{}
	tli := wal.TimeLineID(t.Timeline)
	for i := 1; i < len(nos); i++ {
		if nos[i] != nos[i-1]+1 {
			t.Gaps = append(t.Gaps, Gap{From: wal.SegmentName(tli, nos[i-1]+1, t.segSize), To: wal.SegmentName(tli, nos[i]-1, t.segSize)})
		}
	}
}

// StreamedSegment is what the repository holds of one segment in streamed
// pieces (docs/design.md §17).
type StreamedSegment struct {
	Segment string `json:"segment"`
	// End is how far the pieces tile the segment from offset 0 without a
	// hole: the bytes [0, End) are stored.
	End uint64 `json:"streamed_to_offset"`
	// EndLSN is the LSN just past the streamed bytes.
	EndLSN string `json:"streamed_to_lsn"`
	// Hole is set when pieces lie beyond End: the bytes [End, HoleEnd)
	// are missing between streamed pieces.
	Hole    bool   `json:"hole,omitempty"`
	HoleEnd uint64 `json:"hole_to_offset,omitempty"`
	// Whole reports that the segment is also stored whole (the pieces are
	// garbage).
	Whole  bool         `json:"-"`
	Pieces []repo.Piece `json:"-"`
	// Newest is when the newest piece was stored.
	Newest time.Time `json:"newest_stored_at"`
	No     uint64    `json:"-"`
	Stored int64     `json:"stored_bytes"`
}

// Complete reports whether the pieces tile the whole segment.
func (s *StreamedSegment) Complete(segSize uint64) bool {
	return s != nil && !s.Hole && s.End >= segSize
}

// AddPiece records a streamed piece of segment no, stored at t.
func (t *TimelineWAL) AddPiece(no uint64, p repo.Piece, at time.Time) {
	s := t.streams[no]
	if s == nil {
		s = &StreamedSegment{Segment: p.Segment, No: no}
		t.streams[no] = s
	}
	s.Pieces = append(s.Pieces, p)
	if at.After(s.Newest) {
		s.Newest = at
	}
	if at.After(t.Newest) {
		t.Newest = at
	}
}

// Tile returns how far pieces tile a segment from offset 0 ([0, end) is
// covered), and, when pieces lie beyond that, the first offset past the
// hole. Overlapping pieces are accepted: on one timeline the WAL at a
// position never changes, so overlaps hold the same bytes.
func Tile(pieces []repo.Piece) (end uint64, hole bool, holeEnd uint64) {
	ps := append([]repo.Piece(nil), pieces...)
	sort.Slice(ps, func(i, j int) bool {
		if ps[i].Start != ps[j].Start {
			return ps[i].Start < ps[j].Start
		}
		return ps[i].End > ps[j].End
	})
	for _, p := range ps {
		if p.Start > end {
			return end, true, p.Start
		}
		end = max(end, p.End)
	}
	return end, false, 0
}

// computeStreamed sorts out the streamed segments once every object is in.
func (t *TimelineWAL) computeStreamed() {
	t.Streamed = nil
	t.GarbagePieces = 0
	nos := make([]uint64, 0, len(t.streams))
	for no, s := range t.streams {
		s.End, s.Hole, s.HoleEnd = Tile(s.Pieces)
		s.EndLSN = (wal.SegmentStartLSN(no, t.segSize) + wal.LSN(s.End)).String()
		_, s.Whole = t.segs[no]
		if s.Whole {
			t.GarbagePieces += len(s.Pieces)
			continue
		}
		nos = append(nos, no)
	}
	sort.Slice(nos, func(i, j int) bool { return nos[i] < nos[j] })
	for _, no := range nos {
		t.Streamed = append(t.Streamed, t.streams[no])
	}
}

// StreamedAt returns the pieces of segment no, nil if there are none.
func (t *TimelineWAL) StreamedAt(no uint64) *StreamedSegment {
	if t == nil {
		return nil
	}
	return t.streams[no]
}

// HasAny reports whether any WAL of segment no is stored on this timeline,
// whole or in streamed pieces.
func (t *TimelineWAL) HasAny(no uint64) bool {
	if t == nil {
		return false
	}
	_, whole := t.segs[no]
	return whole || t.streams[no] != nil
}

// HasComplete reports whether segment no is stored whole, or complete in
// streamed pieces.
func (t *TimelineWAL) HasComplete(no uint64) bool {
	if t == nil {
		return false
	}
	if _, ok := t.segs[no]; ok {
		return true
	}
	return t.streams[no].Complete(t.segSize)
}

// StoredAt returns when segment no was stored whole, else when its newest
// piece was (zero if neither).
func (t *TimelineWAL) StoredAt(no uint64) time.Time {
	if t == nil {
		return time.Time{}
	}
	if at, ok := t.segs[no]; ok {
		return at
	}
	if s := t.streams[no]; s != nil {
		return s.Newest
	}
	return time.Time{}
}

// LastAnyNo returns the newest segment of which any WAL is stored, whole
// or in pieces.
func (t *TimelineWAL) LastAnyNo() (no uint64, ok bool) {
	if t == nil {
		return 0, false
	}
	no, ok = t.LastNo()
	for n := range t.streams {
		if !ok || n > no {
			no, ok = n, true
		}
	}
	return no, ok
}

// StreamedEnd is the newest streamed WAL in the repository.
type StreamedEnd struct {
	Timeline uint32
	Segment  string
	LSN      wal.LSN   // just past the streamed bytes
	At       time.Time // when the newest piece was stored
}

// Streamed returns the end of the newest streamed piece run, on the
// newest timeline that has pieces (ok false: no pieces at all, or only
// pieces of segments stored whole).
func (ix *WALIndex) Streamed() (StreamedEnd, bool) {
	var best StreamedEnd
	found := false
	for _, t := range ix.Timelines {
		for _, s := range t.streams {
			end := wal.SegmentStartLSN(s.No, ix.SegSize) + wal.LSN(s.End)
			if s.Whole {
				end = wal.SegmentStartLSN(s.No+1, ix.SegSize)
			}
			if !found || t.Timeline > best.Timeline || (t.Timeline == best.Timeline && end > best.LSN) {
				best, found = StreamedEnd{Timeline: t.Timeline, Segment: s.Segment, LSN: end, At: s.Newest}, true
			}
		}
	}
	return best, found
}

// Nos returns, in order, the segments of which any WAL is stored on this
// timeline, whole or in streamed pieces.
func (t *TimelineWAL) Nos() []uint64 {
	if t == nil {
		return nil
	}
	nos := make([]uint64, 0, len(t.segs)+len(t.streams))
	for n := range t.segs {
		nos = append(nos, n)
	}
	for n := range t.streams {
		if _, ok := t.segs[n]; !ok {
			nos = append(nos, n)
		}
	}
	sort.Slice(nos, func(i, j int) bool { return nos[i] < nos[j] })
	return nos
}
