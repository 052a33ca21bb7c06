package catalog

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"

	"github.com/pgkeep/pgkeep/internal/repo"
)

// Catalog is what a repository holds, read once (Load).
type Catalog struct {
	Identity *repo.Identity
	// Backups are the complete backups' manifests, oldest first (without
	// the key of an encrypted repository, their summaries: Sealed).
	Backups []*Manifest
	// Entries are every backup id's objects, complete or not, oldest first.
	Entries []repo.BackupEntry
	WAL     *WALIndex
	// Histories are the timeline history files, parsed.
	Histories Histories
	// Summaries are the stored WAL summaries (walsum), by segment.
	Summaries []repo.SummaryObject
	// Other is what the repository holds besides WAL and backups (the
	// identity record, the encryption key).
	Other int64
}

// Incomplete returns the backup ids without a completion record: backups
// in progress, or interrupted ones (garbage).
func (c *Catalog) Incomplete() []repo.BackupEntry {
	var out []repo.BackupEntry
	for _, e := range c.Entries {
		if !e.Complete {
			out = append(out, e)
		}
	}
	return out
}

// Entry returns the objects of backup id.
func (c *Catalog) Entry(id string) (repo.BackupEntry, bool) {
	for _, e := range c.Entries {
		if e.ID == id {
			return e, true
		}
	}
	return repo.BackupEntry{}, false
}

// manifestReaders bounds how many manifests Load reads at once.
const manifestReaders = 8

// Load reads the repository's identity, lists it once, reads the
// manifest of every complete backup and the timeline history files. It is
// what list, status, verify, expire and restore start from.
func Load(ctx context.Context, r *repo.Repo) (*Catalog, error) {
	id, err := r.Identity(ctx)
	if err != nil {
		return nil, err
	}
	l, err := r.Scan(ctx)
	if err != nil {
		return nil, err
	}
	c := &Catalog{Identity: id, Entries: l.Backups, Other: l.Other, WAL: IndexWAL(l.WAL, id.WalSegSize), Summaries: l.Summaries}
	var complete []string
	for _, e := range l.Backups {
		if e.Complete {
			complete = append(complete, e.ID)
		}
	}
	c.Backups = make([]*Manifest, len(complete))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(manifestReaders)
	for i, bid := range complete {
		g.Go(func() error {
			m, err := ReadManifest(gctx, r, bid)
			c.Backups[i] = m
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if c.Histories, err = LoadHistories(ctx, r, c.WAL); err != nil {
		return nil, err
	}
	return c, nil
}

// Newest returns the manifest of the newest complete backup (nil if there
// is none), listing only the backups: what a backup needs to choose its
// parent, at a cost that does not grow with the archived WAL or the
// number of backups.
func Newest(ctx context.Context, r *repo.Repo) (*Manifest, error) {
	entries, err := r.ListBackups(ctx)
	if err != nil {
		return nil, err
	}
	for i := len(entries) - 1; i >= 0; i-- {
		if entries[i].Complete && ValidID(entries[i].ID) {
			return ReadManifest(ctx, r, entries[i].ID)
		}
	}
	return nil, nil
}

// LoadWAL lists the archived WAL and reads the timeline histories: what
// wal-fetch needs to tell the end of the archive from a gap.
func LoadWAL(ctx context.Context, r *repo.Repo, segSize uint64) (*WALIndex, Histories, error) {
	var objs []repo.WALObject
	if err := r.ListWAL(ctx, func(o repo.WALObject) error { objs = append(objs, o); return nil }); err != nil {
		return nil, nil, err
	}
	ix := IndexWAL(objs, segSize)
	h, err := LoadHistories(ctx, r, ix)
	if err != nil {
		return nil, nil, fmt.Errorf("reading timeline histories: %w", err)
	}
	return ix, h, nil
}
