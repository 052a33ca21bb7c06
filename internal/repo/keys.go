package repo

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// The repository layout (docs/design.md §3). This file is the only code
// that builds or parses object keys: other packages name objects with the
// constructors below and list them with Scan and ListWAL.
//
//	pgkeep.json                 the identity record
//	pgkeep.json.repair          only while RepairIdentity runs
//	keys/FINGERPRINT.age        an encrypted repository's key
//	wal/TTTTTTTT/NAME           an archived WAL file of timeline TTTTTTTT
//	wal/TTTTTTTT/streamed/SEGMENT/OOOOOOOO-EEEEEEEE
//	                            a streamed piece: bytes [O, E) of SEGMENT
//	backups/ID/started.json     a backup began
//	backups/ID/data/NNNNNN      a backup's data objects
//	backups/ID/backup.json      a backup's completion record
//	backups/ID/pinned           expire keeps the backup
//	summaries/TTTTTTTT/NAME     the blocks WAL segment NAME touched (walsum)

// Key names an object of the repository. Only this package makes keys.
type Key struct{ s string }

// String returns the key as the store knows it, for messages.
func (k Key) String() string { return k.s }

const (
	walPrefix       = "wal/"
	streamedFolder  = "streamed/"
	backupsPrefix   = "backups/"
	keysPrefix      = "keys/"
	summariesPrefix = "summaries/"
)

var (
	identityKey = Key{"pgkeep.json"}
	repairKey   = Key{"pgkeep.json.repair"}
)

// WAL names an archived WAL file (segment, .partial, .backup or .history)
// given its PostgreSQL name. All files of a timeline share the prefix
// wal/TTTTTTTT/, so retention and listing can work timeline by timeline.
// name must be a valid WAL file name (wal.Classify).
func WAL(name string) Key { return Key{walPrefix + name[:8] + "/" + name} }

// Summary names the WAL summary of segment name (a valid segment name).
func Summary(name string) Key { return Key{summariesPrefix + name[:8] + "/" + name} }

// Piece is a streamed piece: the WAL bytes [Start, End) of one segment,
// byte offsets within it, as the agent received them (docs/design.md §17).
type Piece struct {
	Segment    string // the segment's name (24 hex digits)
	Start, End uint64 // offsets in the segment; Start < End <= segment size
}

// String names the piece as SEGMENT/OOOOOOOO-EEEEEEEE.
func (p Piece) String() string { return fmt.Sprintf("%s/%08X-%08X", p.Segment, p.Start, p.End) }

// Size is the number of WAL bytes the piece holds.
func (p Piece) Size() uint64 { return p.End - p.Start }

// StreamedPiece names the object holding piece p. p.Segment must be a
// valid segment name and the offsets below 2^32.
func StreamedPiece(p Piece) Key {
	return Key{walPrefix + p.Segment[:8] + "/" + streamedFolder + p.String()}
}

// ParsePiece parses a piece's name as Piece.String() writes it.
func ParsePiece(name string) (Piece, bool) {
	if len(name) < 8 {
		return Piece{}, false
	}
	return parsePiece(name[:8], name)
}

// parsePiece reads the part of a key after wal/TTTTTTTT/streamed/.
func parsePiece(tli, rest string) (Piece, bool) {
	seg, offs, ok := strings.Cut(rest, "/")
	if !ok || len(offs) != 17 || offs[8] != '-' {
		return Piece{}, false
	}
	if k, err := wal.Classify(seg); err != nil || k != wal.KindSegment || seg[:8] != tli {
		return Piece{}, false
	}
	start, err1 := strconv.ParseUint(offs[:8], 16, 32)
	end, err2 := strconv.ParseUint(offs[9:], 16, 33)
	if err1 != nil || err2 != nil || start >= end || strings.ToUpper(offs) != offs {
		return Piece{}, false
	}
	p := Piece{Segment: seg, Start: start, End: end}
	if p.String() != rest {
		return Piece{}, false // not in the canonical form pgkeep writes
	}
	return p, true
}

// Started names the marker a backup writes when it begins.
func Started(id string) Key { return Key{backupsPrefix + id + "/started.json"} }

// Manifest names a backup's completion record.
func Manifest(id string) Key { return Key{backupsPrefix + id + "/backup.json"} }

// Data names a backup's data object seq.
func Data(id string, seq int) Key { return Key{fmt.Sprintf("%s%s/data/%06d", backupsPrefix, id, seq)} }

// Pin names the marker that keeps expire from removing a backup.
func Pin(id string) Key { return Key{backupsPrefix + id + "/pinned"} }

// repoKey names the object that holds an encrypted repository's key.
func repoKey(fingerprint string) Key { return Key{keysPrefix + fingerprint + ".age"} }

// WALObject is an archived WAL file, or a streamed piece, as the store
// lists it.
type WALObject struct {
	Name string   // as PostgreSQL names it; for a piece, Piece.String()
	Kind wal.Kind // 0 for a stray (Stray) or a piece
	// Piece is set for a streamed piece (Kind 0, not Stray).
	Piece   *Piece
	Key     Key       // where it is stored
	Size    int64     // stored bytes
	ModTime time.Time // when it was stored
	// Stray is an object under wal/ whose name is not one pgkeep writes.
	Stray bool
}

// BackupEntry is what the repository holds under one backup id.
type BackupEntry struct {
	ID       string
	Complete bool      // the completion record exists
	Started  bool      // the start marker exists
	Pinned   bool      // the pin exists
	Objects  int       // objects under the id
	Stored   int64     // bytes under the id
	Modified time.Time // the newest object's time
}

// SummaryObject is a stored WAL summary.
type SummaryObject struct {
	Segment string // the segment it summarizes
	Key     Key
	Size    int64
}

// Listing is the repository's content, from one listing.
type Listing struct {
	WAL       []WALObject     // in key order: by timeline, then name
	Summaries []SummaryObject // in key order
	Backups   []BackupEntry   // by id (oldest first)
	// Other is what the identity record and the encryption key take.
	Other int64
}

// Scan lists the whole repository once and sorts what it finds: the WAL,
// the backups, and everything else.
func (r *Repo) Scan(ctx context.Context) (*Listing, error) {
	l := &Listing{}
	byID := map[string]*BackupEntry{}
	err := r.st.List(ctx, "", func(oi storage.ObjectInfo) error {
		switch {
		case strings.HasPrefix(oi.Key, walPrefix):
			l.WAL = append(l.WAL, walObject(oi))
		case strings.HasPrefix(oi.Key, summariesPrefix):
			name := oi.Key[strings.LastIndex(oi.Key, "/")+1:]
			if k, err := wal.Classify(name); err == nil && k == wal.KindSegment && oi.Key == Summary(name).s {
				l.Summaries = append(l.Summaries, SummaryObject{Segment: name, Key: Key{oi.Key}, Size: oi.Size})
			} else {
				l.Other += oi.Size
			}
		case strings.HasPrefix(oi.Key, backupsPrefix):
			if !addBackupObject(byID, oi) {
				l.Other += oi.Size
			}
		default:
			l.Other += oi.Size
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing repository %s: %w", r.Location(), err)
	}
	l.Backups = sortedEntries(byID)
	return l, nil
}

// ListBackups lists only backups/: the backups, complete or not, by id
// (what a backup looks at to choose its parent, without listing the WAL).
func (r *Repo) ListBackups(ctx context.Context) ([]BackupEntry, error) {
	byID := map[string]*BackupEntry{}
	err := r.st.List(ctx, backupsPrefix, func(oi storage.ObjectInfo) error {
		addBackupObject(byID, oi)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing the backups of %s: %w", r.Location(), err)
	}
	return sortedEntries(byID), nil
}

// addBackupObject counts an object under backups/ in its entry; false
// means it is not a backup's object.
func addBackupObject(byID map[string]*BackupEntry, oi storage.ObjectInfo) bool {
	id, name, ok := strings.Cut(strings.TrimPrefix(oi.Key, backupsPrefix), "/")
	if !ok {
		return false
	}
	e := byID[id]
	if e == nil {
		e = &BackupEntry{ID: id}
		byID[id] = e
	}
	e.Objects++
	e.Stored += oi.Size
	if oi.ModTime.After(e.Modified) {
		e.Modified = oi.ModTime
	}
	switch name {
	case "backup.json":
		e.Complete = true
	case "started.json":
		e.Started = true
	case "pinned":
		e.Pinned = true
	}
	return true
}

func sortedEntries(byID map[string]*BackupEntry) []BackupEntry {
	out := make([]BackupEntry, 0, len(byID))
	for _, e := range byID {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ListWAL calls fn for every object under wal/, in key order.
func (r *Repo) ListWAL(ctx context.Context, fn func(WALObject) error) error {
	err := r.st.List(ctx, walPrefix, func(oi storage.ObjectInfo) error { return fn(walObject(oi)) })
	if err != nil {
		return fmt.Errorf("listing archived WAL: %w", err)
	}
	return nil
}

func walObject(oi storage.ObjectInfo) WALObject {
	name := oi.Key[strings.LastIndex(oi.Key, "/")+1:]
	o := WALObject{Name: name, Key: Key{oi.Key}, Size: oi.Size, ModTime: oi.ModTime}
	// wal/TTTTTTTT/streamed/SEGMENT/OOOOOOOO-EEEEEEEE
	if rest := strings.TrimPrefix(oi.Key, walPrefix); len(rest) > 9 && rest[8] == '/' && strings.HasPrefix(rest[9:], streamedFolder) {
		p, ok := parsePiece(rest[:8], rest[9+len(streamedFolder):])
		if !ok {
			o.Stray = true
			return o
		}
		o.Name, o.Piece = p.String(), &p
		return o
	}
	kind, err := wal.Classify(name)
	if err != nil || oi.Key != WAL(name).s {
		o.Stray = true
		return o
	}
	o.Kind = kind
	return o
}

// Exists reports whether the object under key is there.
func (r *Repo) Exists(ctx context.Context, key Key) (bool, error) {
	_, err := r.st.Stat(ctx, key.s)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Delete removes the object under key (absent is not an error). Only
// expiry and unpin delete; nothing rewrites.
func (r *Repo) Delete(ctx context.Context, key Key) error {
	if err := r.st.Delete(ctx, key.s); err != nil {
		return fmt.Errorf("removing %s: %w", key, err)
	}
	return nil
}

// DeleteBackup removes every object of backup id in an order that is safe
// to interrupt: its completion record first (it stops being listed as
// restorable before anything it needs is touched), then the rest. A rerun
// finds what is left as an incomplete backup.
func (r *Repo) DeleteBackup(ctx context.Context, id string) error {
	if err := r.Delete(ctx, Manifest(id)); err != nil {
		return err
	}
	var keys []string
	if err := r.st.List(ctx, backupsPrefix+id+"/", func(oi storage.ObjectInfo) error { keys = append(keys, oi.Key); return nil }); err != nil {
		return fmt.Errorf("listing backup %s: %w", id, err)
	}
	for _, k := range keys {
		if err := r.Delete(ctx, Key{k}); err != nil {
			return err
		}
	}
	return nil
}

// KindOf names what a store key holds, for counting uploads: "wal"
// (archived files and streamed pieces), "backup", "summary" or "other"
// (the identity record, keys).
func KindOf(key string) string {
	switch {
	case strings.HasPrefix(key, walPrefix):
		return "wal"
	case strings.HasPrefix(key, backupsPrefix):
		return "backup"
	case strings.HasPrefix(key, summariesPrefix):
		return "summary"
	}
	return "other"
}
