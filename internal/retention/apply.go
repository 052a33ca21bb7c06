package retention

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// PinKey marks a backup as pinned: it exists or it does not; pinning and
// unpinning create and delete it, never rewrite anything.
func PinKey(id string) string { return catalog.Prefix + id + "/pinned" }

// Gather reads what the planner needs from the repository.
func Gather(ctx context.Context, r *repo.Repo, now time.Time) (Input, error) {
	id, err := r.Identity(ctx)
	if err != nil {
		return Input{}, err
	}
	in := Input{Now: now, SegSize: id.WalSegSize}
	entries, err := catalog.Scan(ctx, r.Storage())
	if err != nil {
		return Input{}, err
	}
	for _, e := range entries {
		if !e.Complete {
			inc := Incomplete{ID: e.ID, LastWrite: e.Modified}
			s, err := catalog.ReadStarted(ctx, r, e.ID)
			switch {
			case err == nil:
				inc.StartLSN, _ = wal.ParseLSN(s.StartLSN)
				inc.Timeline = s.Timeline
			case errors.Is(err, storage.ErrNotFound), errors.Is(err, envelope.ErrCorrupt), errors.Is(err, envelope.ErrEncrypted):
				// Unknown start (none, damaged, or encrypted by an older
				// pgkeep): the planner keeps all WAL while it may run.
			default:
				return Input{}, err
			}
			in.Incomplete = append(in.Incomplete, inc)
			continue
		}
		m, err := catalog.ReadManifest(ctx, r, e.ID)
		if err != nil {
			return Input{}, err
		}
		_, err = r.Storage().Stat(ctx, PinKey(e.ID))
		pinned := err == nil
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return Input{}, err
		}
		in.Backups = append(in.Backups, Backup{ID: m.ID, Timeline: m.Timeline, StartLSN: m.Start(), StopTime: m.StopTime, Pinned: pinned})
	}
	err = r.Storage().List(ctx, repo.WALPrefix, func(oi storage.ObjectInfo) error {
		name := oi.Key[strings.LastIndex(oi.Key, "/")+1:]
		kind, err := wal.Classify(name)
		if err != nil {
			return nil
		}
		f := WALFile{Key: oi.Key, Name: name, Kind: kind, Timeline: uint32(wal.TimelineOf(name))}
		if kind != wal.KindTimelineHistory {
			seg, err := wal.ParseSegmentName(name[:24], id.WalSegSize)
			if err != nil {
				return nil
			}
			f.SegNo = seg.No
		}
		in.WAL = append(in.WAL, f)
		return nil
	})
	if err != nil {
		return Input{}, fmt.Errorf("listing WAL: %w", err)
	}
	return in, nil
}

// Apply carries out a plan. The order makes every interruption safe: a
// backup's completion record goes first (it stops being restorable before
// anything it needs is touched), then its other objects, then the WAL no
// kept backup needs. A rerun finishes what an interrupted run began:
// backups without a record are garbage, and the WAL rule is recomputed.
func Apply(ctx context.Context, r *repo.Repo, p *Plan, log func(string, ...any)) error {
	st := r.Storage()
	for _, d := range p.Expire {
		if err := st.Delete(ctx, catalog.ManifestKey(d.ID)); err != nil {
			return fmt.Errorf("expiring backup %s: %w", d.ID, err)
		}
		if err := deletePrefix(ctx, st, catalog.Prefix+d.ID+"/"); err != nil {
			return fmt.Errorf("expiring backup %s: %w", d.ID, err)
		}
		log("expired backup %s", d.ID)
	}
	for _, id := range p.Garbage {
		if err := deletePrefix(ctx, st, catalog.Prefix+id+"/"); err != nil {
			return fmt.Errorf("removing interrupted backup %s: %w", id, err)
		}
		log("removed interrupted backup %s", id)
	}
	for _, key := range p.DeleteWAL {
		if err := st.Delete(ctx, key); err != nil {
			return fmt.Errorf("removing WAL %s: %w", key, err)
		}
	}
	if len(p.DeleteWAL) > 0 {
		log("removed %d WAL files", len(p.DeleteWAL))
	}
	return nil
}

func deletePrefix(ctx context.Context, st storage.Storage, prefix string) error {
	var keys []string
	if err := st.List(ctx, prefix, func(oi storage.ObjectInfo) error { keys = append(keys, oi.Key); return nil }); err != nil {
		return err
	}
	for _, k := range keys {
		if err := st.Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}
