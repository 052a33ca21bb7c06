package status

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/pgstat"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/repotest"
	"github.com/pgkeep/pgkeep/internal/wal"
)

func load(t *testing.T, env *repotest.Env) *catalog.Catalog {
	t.Helper()
	cat, err := catalog.Load(context.Background(), env.Repo())
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

// TestComputeWindowAndRPO: the window runs from the earliest restorable
// backup to the newest WAL; the RPO is the age of that WAL, and says so.
func TestComputeWindowAndRPO(t *testing.T) {
	env := repotest.New(t)
	env.Init(t)
	now := time.Now()
	env.WAL(t, 1, 2, 8, now.Add(-90*time.Second))
	files := map[string][]byte{"PG_VERSION": []byte("15\n")}
	first := env.Backup(t, "20261201T090000Z", files, 2, 3, now.Add(-2*time.Hour), 4096)
	env.Backup(t, "20261201T100000Z", files, 5, 6, now.Add(-time.Hour), 4096)
	s := Compute(load(t, env), env.URL, now)
	if s.Window == nil || s.Window.EarliestLSN != first.StopLSN || s.Window.LatestLSN != "0/900000" {
		t.Fatalf("window %+v", s.Window)
	}
	if s.RPOSeconds == nil || *s.RPOSeconds < 85 || *s.RPOSeconds > 95 || !strings.Contains(s.RPOBasis, "newest WAL") {
		t.Fatalf("RPO %v, basis %q", s.RPOSeconds, s.RPOBasis)
	}
	if len(s.Problems) != 0 || s.Backups != 2 || s.NewestBackup != "20261201T100000Z" {
		t.Fatalf("problems %v, backups %d, newest %s", s.Problems, s.Backups, s.NewestBackup)
	}
	if f := s.Check(Thresholds{MaxRPO: time.Minute}); len(f) != 1 || !strings.Contains(f[0], "--max-rpo") {
		t.Fatalf("max-rpo check: %v", f)
	}
	if s.Size.WAL == 0 || s.Size.Backups == 0 || s.Size.Total != s.Size.WAL+s.Size.Backups+s.Size.Garbage+s.Size.Other {
		t.Fatalf("sizes %+v", s.Size)
	}
}

// TestComputeGapAndServer: a gap on the path is a problem; a failing
// archiver of the repository's cluster is a problem, one of another
// cluster is not judged; archive_timeout 0 is a warning.
func TestComputeGapAndServer(t *testing.T) {
	env := repotest.New(t)
	env.Init(t)
	now := time.Now()
	env.WAL(t, 1, 2, 4, now.Add(-time.Hour))
	env.WAL(t, 1, 6, 7, now.Add(-time.Minute))
	env.Backup(t, "20261201T090000Z", map[string][]byte{"PG_VERSION": []byte("15\n")}, 2, 3, now.Add(-2*time.Hour), 4096)
	s := Compute(load(t, env), env.URL, now)
	if len(s.Problems) != 1 || !strings.Contains(s.Problems[0], "000000010000000000000005 is missing") {
		t.Fatalf("problems %v", s.Problems)
	}
	failed, ok := now.Add(-10*time.Second), now.Add(-time.Hour)
	arch := &pgstat.Archiver{SystemIdentifier: repotest.SysID, Mode: "on", FailedCount: 4, LastFailedAt: &failed, LastFailedWAL: "000000010000000000000008", LastArchivedAt: &ok}
	s.AddServer(arch, nil, 0)
	if len(s.Problems) != 2 || !strings.Contains(s.Problems[1], "archiver is failing") || len(s.Warnings) != 1 || !strings.Contains(s.RPOBasis, "archive_timeout is 0") {
		t.Fatalf("with a failing archiver: problems %v, warnings %v, basis %q", s.Problems, s.Warnings, s.RPOBasis)
	}
	s = Compute(load(t, env), env.URL, now)
	other := *arch
	other.SystemIdentifier++
	s.AddServer(&other, nil, 0)
	if len(s.Problems) != 1 || s.Server.Checked || !strings.Contains(s.Server.Note, "not this repository's") {
		t.Fatalf("a server of another cluster: %v %+v", s.Problems, s.Server)
	}
	s.AddServer(nil, errors.New("connection refused"), 0)
	if s.Server.Checked || !strings.Contains(s.RPOBasis, "not checked") {
		t.Fatalf("an unreachable server: %+v %q", s.Server, s.RPOBasis)
	}
}

const seg1 = 1 << 20

// With the agent's streamed pieces, status shows the streamed position and
// its age, and the RPO is measured: 0 when the server has flushed nothing
// the repository lacks, else the age of the newest stored WAL.
func TestStreamedRPO(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	seg := wal.SegmentName(1, 2, seg1)
	p := repo.Piece{Segment: seg, Start: 0, End: 5000}
	whole := wal.SegmentName(1, 1, seg1)
	objs := []repo.WALObject{
		{Name: whole, Kind: wal.KindSegment, Key: repo.WAL(whole), ModTime: now.Add(-time.Minute)},
		{Name: p.String(), Piece: &p, Key: repo.StreamedPiece(p), ModTime: now.Add(-3 * time.Second)},
	}
	cat := &catalog.Catalog{Identity: &repo.Identity{SystemIdentifier: 7, SystemIDString: "7", PGMajor: 15, WalSegSize: seg1},
		WAL: catalog.IndexWAL(objs, seg1), Histories: catalog.Histories{}}
	end := wal.SegmentStartLSN(2, seg1) + 5000

	s := Compute(cat, "file:///r", now)
	if s.StreamedLSN != end.String() || s.StreamedAgeSeconds == nil || *s.StreamedAgeSeconds != 3 || *s.RPOSeconds != 3 || s.RPOMeasured {
		t.Fatalf("from the repository alone: %+v", s)
	}
	s.AddServer(&pgstat.Archiver{SystemIdentifier: 7, Mode: "off", FlushLSN: end.String(), Timeline: 1,
		Agent: &pgstat.Agent{State: "streaming", FlushLSN: end.String(), SyncState: "async"}}, nil, 0)
	if *s.RPOSeconds != 0 || !s.RPOMeasured || len(s.Warnings) != 0 {
		t.Fatalf("the server has flushed nothing more: %+v", s)
	}

	s = Compute(cat, "file:///r", now)
	s.AddServer(&pgstat.Archiver{SystemIdentifier: 7, Mode: "off", FlushLSN: (end + 100).String(), Timeline: 1}, nil, 0)
	if *s.RPOSeconds != 3 || s.RPOMeasured || len(s.Warnings) != 1 {
		t.Fatalf("the server is ahead and no agent streams: %+v", s)
	}
}
