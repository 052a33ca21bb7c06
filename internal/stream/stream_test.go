package stream

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage/local"
	"github.com/pgkeep/pgkeep/internal/wal"
	"github.com/pgkeep/pgkeep/internal/walarchive"
)

const seg1 = 1 << 20

func testRepo(t *testing.T) (*repo.Repo, *repo.Identity) {
	t.Helper()
	st, err := local.New(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	r := repo.New(st, repo.Options{Compression: envelope.Compression{Codec: envelope.Zstd}, WALCompression: envelope.Compression{Codec: envelope.Zstd}})
	id, err := r.EnsureIdentity(context.Background(), repo.Identity{SystemIdentifier: 42, PGMajor: 15, WalSegSize: seg1})
	if err != nil {
		t.Fatal(err)
	}
	return r, id
}

// walBytes returns n bytes of fake WAL from segment no on, each segment
// starting with a PostgreSQL 15 long page header of cluster 42.
func walBytes(no uint64, n int) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(no, 1))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	for off := 0; off < n; off += seg1 {
		h := b[off:]
		binary.LittleEndian.PutUint16(h[0:], 0xD110)
		binary.LittleEndian.PutUint16(h[2:], 0x0002)
		binary.LittleEndian.PutUint32(h[4:], 1)
		binary.LittleEndian.PutUint64(h[8:], uint64(wal.SegmentStartLSN(no+uint64(off/seg1), seg1)))
		binary.LittleEndian.PutUint64(h[24:], 42)
		binary.LittleEndian.PutUint32(h[32:], seg1)
		binary.LittleEndian.PutUint32(h[36:], 8192)
	}
	return b
}

type recorder struct {
	mu       sync.Mutex
	segments []string
	durable  wal.LSN
}

func (r *recorder) SegmentStored(name string, stored int64, existed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.segments = append(r.segments, name)
}
func (r *recorder) Durable(lsn wal.LSN) { r.mu.Lock(); r.durable = lsn; r.mu.Unlock() }
func (r *recorder) Warn(string)         {}

// The writer stores what arrived since the last flush as one piece per
// segment it touches; the pieces tile each segment from the resume
// point, a completed segment is stored whole, and the durable end is the
// end of what is stored.
func TestWriterTilesAndCompletes(t *testing.T) {
	ctx := context.Background()
	r, id := testRepo(t)
	ev := &recorder{}
	// Resume in segment 3, of which the repository holds 1000 bytes.
	w := NewWriter(r, id, 1, 3, 1000, ev)
	if w.Start() != wal.SegmentStartLSN(3, seg1) || w.Durable() != wal.SegmentStartLSN(3, seg1)+1000 {
		t.Fatalf("start %s, durable %s", w.Start(), w.Durable())
	}
	data := walBytes(3, seg1+300000)
	at := w.Start()
	for _, n := range []int{500, 9500, seg1 - 20000, 10000, 300000} { // the third write crosses into segment 4
		if err := w.Write(ctx, at, data[at-w.Start():][:n]); err != nil {
			t.Fatal(err)
		}
		at += wal.LSN(n)
		if n == 9500 || n == 300000 {
			d, err := w.Flush(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if d != at {
				t.Fatalf("durable %s after a flush, want %s", d, at)
			}
		}
	}
	if err := w.Write(ctx, at+1, []byte{1}); err == nil {
		t.Fatal("a write that does not continue the WAL received was accepted")
	}
	w.Close()
	if err := w.StoreWhole(ctx); err != nil {
		t.Fatal(err)
	}
	if len(ev.segments) != 1 || ev.segments[0] != wal.SegmentName(1, 3, seg1) {
		t.Fatalf("segments stored whole: %v", ev.segments)
	}
	ix, _, err := catalog.LoadWAL(ctx, r, seg1)
	if err != nil {
		t.Fatal(err)
	}
	tl := ix.Timeline(1)
	s3 := tl.StreamedAt(3)
	if s3 == nil || !s3.Whole || len(s3.Pieces) != 2 || s3.Pieces[0].Start != 1000 {
		t.Fatalf("pieces of segment 3 (from the resume point on, then to its end): %+v", s3)
	}
	s4 := tl.StreamedAt(4)
	if s4 == nil || s4.End != 300000 || s4.Hole || s4.Whole {
		t.Fatalf("the streamed tail, segment 4: %+v", s4)
	}
	got, err := walarchive.ReadSegment(ctx, r, ix, wal.SegmentName(1, 3, seg1))
	if err != nil || !bytes.Equal(got, data[:seg1]) {
		t.Fatalf("segment 3 stored whole: %v", err)
	}
	got, err = walarchive.ReadSegment(ctx, r, ix, wal.SegmentName(1, 4, seg1))
	if err != nil || !bytes.Equal(got[:300000], data[seg1:]) {
		t.Fatalf("segment 4 from its pieces: %v", err)
	}
}

// Writes wait while the store is behind by maxBuffered segments.
func TestWriterBoundsMemory(t *testing.T) {
	r, id := testRepo(t)
	w := NewWriter(r, id, 1, 1, 0, nil)
	data := walBytes(1, (maxBuffered+1)*seg1)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := w.Write(ctx, w.Start(), data)
	if err == nil {
		t.Fatal("a writer with nothing stored took more than maxBuffered segments")
	}
}

// Streaming resumes after the newest segment the repository holds
// complete on the server's history, counting a switch segment on the new
// timeline, and skips the bytes of it already streamed.
func TestResumePoint(t *testing.T) {
	name := func(tli wal.TimeLineID, no uint64) string { return wal.SegmentName(tli, no, seg1) }
	obj := func(n string) repo.WALObject {
		return repo.WALObject{Name: n, Kind: wal.KindSegment, Key: repo.WAL(n), ModTime: time.Now()}
	}
	piece := func(seg string, s, e uint64) repo.WALObject {
		p := repo.Piece{Segment: seg, Start: s, End: e}
		return repo.WALObject{Name: p.String(), Piece: &p, Key: repo.StreamedPiece(p), ModTime: time.Now()}
	}
	switch2 := []wal.HistoryEntry{{TLI: 1, SwitchLSN: wal.SegmentStartLSN(5, seg1) + 0x500}}
	for _, c := range []struct {
		what string
		objs []repo.WALObject
		tli  wal.TimeLineID
		hist []wal.HistoryEntry
		want Resume
	}{
		{"empty", nil, 1, nil, Resume{Empty: true}},
		{"only the first segment, in part", []repo.WALObject{piece(name(1, 7), 0, 300)}, 1, nil, Resume{TLI: 1, SegNo: 7, Stored: 300}},
		{"whole segments", []repo.WALObject{obj(name(1, 1)), obj(name(1, 2))}, 1, nil, Resume{TLI: 1, SegNo: 3}},
		{"a streamed tail", []repo.WALObject{obj(name(1, 2)), piece(name(1, 3), 0, 4000), piece(name(1, 3), 4000, 9000)}, 1, nil, Resume{TLI: 1, SegNo: 3, Stored: 9000}},
		{"complete in pieces", []repo.WALObject{obj(name(1, 2)), piece(name(1, 3), 0, seg1)}, 1, nil, Resume{TLI: 1, SegNo: 4}},
		{"a hole: resume at its start", []repo.WALObject{obj(name(1, 2)), piece(name(1, 3), 0, 10), piece(name(1, 3), 20, 30)}, 1, nil, Resume{TLI: 1, SegNo: 3, Stored: 10}},
		{"after a promotion: the switch segment on the new timeline",
			[]repo.WALObject{obj(name(1, 4)), piece(name(1, 5), 0, 0x500), piece(name(1, 5), 0x500, 0x9000)}, 2, switch2, Resume{TLI: 2, SegNo: 5}},
		{"the new timeline under way", []repo.WALObject{obj(name(1, 4)), obj(name(2, 5)), piece(name(2, 6), 0, 77)}, 2, switch2, Resume{TLI: 2, SegNo: 6, Stored: 77}},
		{"the old timeline's abandoned branch does not count", []repo.WALObject{obj(name(1, 4)), obj(name(1, 5)), obj(name(1, 6))}, 2, switch2, Resume{TLI: 2, SegNo: 5}},
	} {
		ix := catalog.IndexWAL(c.objs, seg1)
		if got := ResumePoint(ix, c.tli, c.hist); got != c.want {
			t.Errorf("%s: resume %+v, want %+v", c.what, got, c.want)
		}
	}
}
