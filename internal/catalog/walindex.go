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

	segs        map[uint64]time.Time // segment number -> when it was archived
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
	return &TimelineWAL{Timeline: tli, segs: map[uint64]time.Time{}, segSize: segSize}
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
	sort.Slice(nos, func(i, j int) bool { return nos[i] < nos[j] })
	t.Gaps = []Gap{}
	tli := wal.TimeLineID(t.Timeline)
	for i := 1; i < len(nos); i++ {
		if nos[i] != nos[i-1]+1 {
			t.Gaps = append(t.Gaps, Gap{From: wal.SegmentName(tli, nos[i-1]+1, t.segSize), To: wal.SegmentName(tli, nos[i]-1, t.segSize)})
		}
	}
}
