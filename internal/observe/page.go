package observe

import (
	_ "embed"
	"fmt"
	"html/template"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/pgkeep/pgkeep/internal/units"
)

//go:embed page.html
var pageHTML string

// pageTmpl is parsed on first use, not at start: every pgkeep process
// (wal-push and wal-fetch run once per WAL segment) would pay for it.
var pageTmpl = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("page").Parse(pageHTML))
})

// page is what the status page shows, as text ready to print.
type page struct {
	Repository, Cluster, At string
	Major                   int
	RepoError               string
	Healthy                 bool
	Window                  *struct {
		Earliest, Latest, EarliestLSN, LatestLSN string
		Timeline                                 uint32
	}
	RPO, RPOBasis           string
	RPOMeasured             bool
	NewestBackup, BackupAge string
	BackupCount             int
	NewestWAL, WALAge       string
	Archiver, Size          string
	Problems, Warnings      []string
	Stream                  struct {
		Connected                bool
		LSN, At, Slot, LastError string
		Timeline                 uint32
		Segments                 int
	}
	Kinds     []pageKind
	Backups   []pageBackup
	Timelines []pageTimeline
}

type pageKind struct {
	Kind, Schedule, Next string
	Running              bool
	Runs                 []pageRun
}

type pageRun struct{ Started, Took, Result, Class, Detail string }

type pageBackup struct {
	ID, Type, Finished, Took, Size, Stored, LSN string
	Timeline                                    uint32
}

type pageTimeline struct {
	Timeline                      uint32
	First, Last, Stored, Streamed string
	Segments                      int
	Gaps                          []string
}

const timeFmt = "2006-01-02 15:04:05Z"

func ts(t time.Time) string { return t.UTC().Format(timeFmt) }

func ago(now, t time.Time) string { return units.Duration(now.Sub(t).Round(time.Second)) }

// writePage renders snap.
func writePage(w io.Writer, snap *Snapshot) error {
	p := page{At: ts(snap.At), Healthy: true}
	if snap.Err != nil {
		p.RepoError, p.Healthy = snap.Err.Error(), false
	}
	now := snap.At
	if st := snap.Status; st != nil {
		p.Repository, p.Cluster, p.Major = st.Repository, st.SystemIdentifier, st.PGMajor
		if w := st.Window; w != nil {
			p.Window = &struct {
				Earliest, Latest, EarliestLSN, LatestLSN string
				Timeline                                 uint32
			}{ts(w.Earliest), ts(w.Latest), w.EarliestLSN, w.LatestLSN, w.Timeline}
		}
		p.RPO = "unknown"
		if st.RPOSeconds != nil {
			p.RPO = units.Duration(time.Duration(*st.RPOSeconds * float64(time.Second)).Round(time.Second))
		}
		p.RPOBasis, p.RPOMeasured = st.RPOBasis, st.RPOMeasured
		p.NewestBackup, p.BackupCount = st.NewestBackup, st.Backups
		if st.NewestBackupAt != nil {
			p.BackupAge = ago(now, *st.NewestBackupAt)
		}
		p.NewestWAL = st.NewestWAL
		if st.NewestWALAt != nil {
			p.WALAge = ago(now, *st.NewestWALAt)
		}
		p.Archiver = "the server was not reached"
		if sv := st.Server; sv != nil {
			if sv.Checked {
				a := sv.Archiver
				last := "never"
				if a.LastArchivedAt != nil {
					last = a.LastArchivedWAL + " at " + ts(*a.LastArchivedAt)
				}
				p.Archiver = fmt.Sprintf("archive_mode %s; last archived %s; %d failures in all", a.Mode, last, a.FailedCount)
				if a.Failing() {
					p.Archiver += " (FAILING)"
				}
			} else {
				p.Archiver = sv.Note
			}
		}
		p.Size = fmt.Sprintf("%s: WAL %s, backups %s, incomplete backups %s", units.Bytes(st.Size.Total), units.Bytes(st.Size.WAL), units.Bytes(st.Size.Backups), units.Bytes(st.Size.Garbage))
		p.Problems, p.Warnings = st.Problems, st.Warnings
		if len(st.Problems) > 0 {
			p.Healthy = false
		}
	}
	if cat := snap.Catalog; cat != nil {
		for i := len(cat.Backups) - 1; i >= 0; i-- {
			m := cat.Backups[i]
			typ := "full"
			if m.Incremental() {
				typ = "incremental on " + m.Parent
			}
			p.Backups = append(p.Backups, pageBackup{ID: m.ID, Type: typ, Finished: ts(m.StopTime), Took: units.Duration(m.Duration().Round(100 * time.Millisecond)),
				Size: units.Bytes(m.Size), Stored: units.Bytes(m.Stored), LSN: m.StartLSN + " … " + m.StopLSN, Timeline: m.Timeline})
		}
		for _, t := range cat.WAL.Timelines {
			pt := pageTimeline{Timeline: t.Timeline, First: t.First, Last: t.Last, Segments: t.Segments, Stored: units.Bytes(t.Bytes), Streamed: "none"}
			for _, g := range t.Gaps {
				pt.Gaps = append(pt.Gaps, g.From+" … "+g.To)
			}
			var tails []string
			for _, s := range t.Streamed {
				tail := fmt.Sprintf("%s to LSN %s", s.Segment, s.EndLSN)
				if s.Hole {
					tail += " (HOLE)"
				}
				tails = append(tails, tail)
			}
			if len(tails) > 0 {
				pt.Streamed = strings.Join(tails, "; ")
			}
			p.Timelines = append(p.Timelines, pt)
		}
	}
	s := snap.Stream
	p.Stream.Connected, p.Stream.Timeline, p.Stream.Segments, p.Stream.LastError = s.Connected, uint32(s.Timeline), s.Segments, s.LastError
	if s.Durable != 0 {
		p.Stream.LSN = s.Durable.String()
	}
	if !s.DurableAt.IsZero() {
		p.Stream.At = ago(now, s.DurableAt)
	}
	p.Stream.Slot = "unknown (the server was not reached)"
	if snap.SlotRetained != nil {
		p.Stream.Slot = units.Bytes(*snap.SlotRetained) + " of WAL on the server"
	}
	for _, k := range snap.Kinds {
		pk := pageKind{Kind: k.Kind, Schedule: k.Schedule, Running: k.Running}
		if !k.Next.IsZero() {
			pk.Next = ts(k.Next)
		}
		for _, r := range k.Runs {
			class := "ok"
			if r.Result != "ok" {
				class = "bad"
			}
			pk.Runs = append(pk.Runs, pageRun{Started: ts(r.Started), Took: units.Duration(r.Duration.Round(10 * time.Millisecond)), Result: r.Result, Class: class, Detail: r.Detail})
		}
		p.Kinds = append(p.Kinds, pk)
	}
	return pageTmpl().Execute(w, p)
}
