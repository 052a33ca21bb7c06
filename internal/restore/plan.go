// Package restore rebuilds a data directory from a backup and writes the
// recovery settings that make PostgreSQL fetch and replay the archived WAL,
// to the end of the archive or to a target.
package restore

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/wal"
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
// (oldest first) and checks that the target is reachable with the WAL in
// ix. It is a pure function.
//
//   - backupID set: that backup;
//   - a time target: the latest backup that finished at or before it;
//   - an LSN target: the latest backup that stopped at or before it;
//   - otherwise: the latest backup.
func ChooseBackup(backups []*catalog.Manifest, ix *catalog.WALIndex, h catalog.Histories, backupID string, t Target) (*catalog.Manifest, error) {
	if len(backups) == 0 {
		return nil, errors.New("the repository has no complete backup to restore; take one with 'pgkeep backup'")
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
			return nil, fmt.Errorf("%w: %s (complete backups: %s)", catalog.ErrNoSuchBackup, backupID, ids(backups))
		}
	case t.Time != nil:
		for _, b := range backups {
			if !b.StopTime.After(*t.Time) {
				chosen = b
			}
		}
		if chosen == nil {
			return nil, fmt.Errorf("%w: target time %s is before the earliest restorable moment %s (when backup %s finished)",
				ErrUnreachable, t.Time.UTC().Format(time.RFC3339), backups[0].StopTime.UTC().Format(time.RFC3339), backups[0].ID)
		}
	case t.LSN != nil:
		for _, b := range backups {
			if b.Stop() <= *t.LSN {
				chosen = b
			}
		}
		if chosen == nil {
			return nil, fmt.Errorf("%w: target LSN %s is before the earliest restorable LSN %s (where backup %s stopped)",
				ErrUnreachable, *t.LSN, backups[0].StopLSN, backups[0].ID)
		}
	default:
		chosen = backups[len(backups)-1]
	}

	// The WAL from the backup's start to its stop must be there (it was
	// verified when the backup completed; expiry or damage may have
	// removed it since), and the target must lie within what follows,
	// along the timelines recovery will follow.
	c := ix.ChainFrom(h, chosen.Timeline, chosen.Start())
	if c.Last == "" || c.End < chosen.Stop() {
		return nil, fmt.Errorf("%w: backup %s needs WAL %s..%s, which is not all in the repository", ErrUnreachable, chosen.ID, chosen.StartWAL, chosen.StopWAL)
	}
	end := c.End
	newest := c.NewestAt
	reach := fmt.Sprintf("backup %s restores from %s (LSN %s) to the end of the archived WAL (LSN %s on timeline %d, archived by %s)",
		chosen.ID, chosen.StopTime.UTC().Format(time.RFC3339), chosen.StopLSN, end, c.Target, newest.UTC().Format(time.RFC3339))
	if t.Time != nil {
		if t.Time.Before(chosen.StopTime) {
			return nil, fmt.Errorf("%w: target time %s is before backup %s finished; %s", ErrUnreachable, t.Time.UTC().Format(time.RFC3339), chosen.ID, reach)
		}
		if t.Time.After(newest) {
			return nil, fmt.Errorf("%w: target time %s is past the end of the archived WAL; %s", ErrUnreachable, t.Time.UTC().Format(time.RFC3339), reach)
		}
	}
	if t.LSN != nil {
		if *t.LSN < chosen.Stop() {
			return nil, fmt.Errorf("%w: target LSN %s is before backup %s stopped; %s", ErrUnreachable, *t.LSN, chosen.ID, reach)
		}
		if *t.LSN > end {
			return nil, fmt.Errorf("%w: target LSN %s is past the end of the archived WAL; %s", ErrUnreachable, *t.LSN, reach)
		}
	}
	return chosen, nil
}

func ids(backups []*catalog.Manifest) string {
	var s []string
	for _, b := range backups {
		s = append(s, b.ID)
	}
	return strings.Join(s, ", ")
}
