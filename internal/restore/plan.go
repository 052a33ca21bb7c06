// Package restore rebuilds a data directory from a backup and writes the
// recovery settings that make PostgreSQL fetch and replay the archived WAL,
// to the end of the archive or to a target.
package restore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/wal"
	"github.com/pgkeep/pgkeep/internal/walarchive"
	"github.com/pgkeep/pgkeep/internal/walrec"
)

// Target says where recovery stops. At most one of Time, LSN, XID, Name
// and Immediate is set; none means the end of the archive.
type Target struct {
	Time      *time.Time
	LSN       *wal.LSN
	XID       string
	Name      string
	Immediate bool
	// Action after reaching a target: promote, pause or shutdown.
	Action string
	// Timeline to recover along: "latest" (default), "current" or a number.
	Timeline string
}

// IsSet reports whether a target other than the end of the archive is set.
func (t Target) IsSet() bool {
	return t.Time != nil || t.LSN != nil || t.XID != "" || t.Name != "" || t.Immediate
}

// Validate checks that at most one target is given and the action is known.
func (t Target) Validate() error {
	n := 0
	for _, set := range []bool{t.Time != nil, t.LSN != nil, t.XID != "", t.Name != "", t.Immediate} {
		if set {
			n++
		}
	}
	if n > 1 {
		return errors.New("give at most one of --target-time, --target-lsn, --target-xid, --target-name, --target-immediate")
	}
	switch t.Action {
	case "", "promote", "pause", "shutdown":
	default:
		return fmt.Errorf("--target-action %q: choose promote, pause or shutdown", t.Action)
	}
	if t.Action != "" && n == 0 {
		return errors.New("--target-action needs a target (--target-time, --target-lsn, --target-xid, --target-name or --target-immediate)")
	}
	return nil
}

// ErrUnreachable means the target lies outside what the repository can
// restore.
var ErrUnreachable = errors.New("target cannot be reached")

// ChooseBackup picks the backup to restore from the complete backups
// (oldest first), checks that its WAL is there and that the target is
// reachable with the WAL in ix, and returns the chain of WAL recovery will
// follow. A gap on that chain is for CheckGap to judge. It is a pure
// function.
//
//   - backupID set: that backup;
//   - a time target: the latest backup that finished at or before it;
//   - an LSN target: the latest backup that stopped at or before it;
//   - otherwise: the latest backup.
func ChooseBackup(backups []*catalog.Manifest, ix *catalog.WALIndex, h catalog.Histories, backupID string, t Target) (*catalog.Manifest, catalog.Chain, error) {
	var c catalog.Chain
	if len(backups) == 0 {
		return nil, c, errors.New("the repository has no complete backup to restore; take one with 'pgkeep backup'")
	}
	var chosen *catalog.Manifest
	switch {
	case backupID != "":
		for _, b := range backups {
			if b.ID == backupID {
				chosen = b
			}
		}
		if chosen == nil {
			return nil, c, fmt.Errorf("%w: %s (complete backups: %s)", catalog.ErrNoSuchBackup, backupID, ids(backups))
		}
	case t.Time != nil:
		for _, b := range backups {
			if !b.StopTime.After(*t.Time) {
				chosen = b
			}
		}
		if chosen == nil {
			return nil, c, fmt.Errorf("%w: target time %s is before the earliest restorable moment %s (when backup %s finished)",
				ErrUnreachable, t.Time.UTC().Format(time.RFC3339), backups[0].StopTime.UTC().Format(time.RFC3339), backups[0].ID)
		}
	case t.LSN != nil:
		for _, b := range backups {
			if b.Stop() <= *t.LSN {
				chosen = b
			}
		}
		if chosen == nil {
			return nil, c, fmt.Errorf("%w: target LSN %s is before the earliest restorable LSN %s (where backup %s stopped)",
				ErrUnreachable, *t.LSN, backups[0].StopLSN, backups[0].ID)
		}
	default:
		chosen = backups[len(backups)-1]
	}

	target, err := t.timeline(chosen, h)
	if err != nil {
		return nil, c, err
	}
	// The WAL from the backup's start to its stop must be there (it was
	// verified when the backup completed; expiry or damage may have
	// removed it since), and the target must lie within what follows,
	// along the timelines recovery will follow.
	c = ix.ChainFrom(h, chosen.Timeline, chosen.Start(), target)
	if c.Last == "" || c.End < chosen.Stop() {
		return nil, c, fmt.Errorf("%w: backup %s needs WAL %s..%s, which is not all in the repository", ErrUnreachable, chosen.ID, chosen.StartWAL, chosen.StopWAL)
	}
	end := c.End
	newest := c.NewestAt
	reach := fmt.Sprintf("backup %s restores from %s (LSN %s) to the end of the archived WAL (LSN %s on timeline %d, archived by %s)",
		chosen.ID, chosen.StopTime.UTC().Format(time.RFC3339), chosen.StopLSN, end, c.Target, newest.UTC().Format(time.RFC3339))
	if t.Time != nil && t.Time.Before(chosen.StopTime) {
		return nil, c, fmt.Errorf("%w: target time %s is before backup %s finished; %s", ErrUnreachable, t.Time.UTC().Format(time.RFC3339), chosen.ID, reach)
	}
	if t.LSN != nil && *t.LSN < chosen.Stop() {
		return nil, c, fmt.Errorf("%w: target LSN %s is before backup %s stopped; %s", ErrUnreachable, *t.LSN, chosen.ID, reach)
	}
	if c.Missing != "" {
		return chosen, c, nil // a gap: only a target before it can be reached (CheckGap)
	}
	if t.Time != nil && t.Time.After(newest) {
		return nil, c, fmt.Errorf("%w: target time %s is past the end of the archived WAL; %s", ErrUnreachable, t.Time.UTC().Format(time.RFC3339), reach)
	}
	if t.LSN != nil && *t.LSN > end {
		return nil, c, fmt.Errorf("%w: target LSN %s is past the end of the archived WAL; %s", ErrUnreachable, *t.LSN, reach)
	}
	return chosen, c, nil
}

// ErrGap means the archive has a hole on the path recovery would replay:
// PostgreSQL would stop at it and, with no target, promote with everything
// after it lost.
var ErrGap = errors.New("the WAL archive has a gap")

// Edge is what the WAL itself says about the end of the path before a gap:
// read from the last segment before it (see ReadEdge).
type Edge struct {
	// LastRecord is where the last complete record before the gap starts:
	// the latest --target-lsn recovery can stop at (it stops after the
	// first record at or past the target, which must lie before the gap).
	// 0 when unknown.
	LastRecord wal.LSN
	// End is just past that record: how far recovery replays.
	End wal.LSN
	// LastMoment is the last commit or abort before the gap (nil: none
	// found in the segments read). A --target-time stops before the first
	// commit after it, so only a time before this one can be reached.
	LastMoment *walrec.Moment
}

// CheckGap judges a restore whose path from backup m has a gap (c.Missing):
// recovery would end at the gap and lose the WAL after it. Restoring to the
// end of the archive is refused, naming the gap, how far recovery could go
// and the way out. A target that recovery reaches before the gap restores
// up to it on purpose (accepted: the restore then ends the archive at the
// gap, see walarchive.ArchiveEndMarker):
//   - --target-lsn at or before the start of the last record before it;
//   - --target-time before the last commit or abort before it;
//   - --target-immediate (the backup's consistent point).
//
// A target by transaction id or restore point name is let through too:
// pgkeep cannot tell where it lies, and if it lies beyond the gap recovery
// ends before reaching it, which PostgreSQL 13 and later report as an error
// instead of promoting (on 12 the end marker is not written, and wal-fetch
// stops recovery at the gap).
func CheckGap(m *catalog.Manifest, c catalog.Chain, e Edge, t Target) (accepted bool, err error) {
	if c.Missing == "" {
		return false, nil
	}
	switch {
	case t.Immediate:
		return true, nil
	case t.XID != "" || t.Name != "":
		return m.PGMajor >= 13, nil
	case t.LSN != nil && e.LastRecord != 0 && *t.LSN <= e.LastRecord:
		return true, nil
	case t.Time != nil && e.LastMoment != nil && t.Time.Before(e.LastMoment.Time):
		return true, nil
	}
	reach := fmt.Sprintf("recovery could replay only to LSN %s", c.End)
	ways := fmt.Sprintf("--target-lsn %s or earlier", c.End)
	if e.LastRecord != 0 {
		reach = fmt.Sprintf("recovery could replay only to LSN %s", e.End)
		ways = fmt.Sprintf("--target-lsn %s or earlier (the last record before the gap)", e.LastRecord)
	}
	if e.LastMoment != nil {
		reach += fmt.Sprintf(", the last transaction before the gap ending at %s", e.LastMoment.Time.UTC().Format("2006-01-02 15:04:05.000000Z"))
		ways += fmt.Sprintf(", or a --target-time before %s", e.LastMoment.Time.UTC().Format("2006-01-02 15:04:05.000000Z"))
	} else if !c.LastAt.IsZero() {
		reach += fmt.Sprintf(" (WAL archived up to %s)", c.LastAt.UTC().Format(time.RFC3339))
	}
	after := "the WAL archived after it"
	if c.Resume != "" {
		after = fmt.Sprintf("the WAL from %s to %s", c.Resume, c.Newest)
	}
	what := "restore to the end of the archive"
	if t.IsSet() {
		what = "the target lies beyond the gap"
	}
	return false, fmt.Errorf("%w: %s..%s is missing on the path from backup %s, so %s; %s would be lost (%s). "+
		"Nothing was written. To restore up to the gap on purpose, give %s; or put the missing WAL back into the repository first",
		ErrGap, c.Missing, c.MissingTo, m.ID, reach, after, what, ways)
}

// timeline resolves --target-timeline for a restore of m: 0 for 'latest'
// (the newest timeline that descends from m's), m's own for 'current', or
// the number given, which must descend from m's timeline after its start.
func (t Target) timeline(m *catalog.Manifest, h catalog.Histories) (uint32, error) {
	switch t.Timeline {
	case "", "latest":
		return 0, nil
	case "current":
		return m.Timeline, nil
	}
	n, err := strconv.ParseUint(t.Timeline, 0, 32)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("--target-timeline %q: want latest, current or a timeline number", t.Timeline)
	}
	if !h.Descends(uint32(n), m.Timeline, m.Start()) {
		return 0, fmt.Errorf("%w: timeline %d does not descend from timeline %d of backup %s after its start (LSN %s)", ErrUnreachable, n, m.Timeline, m.ID, m.StartLSN)
	}
	return uint32(n), nil
}

func ids(backups []*catalog.Manifest) string {
	var s []string
	for _, b := range backups {
		s = append(s, b.ID)
	}
	return strings.Join(s, ", ")
}

// ReadEdge reads the last segments before the gap on chain c and finds
// where recovery stops: the last complete record and the last commit or
// abort (looking back up to edgeLookBack segments for one). major is the
// cluster's PostgreSQL major version. Segments the repository holds only
// in streamed pieces (ix) are read from their pieces.
func ReadEdge(ctx context.Context, r *repo.Repo, ix *catalog.WALIndex, c catalog.Chain, major int, segSize uint64) (Edge, error) {
	var e Edge
	if c.Last == "" {
		return e, nil
	}
	seg, err := wal.ParseSegmentName(c.Last, segSize)
	if err != nil {
		return e, err
	}
	for back := uint64(0); back < edgeLookBack && back <= seg.No; back++ {
		no := seg.No - back
		name := wal.SegmentName(seg.TLI, no, segSize)
		data, err := walarchive.ReadSegment(ctx, r, ix, name)
		if errors.Is(err, storage.ErrNotFound) && back > 0 {
			break // on another timeline further back: enough
		}
		if err != nil {
			return e, fmt.Errorf("reading %s, the last WAL before the gap: %w", name, err)
		}
		var last, moment *walrec.Record
		var m *walrec.Moment
		_, err = walrec.Segment(data, wal.SegmentStartLSN(no, segSize), func(rec *walrec.Record) error {
			if back == 0 {
				last = &walrec.Record{LSN: rec.LSN, End: rec.End}
			}
			mo, err := walrec.MomentOf(rec, major)
			if err == nil && mo != nil && mo.Kind != "restore point" {
				m, moment = mo, &walrec.Record{LSN: rec.LSN}
			}
			return nil
		})
		if err != nil {
			return e, fmt.Errorf("reading the records of %s: %w", name, err)
		}
		if back == 0 && last != nil {
			e.LastRecord, e.End = last.LSN, last.End
		}
		if moment != nil {
			e.LastMoment = m
			return e, nil
		}
	}
	return e, nil
}

// edgeLookBack bounds how many segments before a gap ReadEdge reads for a
// commit.
const edgeLookBack = 4
