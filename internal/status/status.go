// Package status summarises a repository for operators and monitoring:
// the recoverable window, the age of the newest WAL and backup, the RPO
// estimate, and the repository's size by kind.
package status

import (
	"fmt"
	"strings"
	"time"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/pgstat"
	"github.com/pgkeep/pgkeep/internal/units"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// Status is what `pgkeep status` reports.
type Status struct {
	sysID uint64
	// endLSN is the end of the WAL the repository holds on endTLI, the
	// newest timeline (whole segments and streamed pieces).
	endLSN wal.LSN
	endTLI uint32

	Repository       string     `json:"repository"`
	SystemIdentifier string     `json:"system_identifier"`
	PGMajor          int        `json:"pg_major"`
	Now              time.Time  `json:"now"`
	Backups          int        `json:"backups"`
	NewestBackup     string     `json:"newest_backup,omitempty"`
	NewestBackupAt   *time.Time `json:"newest_backup_finished_at,omitempty"`
	BackupAgeSeconds *float64   `json:"backup_age_seconds,omitempty"`
	NewestWAL        string     `json:"newest_wal,omitempty"`
	NewestWALAt      *time.Time `json:"newest_wal_archived_at,omitempty"`
	WALAgeSeconds    *float64   `json:"wal_age_seconds,omitempty"`
	// StreamedLSN is the end of the WAL the agent streamed (pieces and the
	// segments it completed), on StreamedTimeline, stored at StreamedAt.
	StreamedLSN        string     `json:"streamed_lsn,omitempty"`
	StreamedTimeline   uint32     `json:"streamed_timeline,omitempty"`
	StreamedAt         *time.Time `json:"streamed_at,omitempty"`
	StreamedAgeSeconds *float64   `json:"streamed_age_seconds,omitempty"`
	// RPOSeconds is how much committed work a loss right now would cost:
	// the time since the newest WAL reached the repository, or 0 when the
	// server says the repository holds all the WAL it has flushed.
	RPOSeconds *float64 `json:"rpo_seconds,omitempty"`
	// RPOMeasured says RPOSeconds was measured against the server's WAL
	// position, not estimated from the repository alone.
	RPOMeasured bool `json:"rpo_measured"`
	// RPOBasis says in one line what the RPO estimate measures and what
	// bounds it.
	RPOBasis string   `json:"rpo_basis"`
	Window   *Window  `json:"recoverable_window,omitempty"`
	Gaps     []string `json:"wal_gaps"`
	Size     Sizes    `json:"size_bytes"`
	// Server is what the database server said, when status reached it.
	Server   *Server  `json:"server,omitempty"`
	Problems []string `json:"problems"`
	// Warnings are settings to fix that do not make status fail.
	Warnings []string `json:"warnings"`
}

// Server is the database server's side of the status.
type Server struct {
	Checked  bool             `json:"checked"`
	Note     string           `json:"note,omitempty"` // why it was not checked
	Archiver *pgstat.Archiver `json:"archiver,omitempty"`
}

// Window is the span of restorable moments.
type Window struct {
	Earliest    time.Time `json:"earliest"`
	EarliestLSN string    `json:"earliest_lsn"`
	Latest      time.Time `json:"latest"`
	LatestLSN   string    `json:"latest_lsn"`
	Timeline    uint32    `json:"timeline"`
}

// Sizes are bytes stored, by kind.
type Sizes struct {
	WAL     int64 `json:"wal"`
	Backups int64 `json:"backups"`
	Garbage int64 `json:"incomplete_backups"`
	Other   int64 `json:"other"`
	Total   int64 `json:"total"`
}

// Compute builds the status of the repository at location from what it
// holds (cat, from catalog.Load). It is a pure function.
func Compute(cat *catalog.Catalog, location string, now time.Time) *Status {
	id := cat.Identity
	s := &Status{Repository: location, SystemIdentifier: id.SystemIDString, PGMajor: id.PGMajor, Now: now, Gaps: []string{}, Problems: []string{}, Warnings: []string{}}
	s.sysID = id.SystemIdentifier
	backups := cat.Backups
	for _, e := range cat.Entries {
		if e.Complete {
			s.Size.Backups += e.Stored
		} else {
			s.Size.Garbage += e.Stored
		}
	}
	ix := cat.WAL
	s.Size.WAL = ix.Bytes
	s.Size.Other = cat.Other
	for _, o := range ix.Objects {
		if o.Stray {
			s.Size.Other += o.Size
		}
	}
	s.Size.Total = s.Size.WAL + s.Size.Backups + s.Size.Garbage + s.Size.Other

	s.Backups = len(backups)
	if n := len(backups); n > 0 {
		b := backups[n-1]
		s.NewestBackup = b.ID
		s.NewestBackupAt = &b.StopTime
		s.BackupAgeSeconds = secs(now.Sub(b.StopTime))
	} else {
		s.Problems = append(s.Problems, "no complete backup: nothing can be restored")
	}
	// The newest WAL over all timelines.
	var newest *catalog.TimelineWAL
	for _, t := range ix.Timelines {
		if t.Segments > 0 && (newest == nil || t.Timeline > newest.Timeline) {
			newest = t
		}
	}
	if newest != nil {
		s.NewestWAL = newest.Last
		at := newest.Newest
		s.NewestWALAt = &at
		s.WALAgeSeconds = secs(now.Sub(at))
		s.RPOSeconds = s.WALAgeSeconds
		if last, ok := newest.LastNo(); ok {
			s.endLSN, s.endTLI = wal.SegmentStartLSN(last+1, ix.SegSize), newest.Timeline
		}
	}
	if se, ok := ix.Streamed(); ok {
		s.StreamedLSN, s.StreamedTimeline = se.LSN.String(), se.Timeline
		at := se.At
		s.StreamedAt = &at
		s.StreamedAgeSeconds = secs(now.Sub(at))
		if newest == nil || se.Timeline >= newest.Timeline {
			if se.Timeline > s.endTLI || se.LSN > s.endLSN {
				s.endLSN, s.endTLI = se.LSN, se.Timeline
			}
			if s.NewestWALAt == nil || at.After(*s.NewestWALAt) {
				s.NewestWAL = se.Segment + " (streamed to " + se.LSN.String() + ")"
				s.NewestWALAt = &at
				s.WALAgeSeconds = secs(now.Sub(at))
				s.RPOSeconds = s.WALAgeSeconds
			}
		}
	}
	if s.NewestWALAt == nil {
		s.Problems = append(s.Problems, "no archived WAL")
	}

	// The window: from the earliest backup whose WAL chain reaches the
	// end of its timeline's archive, to the end of that archive.
	for _, t := range ix.Timelines {
		for _, g := range t.Gaps {
			s.Gaps = append(s.Gaps, fmt.Sprintf("timeline %d: %s..%s", t.Timeline, g.From, g.To))
		}
	}
	hist := cat.Histories
	for _, b := range backups {
		c := ix.ChainFrom(hist, b.Timeline, b.Start(), 0)
		if c.Last == "" || c.End < b.Stop() {
			s.Problems = append(s.Problems, fmt.Sprintf("backup %s is missing WAL %s..%s and cannot be restored", b.ID, b.StartWAL, b.StopWAL))
			continue
		}
		if c.Missing != "" {
			s.Problems = append(s.Problems, fmt.Sprintf("WAL %s is missing: recovery from backup %s stops at %s, short of the end of the archive (%s)", c.Missing, b.ID, c.Last, c.Newest))
		}
		if s.Window == nil {
			s.Window = &Window{Earliest: b.StopTime, EarliestLSN: b.StopLSN, Latest: c.NewestAt, LatestLSN: c.End.String(), Timeline: c.Target}
		}
	}
	if s.Window == nil && len(backups) > 0 {
		s.Problems = append(s.Problems, "no backup is restorable")
	}
	s.explainRPO()
	return s
}

// End returns the end of the WAL the repository holds on its newest
// timeline (whole segments and streamed pieces), and that timeline; 0, 0
// when it holds none.
func (s *Status) End() (wal.LSN, uint32) { return s.endLSN, s.endTLI }

// AddServer adds what the database server says (arch, or the error met
// reaching it): a failing archiver is a problem, an archive_timeout that
// leaves the RPO unbounded (or above maxRPO) a warning. A server of
// another cluster than the repository's is not judged.
func (s *Status) AddServer(arch *pgstat.Archiver, err error, maxRPO time.Duration) {
	switch {
	case err != nil:
		s.Server = &Server{Note: "not reached: " + err.Error()}
	case arch.SystemIdentifier != s.sysID:
		s.Server = &Server{Note: fmt.Sprintf("the server reached is cluster %d, not this repository's (%s): not checked", arch.SystemIdentifier, s.SystemIdentifier)}
	default:
		s.Server = &Server{Checked: true, Archiver: arch}
		if arch.Failing() {
			s.Problems = append(s.Problems, arch.FailureText())
		}
		if w := arch.RPOWarning(maxRPO); w != "" {
			s.Warnings = append(s.Warnings, w)
		}
		// Measured, when the agent streams: nothing the server has
		// flushed is missing from the repository. (With archive_command
		// alone the estimate stays, with what bounds it on a quiet
		// server.)
		streaming := arch.Agent != nil || s.StreamedLSN != ""
		if flush, err := wal.ParseLSN(arch.FlushLSN); err == nil && streaming && s.RPOSeconds != nil && arch.Timeline == s.endTLI && flush <= s.endLSN {
			zero := 0.0
			s.RPOSeconds, s.RPOMeasured = &zero, true
		}
	}
	s.explainRPO()
}

// explainRPO fills RPOBasis.
func (s *Status) explainRPO() {
	if s.RPOSeconds == nil {
		s.RPOBasis = "no WAL in the repository: everything committed since the newest backup's WAL would be lost"
		return
	}
	if s.RPOMeasured {
		s.RPOBasis = fmt.Sprintf("measured: the repository holds all the WAL the server has flushed (to LSN %s on timeline %d)", s.Server.Archiver.FlushLSN, s.endTLI)
		if s.StreamedLSN != "" {
			s.RPOBasis += fmt.Sprintf("; the agent streamed it, the newest piece stored %s ago", dur(*s.StreamedAgeSeconds))
		}
		return
	}
	b := fmt.Sprintf("the age of the newest WAL in the repository (%s): what a loss of the database host now would cost a server that writes all the time", dur(*s.RPOSeconds))
	if s.StreamedLSN != "" {
		b = fmt.Sprintf("measured from the WAL the agent streamed: the repository holds WAL to LSN %s on timeline %d, stored %s ago, which is what a loss of the database host now would cost at most",
			s.endLSN, s.endTLI, dur(*s.RPOSeconds))
		switch {
		case s.Server == nil || !s.Server.Checked:
			b += "; the server was not checked"
		case s.Server.Archiver.Agent == nil:
			b += "; no agent is connected to the server now, so the WAL written since is not being stored"
		default:
			b += fmt.Sprintf("; the server has flushed to %s (agent %s, sync_state %s)", s.Server.Archiver.FlushLSN, s.Server.Archiver.Agent.State, s.Server.Archiver.Agent.SyncState)
		}
		s.RPOBasis = b
		return
	}
	switch {
	case s.Server == nil || !s.Server.Checked:
		b += "; the server was not checked, so what bounds it on a quiet server is unknown"
	case s.Server.Archiver.Timeout == 0:
		b += "; archive_timeout is 0, so on a quiet server it has no bound"
	default:
		b += fmt.Sprintf("; archive_timeout %s bounds it on a quiet server (plus one upload)", time.Duration(s.Server.Archiver.Timeout))
	}
	s.RPOBasis = b
}

func secs(d time.Duration) *float64 {
	v := d.Seconds()
	return &v
}

// Thresholds make Check fail.
type Thresholds struct {
	MaxRPO       time.Duration
	MaxBackupAge time.Duration
}

// Check returns the reasons the status is not healthy: problems found, or
// thresholds exceeded.
func (s *Status) Check(th Thresholds) []string {
	out := append([]string(nil), s.Problems...)
	if th.MaxRPO > 0 {
		if s.RPOSeconds == nil {
			out = append(out, "RPO unknown: no archived WAL")
		} else if d := time.Duration(*s.RPOSeconds * float64(time.Second)); d > th.MaxRPO {
			out = append(out, fmt.Sprintf("RPO %s exceeds --max-rpo %s: no WAL archived since %s", d.Round(time.Second), th.MaxRPO, s.NewestWALAt.Format(time.RFC3339)))
		}
	}
	if th.MaxBackupAge > 0 {
		if s.BackupAgeSeconds == nil {
			out = append(out, "no backup")
		} else if d := time.Duration(*s.BackupAgeSeconds * float64(time.Second)); d > th.MaxBackupAge {
			out = append(out, fmt.Sprintf("newest backup %s is %s old, more than --max-backup-age %s", s.NewestBackup, d.Round(time.Second), th.MaxBackupAge))
		}
	}
	return out
}

// String renders the status for people.
func (s *Status) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "repository        %s (cluster %s, PostgreSQL %d)\n", s.Repository, s.SystemIdentifier, s.PGMajor)
	if s.Window != nil {
		fmt.Fprintf(&b, "recoverable       %s .. %s (timeline %d, LSN %s .. %s)\n", s.Window.Earliest.UTC().Format(time.RFC3339),
			s.Window.Latest.UTC().Format(time.RFC3339), s.Window.Timeline, s.Window.EarliestLSN, s.Window.LatestLSN)
	} else {
		fmt.Fprintf(&b, "recoverable       nothing\n")
	}
	if s.NewestBackupAt != nil {
		fmt.Fprintf(&b, "newest backup     %s, finished %s ago (%d backups)\n", s.NewestBackup, dur(*s.BackupAgeSeconds), s.Backups)
	}
	if s.NewestWALAt != nil {
		fmt.Fprintf(&b, "newest WAL        %s, archived %s ago\n", s.NewestWAL, dur(*s.WALAgeSeconds))
	}
	if s.StreamedAt != nil {
		fmt.Fprintf(&b, "streamed          to LSN %s on timeline %d, stored %s ago\n", s.StreamedLSN, s.StreamedTimeline, dur(*s.StreamedAgeSeconds))
	}
	if s.RPOSeconds != nil {
		what := "RPO estimate"
		if s.RPOMeasured || s.StreamedAt != nil {
			what = "RPO measured"
		}
		fmt.Fprintf(&b, "%-18s%s\n", what, dur(*s.RPOSeconds))
	}
	fmt.Fprintf(&b, "RPO basis         %s\n", s.RPOBasis)
	if sv := s.Server; sv != nil {
		if sv.Checked {
			a := sv.Archiver
			last := "never"
			if a.LastArchivedAt != nil {
				last = fmt.Sprintf("%s at %s", a.LastArchivedWAL, a.LastArchivedAt.UTC().Format(time.RFC3339))
			}
			fmt.Fprintf(&b, "server archiver   last archived %s; %d failures in all\n", last, a.FailedCount)
			if ag := a.Agent; ag != nil {
				fmt.Fprintf(&b, "server agent      %s, reported stored to %s (sync_state %s); the server has flushed to %s\n", ag.State, ag.FlushLSN, ag.SyncState, a.FlushLSN)
			} else if s.StreamedLSN != "" {
				fmt.Fprintf(&b, "server agent      none connected: the WAL written now is not streamed\n")
			}
		} else {
			fmt.Fprintf(&b, "server            %s\n", sv.Note)
		}
	}
	fmt.Fprintf(&b, "size              %s total: WAL %s, backups %s, incomplete backups %s\n", units.Bytes(s.Size.Total), units.Bytes(s.Size.WAL), units.Bytes(s.Size.Backups), units.Bytes(s.Size.Garbage))
	for _, g := range s.Gaps {
		fmt.Fprintf(&b, "WAL gap           %s\n", g)
	}
	for _, w := range s.Warnings {
		fmt.Fprintf(&b, "WARNING           %s\n", w)
	}
	for _, p := range s.Problems {
		fmt.Fprintf(&b, "PROBLEM           %s\n", p)
	}
	return b.String()
}

func dur(sec float64) string {
	return time.Duration(sec * float64(time.Second)).Round(time.Second).String()
}
