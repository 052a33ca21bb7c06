// Package retention decides what expire removes (Plan, a pure function)
// and removes it (Apply) in an order that is safe to interrupt.
package retention

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pgkeep/pgkeep/internal/wal"
)

// Policy says what to keep. At least one of KeepCount and KeepWithin must
// be set.
type Policy struct {
	// KeepCount keeps the newest N complete backups.
	KeepCount int
	// KeepWithin keeps every moment of the last KeepWithin restorable.
	KeepWithin time.Duration
	// GarbageAge is how long an incomplete backup may stay untouched
	// before it counts as interrupted and is removed.
	GarbageAge time.Duration
}

// Backup is what the planner knows of a complete backup.
type Backup struct {
	ID       string
	Timeline uint32
	StartLSN wal.LSN
	StopTime time.Time
	Pinned   bool
	// DependsOn are the backups an incremental backup needs: its parent
	// and every backup whose data objects it refers to.
	DependsOn []string
}

// Incomplete is a backup id without a completion record.
type Incomplete struct {
	ID        string
	StartLSN  wal.LSN // 0 if unknown (no started.json)
	Timeline  uint32
	LastWrite time.Time
	Parent    string // the backup it builds on, for an incremental one
}

// WALFile is an archived WAL file the planner may remove.
type WALFile struct {
	Name     string
	Timeline uint32
	SegNo    uint64
	Kind     wal.Kind
}

// Piece is a streamed piece the planner may remove.
type Piece struct {
	Name     string // as repo.Piece.String() names it
	Timeline uint32
	SegNo    uint64
	// Whole: its segment is stored whole, so the piece is garbage.
	Whole bool
}

// Input is everything the planner looks at.
type Input struct {
	Now        time.Time
	SegSize    uint64
	Backups    []Backup // complete, any order
	Incomplete []Incomplete
	WAL        []WALFile
	// Summaries are the segments that have a WAL summary (Name, Timeline
	// and SegNo set); they go with their segments.
	Summaries []WALFile
	Pieces    []Piece
}

// Plan is what expire will do, and why it keeps what it keeps.
type Plan struct {
	Keep       []Decision `json:"keep"`
	Expire     []Decision `json:"expire"`
	Garbage    []string   `json:"garbage_backups"`
	InProgress []string   `json:"in_progress_backups"`
	DeleteWAL  []string   `json:"delete_wal"`
	// DeletePieces are streamed pieces: of segments stored whole, or that
	// no kept backup needs.
	DeletePieces []string `json:"delete_streamed_pieces"`
	KeptWALFrom  []string `json:"kept_wal_from"` // per timeline: first kept segment
	// DeleteSummaries are the segments whose WAL summaries go.
	DeleteSummaries []string `json:"delete_summaries"`
}

// Decision is a backup and the reason for what happens to it.
type Decision struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
	// DependsOn are the backups this one needs (incremental backups).
	DependsOn []string `json:"depends_on,omitempty"`
}

// walFloor is the oldest WAL some kept or running backup needs: segments
// on timeline >= tli with number >= segNo.
type walFloor struct {
	tli   uint32
	segNo uint64
}

// MakePlan computes the plan. It never expires the newest complete backup,
// a pinned one, a backup a kept or in-progress one depends on (the whole
// chain of an incremental backup: pinning one protects its chain), or WAL
// that a kept or in-progress backup needs for recovery to the end of the
// archive. Timeline history files always stay. Expired backups are listed
// newest first, the order Apply removes them in: an incremental backup
// goes before the backups it needs.
func MakePlan(in Input, p Policy) (*Plan, error) {
	if p.KeepCount <= 0 && p.KeepWithin <= 0 {
		return nil, errors.New("give a retention policy: --keep N and/or --keep-within DURATION")
	}
	backups := append([]Backup(nil), in.Backups...)
	sort.Slice(backups, func(i, j int) bool { return backups[i].ID < backups[j].ID })
	plan := &Plan{Keep: []Decision{}, Expire: []Decision{}, Garbage: []string{}, InProgress: []string{}, DeleteWAL: []string{}, DeletePieces: []string{}, KeptWALFrom: []string{}, DeleteSummaries: []string{}}
	// The pieces of a segment stored whole are garbage, whatever the
	// backups; the others follow the WAL rule below.
	var pieces []Piece
	for _, pc := range in.Pieces {
		if pc.Whole {
			plan.DeletePieces = append(plan.DeletePieces, pc.Name)
		} else {
			pieces = append(pieces, pc)
		}
	}
	defer func() { sort.Strings(plan.DeletePieces) }()

	reasons := make([]string, len(backups))
	add := func(i int, why string) {
		if reasons[i] == "" {
			reasons[i] = why
		} else {
			reasons[i] += "; " + why
		}
	}
	n := len(backups)
	for i := range backups {
		if i == n-1 {
			add(i, "newest backup")
		}
		if p.KeepCount > 0 && i >= n-p.KeepCount {
			add(i, fmt.Sprintf("one of the newest %d", p.KeepCount))
		}
		if backups[i].Pinned {
			add(i, "pinned")
		}
	}
	if p.KeepWithin > 0 {
		edge := in.Now.Add(-p.KeepWithin)
		base := -1 // the newest backup that finished at or before the window's start
		for i, b := range backups {
			if !b.StopTime.After(edge) {
				base = i
			} else {
				add(i, "finished inside the recovery window")
			}
		}
		if base >= 0 {
			add(base, "needed to restore the start of the recovery window")
		}
	}

	// What kept backups and backups in progress depend on is kept too,
	// newest first, so that the chain is followed to its full backup.
	index := map[string]int{}
	for i, b := range backups {
		index[b.ID] = i
	}
	needs := func(by, why string, deps []string) {
		for _, d := range deps {
			if i, ok := index[d]; ok {
				add(i, fmt.Sprintf("%s %s depends on it", why, by))
			}
		}
	}
	var running []Incomplete
	for _, inc := range in.Incomplete {
		if in.Now.Sub(inc.LastWrite) >= p.GarbageAge {
			plan.Garbage = append(plan.Garbage, inc.ID)
			continue
		}
		running = append(running, inc)
		if inc.Parent != "" {
			needs(inc.ID, "incremental backup in progress", []string{inc.Parent})
		}
	}
	for i := len(backups) - 1; i >= 0; i-- {
		if reasons[i] != "" {
			needs(backups[i].ID, "kept incremental backup", backups[i].DependsOn)
		}
	}

	var floors []walFloor
	for i, b := range backups {
		if reasons[i] != "" {
			plan.Keep = append(plan.Keep, Decision{ID: b.ID, Reason: reasons[i], DependsOn: b.DependsOn})
			floors = append(floors, walFloor{b.Timeline, wal.SegmentOf(b.StartLSN, in.SegSize)})
		}
	}
	for i := len(backups) - 1; i >= 0; i-- {
		if reasons[i] == "" {
			plan.Expire = append(plan.Expire, Decision{ID: backups[i].ID, Reason: "outside the retention policy", DependsOn: backups[i].DependsOn})
		}
	}
	for _, inc := range running {
		plan.InProgress = append(plan.InProgress, inc.ID)
		if inc.StartLSN == 0 {
			// We do not know where it started: keep all WAL.
			floors = append(floors, walFloor{0, 0})
		} else {
			floors = append(floors, walFloor{inc.Timeline, wal.SegmentOf(inc.StartLSN, in.SegSize)})
		}
	}
	if len(floors) == 0 {
		return plan, nil // no backups at all: nothing makes WAL removable
	}

	neededSeg := func(tli uint32, segNo uint64) bool {
		for _, fl := range floors {
			if tli >= fl.tli && segNo >= fl.segNo {
				return true
			}
		}
		return false
	}
	needed := func(f WALFile) bool {
		return f.Kind == wal.KindTimelineHistory || neededSeg(f.Timeline, f.SegNo)
	}
	for _, pc := range pieces {
		if !neededSeg(pc.Timeline, pc.SegNo) {
			plan.DeletePieces = append(plan.DeletePieces, pc.Name)
		}
	}
	firstKept := map[uint32]string{}
	for _, f := range in.WAL {
		if needed(f) {
			if f.Kind == wal.KindSegment {
				if cur, ok := firstKept[f.Timeline]; !ok || f.Name < cur {
					firstKept[f.Timeline] = f.Name
				}
			}
			continue
		}
		plan.DeleteWAL = append(plan.DeleteWAL, f.Name)
	}
	sort.Strings(plan.DeleteWAL)
	for _, f := range in.Summaries {
		if !needed(f) {
			plan.DeleteSummaries = append(plan.DeleteSummaries, f.Name)
		}
	}
	sort.Strings(plan.DeleteSummaries)
	for _, name := range firstKept {
		plan.KeptWALFrom = append(plan.KeptWALFrom, name)
	}
	sort.Strings(plan.KeptWALFrom)
	return plan, nil
}

// String renders the plan for --dry-run.
func (p *Plan) String() string {
	var b strings.Builder
	deps := func(d Decision) string {
		if len(d.DependsOn) == 0 {
			return ""
		}
		return " (incremental: needs " + strings.Join(d.DependsOn, ", ") + ")"
	}
	for _, d := range p.Keep {
		fmt.Fprintf(&b, "keep     backup %s%s: %s\n", d.ID, deps(d), d.Reason)
	}
	for _, d := range p.Expire {
		fmt.Fprintf(&b, "expire   backup %s%s: %s\n", d.ID, deps(d), d.Reason)
	}
	for _, id := range p.InProgress {
		fmt.Fprintf(&b, "keep     incomplete backup %s: may still be running\n", id)
	}
	for _, id := range p.Garbage {
		fmt.Fprintf(&b, "remove   incomplete backup %s: interrupted\n", id)
	}
	if len(p.DeleteWAL) > 0 {
		fmt.Fprintf(&b, "remove   %d WAL files no kept backup needs (%s .. %s)\n", len(p.DeleteWAL), p.DeleteWAL[0], p.DeleteWAL[len(p.DeleteWAL)-1])
	} else {
		fmt.Fprintf(&b, "remove   no WAL\n")
	}
	if len(p.DeletePieces) > 0 {
		fmt.Fprintf(&b, "remove   %d streamed pieces (of segments stored whole, or that no kept backup needs)\n", len(p.DeletePieces))
	}
	for _, k := range p.KeptWALFrom {
		fmt.Fprintf(&b, "keep     WAL from %s on\n", k)
	}
	return b.String()
}
