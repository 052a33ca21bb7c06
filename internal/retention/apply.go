package retention

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// Gather turns what the repository holds (cat, from catalog.Load) into the
// planner's input. It reads the start marker of each incomplete backup, to
// know what WAL a backup that may still run needs.
func Gather(ctx context.Context, r *repo.Repo, cat *catalog.Catalog, now time.Time) (Input, error) {
	in := Input{Now: now, SegSize: cat.Identity.WalSegSize}
	for _, e := range cat.Incomplete() {
		inc := Incomplete{ID: e.ID, LastWrite: e.Modified}
		if e.Started {
			s, err := catalog.ReadStarted(ctx, r, e.ID)
			switch {
			case err == nil:
				inc.StartLSN, _ = wal.ParseLSN(s.StartLSN)
				inc.Timeline, inc.Parent = s.Timeline, s.Parent
			case errors.Is(err, storage.ErrNotFound), errors.Is(err, envelope.ErrCorrupt), errors.Is(err, envelope.ErrEncrypted):
				// Unknown start (gone, damaged, or encrypted by an older
				// pgkeep): the planner keeps all WAL while it may run.
			default:
				return Input{}, err
			}
		}
		in.Incomplete = append(in.Incomplete, inc)
	}
	for _, m := range cat.Backups {
		e, _ := cat.Entry(m.ID)
		in.Backups = append(in.Backups, Backup{ID: m.ID, Timeline: m.Timeline, StartLSN: m.Start(), StopTime: m.StopTime, Pinned: e.Pinned, DependsOn: m.DependsOn()})
	}
	for _, s := range cat.Summaries {
		seg, err := wal.ParseSegmentName(s.Segment, in.SegSize)
		if err != nil {
			continue
		}
		in.Summaries = append(in.Summaries, WALFile{Name: s.Segment, Timeline: uint32(seg.TLI), SegNo: seg.No, Kind: wal.KindSegment})
	}
	for _, o := range cat.WAL.Objects {
		if o.Stray {
			continue
		}
		if o.Piece != nil {
			seg, err := wal.ParseSegmentName(o.Piece.Segment, in.SegSize)
			if err != nil {
				continue
			}
			whole := cat.WAL.Timeline(uint32(seg.TLI)).Has(seg.No)
			in.Pieces = append(in.Pieces, Piece{Name: o.Name, Timeline: uint32(seg.TLI), SegNo: seg.No, Whole: whole})
			continue
		}
		f := WALFile{Name: o.Name, Kind: o.Kind, Timeline: uint32(wal.TimelineOf(o.Name))}
		if o.Kind != wal.KindTimelineHistory {
			seg, err := wal.ParseSegmentName(o.Name[:24], in.SegSize)
			if err != nil {
				continue
			}
			f.SegNo = seg.No
		}
		in.WAL = append(in.WAL, f)
	}
	return in, nil
}

// Apply carries out a plan. The order makes every interruption safe:
// expired backups go newest first (an incremental one before the backups
// it needs), each one's completion record first (repo.DeleteBackup: it
// stops being restorable before anything it needs is touched), then its
// other objects; then the WAL no kept backup needs, and its summaries. A rerun finishes what an
// interrupted run began: backups without a record are garbage, and the WAL
// rule is recomputed.
func Apply(ctx context.Context, r *repo.Repo, p *Plan, log func(string, ...any)) error {
	for _, d := range p.Expire {
		if err := r.DeleteBackup(ctx, d.ID); err != nil {
			return fmt.Errorf("expiring backup %s: %w", d.ID, err)
		}
		log("expired backup %s", d.ID)
	}
	for _, id := range p.Garbage {
		if err := r.DeleteBackup(ctx, id); err != nil {
			return fmt.Errorf("removing interrupted backup %s: %w", id, err)
		}
		log("removed interrupted backup %s", id)
	}
	for _, name := range p.DeleteWAL {
		if err := r.Delete(ctx, repo.WAL(name)); err != nil {
			return fmt.Errorf("removing WAL: %w", err)
		}
	}
	if len(p.DeleteWAL) > 0 {
		log("removed %d WAL files", len(p.DeleteWAL))
	}
	for _, name := range p.DeletePieces {
		pc, ok := repo.ParsePiece(name)
		if !ok {
			return fmt.Errorf("removing streamed piece %q: not a piece name", name)
		}
		if err := r.Delete(ctx, repo.StreamedPiece(pc)); err != nil {
			return fmt.Errorf("removing streamed pieces: %w", err)
		}
	}
	if len(p.DeletePieces) > 0 {
		log("removed %d streamed pieces", len(p.DeletePieces))
	}
	for _, name := range p.DeleteSummaries {
		if err := r.Delete(ctx, repo.Summary(name)); err != nil {
			return fmt.Errorf("removing WAL summaries: %w", err)
		}
	}
	return nil
}
