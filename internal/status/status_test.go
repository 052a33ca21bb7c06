package status

import (
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/pgstat"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/wal"
)

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
