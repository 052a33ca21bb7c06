package catalog

import (
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/wal"
)

const seg1 = 1 << 20

// objs builds a listing: whole segments and pieces of timeline 1.
func objs(whole []uint64, pieces map[uint64][][2]uint64) []repo.WALObject {
	var out []repo.WALObject
	at := time.Now().Add(-time.Minute)
	for _, no := range whole {
		name := wal.SegmentName(1, no, seg1)
		out = append(out, repo.WALObject{Name: name, Kind: wal.KindSegment, Key: repo.WAL(name), ModTime: at})
	}
	for no, ps := range pieces {
		for _, r := range ps {
			p := repo.Piece{Segment: wal.SegmentName(1, no, seg1), Start: r[0], End: r[1]}
			out = append(out, repo.WALObject{Name: p.String(), Piece: &p, Key: repo.StreamedPiece(p), ModTime: at.Add(time.Duration(r[1]))})
		}
	}
	return out
}

func TestTile(t *testing.T) {
	p := func(s, e uint64) repo.Piece { return repo.Piece{Segment: "000000010000000000000001", Start: s, End: e} }
	for _, c := range []struct {
		pieces       []repo.Piece
		end, holeEnd uint64
		hole         bool
	}{
		{nil, 0, 0, false},
		{[]repo.Piece{p(0, 10), p(10, 20)}, 20, 0, false},
		{[]repo.Piece{p(10, 20), p(0, 10)}, 20, 0, false},          // any order
		{[]repo.Piece{p(0, 15), p(10, 20), p(0, 5)}, 20, 0, false}, // overlaps hold the same bytes
		{[]repo.Piece{p(0, 10), p(12, 20)}, 10, 12, true},
		{[]repo.Piece{p(5, 10)}, 0, 5, true}, // not from offset 0
	} {
		end, hole, holeEnd := Tile(c.pieces)
		if end != c.end || hole != c.hole || holeEnd != c.holeEnd {
			t.Errorf("Tile(%v) = %d, %v, %d; want %d, %v, %d", c.pieces, end, hole, holeEnd, c.end, c.hole, c.holeEnd)
		}
	}
}

// The chain runs through the streamed tail: segments complete in pieces
// count as present, the last one's pieces end the archive inside it, and a
// hole between pieces, or pieces followed by later WAL, is a gap.
func TestChainThroughStreamedWAL(t *testing.T) {
	name := func(no uint64) string { return wal.SegmentName(1, no, seg1) }
	start := wal.SegmentStartLSN(1, seg1)
	for _, c := range []struct {
		what    string
		whole   []uint64
		pieces  map[uint64][][2]uint64
		last    string
		end     wal.LSN
		missing string
		hole    bool
		stream  string
	}{
		{"whole segments only", []uint64{1, 2}, nil, name(2), wal.SegmentStartLSN(3, seg1), "", false, ""},
		{"a streamed tail", []uint64{1, 2}, map[uint64][][2]uint64{3: {{0, 100}, {100, 5000}}}, name(2), wal.SegmentStartLSN(3, seg1) + 5000, "", false, name(3)},
		{"pieces of a whole segment are not the tail", []uint64{1, 2, 3}, map[uint64][][2]uint64{3: {{0, seg1}}}, name(3), wal.SegmentStartLSN(4, seg1), "", false, ""},
		{"a segment complete in pieces, then a tail", []uint64{1}, map[uint64][][2]uint64{2: {{0, 1000}, {1000, seg1}}, 3: {{0, 42}}}, name(2), wal.SegmentStartLSN(3, seg1) + 42, "", false, name(3)},
		{"a hole between pieces", []uint64{1, 2}, map[uint64][][2]uint64{3: {{0, 100}, {200, 300}}}, name(2), wal.SegmentStartLSN(3, seg1), name(3), true, ""},
		{"a partly streamed segment before later WAL", []uint64{1, 2, 4}, map[uint64][][2]uint64{3: {{0, 100}}}, name(2), wal.SegmentStartLSN(3, seg1), name(3), false, ""},
		{"pieces after a missing segment", []uint64{1, 2}, map[uint64][][2]uint64{4: {{0, 100}}}, name(2), wal.SegmentStartLSN(3, seg1), name(3), false, ""},
	} {
		ix := IndexWAL(objs(c.whole, c.pieces), seg1)
		ch := ix.ChainFrom(Histories{}, 1, start, 0)
		if ch.Last != c.last || ch.End != c.end || ch.Missing != c.missing || (ch.Hole != "") != c.hole || ch.Streamed != c.stream {
			t.Errorf("%s: chain %+v; want last %s, end %s, missing %q, hole %v, streamed %q", c.what, ch, c.last, c.end, c.missing, c.hole, c.stream)
		}
		if c.missing != "" && len(ix.Timelines[0].Gaps) == 0 && !c.hole {
			t.Errorf("%s: the timeline lists no gap", c.what)
		}
	}
}

func TestStreamedEndAndGarbage(t *testing.T) {
	ix := IndexWAL(objs([]uint64{1, 2}, map[uint64][][2]uint64{2: {{0, seg1}}, 3: {{0, 700}}}), seg1)
	tl := ix.Timeline(1)
	if tl.GarbagePieces != 1 || len(tl.Streamed) != 1 || tl.Streamed[0].End != 700 {
		t.Fatalf("garbage %d, streamed %+v", tl.GarbagePieces, tl.Streamed)
	}
	se, ok := ix.Streamed()
	if !ok || se.LSN != wal.SegmentStartLSN(3, seg1)+700 || se.Timeline != 1 {
		t.Fatalf("streamed end %+v %v", se, ok)
	}
	if len(tl.Gaps) != 0 {
		t.Fatalf("gaps %v", tl.Gaps)
	}
}
