// Package observe is what the agent shows the outside: Prometheus metrics
// at /metrics and a status page at /, both computed from one snapshot of
// the repository (what pgkeep status computes), the server, the stream
// and the schedules (docs/design.md §17.6).
package observe

import (
	"context"
	"sync"
	"time"

	"github.com/pgkeep/pgkeep/internal/agent"
	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/pgstat"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/status"
)

// Snapshot is everything the metrics and the page show, taken at one time.
type Snapshot struct {
	At time.Time
	// Err is why the repository could not be read (Status and Catalog
	// are then those of the last snapshot that could, or nil).
	Err     error
	Status  *status.Status
	Catalog *catalog.Catalog
	// Archiver is the server's archiver state (nil: not reached).
	Archiver *pgstat.Archiver
	// SlotRetained is the WAL the slot keeps on the server (nil: unknown).
	SlotRetained *int64
	Stream       agent.State
	Kinds        []agent.KindState
}

// Source takes snapshots, at most one every MaxAge: a scrape or a page
// load within MaxAge of the last one reuses it, so that monitoring costs
// the store one listing per MaxAge at most, and nothing while nobody looks.
type Source struct {
	Repo      *repo.Repo
	Scheduler *agent.Scheduler // nil: no schedules
	// PGData is the data directory (for the record wal-push leaves of its
	// last failure); "" asks the server.
	PGData string
	MaxAge time.Duration

	agent *agent.Agent
	mu    sync.Mutex
	last  *Snapshot
}

// Invalidate makes the next Get take a new snapshot (after a run changed
// the repository).
func (s *Source) Invalidate() {
	s.mu.Lock()
	if s.last != nil {
		s.last.At = time.Time{}
	}
	s.mu.Unlock()
}

// Get returns a snapshot at most MaxAge old.
func (s *Source) Get(ctx context.Context) *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last != nil && time.Since(s.last.At) < s.MaxAge {
		c := *s.last
		s.live(&c)
		return &c
	}
	snap := &Snapshot{At: time.Now()}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cat, err := catalog.Load(cctx, s.Repo)
	if err != nil {
		snap.Err = err
		if s.last != nil {
			snap.Status, snap.Catalog = s.last.Status, s.last.Catalog
		}
	} else {
		snap.Catalog = cat
		snap.Status = status.Compute(cat, s.Repo.Location(), snap.At)
		arch, perr := pgstat.Probe(cctx, "", s.PGData, 3*time.Second)
		snap.Status.AddServer(arch, perr, 0)
		if perr == nil {
			snap.Archiver = arch
		}
	}
	if s.agent != nil {
		if n, err := s.agent.SlotRetained(cctx); err == nil {
			snap.SlotRetained = &n
		}
	}
	s.last = snap
	c := *snap
	s.live(&c)
	return &c
}

// live fills what is read from memory on every call: the stream's and
// the schedules' state.
func (s *Source) live(snap *Snapshot) {
	if s.agent != nil {
		snap.Stream = s.agent.State()
	}
	if s.Scheduler != nil {
		snap.Kinds = s.Scheduler.Kinds()
	}
}
