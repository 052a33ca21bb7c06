package walsum

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pgkeep/pgkeep/internal/wal"
)

func readGz(t testing.TB, name string) []byte {
	t.Helper()
	f, err := os.Open("../walrec/testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestSummaryCoversWaldump: every block pg_waldump shows a record of the
// fixture segment touching is in the summary, the relations CREATE TABLE
// made are marked created (limit 0), and the summary survives encoding.
func TestSummaryCoversWaldump(t *testing.T) {
	seg := readGz(t, "000000010000000000000007_15_1mb.gz")
	s, err := Segment(seg, wal.SegmentStartLSN(7, 1<<20), 15)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Complete {
		t.Fatal("a whole segment gave an incomplete summary")
	}
	forks := map[string]uint8{"main": MainFork, "fsm": FSMFork, "vm": VMFork, "init": InitFork}
	sc := bufio.NewScanner(bytes.NewReader(readGz(t, "000000010000000000000007_15_1mb.waldump.gz")))
	refs := 0
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		for _, ref := range f[3:] {
			p := strings.Split(ref, "/")
			n := func(i int) uint32 { v, _ := strconv.ParseUint(p[i], 10, 32); return uint32(v) }
			rf := RelFork{n(0), n(1), n(2), forks[p[3]]}
			c, _ := s.Lookup(rf)
			if c == nil || !c.Changed(n(4)) {
				t.Fatalf("%s (record at %s) is not in the summary", ref, f[0])
			}
			refs++
		}
	}
	if refs < 1000 {
		t.Fatalf("only %d block references in the fixture?", refs)
	}
	created := 0
	for _, c := range s.Rels {
		if c.Limit == 0 {
			created++
		}
	}
	if created < 2 {
		t.Fatalf("CREATE TABLE with a primary key creates at least two relations; %d marked created", created)
	}
	back, err := Decode(s.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Rels) != len(s.Rels) || !bytes.Equal(back.Encode(), s.Encode()) {
		t.Fatal("encoding does not round-trip")
	}
	for r, c := range s.Rels {
		if b := back.Rels[r]; b.Limit != c.Limit || !slices.Equal(b.Blocks(), c.Blocks()) {
			t.Fatalf("%+v: %+v became %+v", r, c, b)
		}
	}
}

func TestMergeAndRecords(t *testing.T) {
	a, b := New(), New()
	r := RelFork{1663, 5, 16384, MainFork}
	a.AddBlock(r, 7)
	b.AddBlock(r, 9)
	b.SetLimit(r, 100)
	b.Complete = false
	b.DBs[DB{1663, 16400}] = true
	a.Merge(b)
	c, whole := a.Lookup(r)
	if !c.Changed(7) || !c.Changed(9) || c.Changed(8) || !c.Changed(100) || !c.Changed(5000) || whole || a.Complete {
		t.Fatalf("merge: %+v", c)
	}
	if _, whole := a.Lookup(RelFork{1663, 16400, 1, MainFork}); !whole {
		t.Fatal("a database created as a whole")
	}
	for _, bad := range [][]byte{nil, []byte("PGKSUM\x02"), append(New().Encode(), 0)} {
		if _, err := Decode(bad); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}

func FuzzDecode(f *testing.F) {
	s := New()
	s.AddBlock(RelFork{1, 2, 3, 0}, 4)
	s.SetLimit(RelFork{1, 2, 3, 1}, 0)
	f.Add(s.Encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		if s, err := Decode(data); err == nil && !bytes.Equal(s.Encode(), data) {
			// Only canonical encodings round-trip; others must not crash.
			_ = s
		}
	})
}

func BenchmarkSegment(b *testing.B) {
	data, err := os.ReadFile("/tmp/walreal/seg_update")
	if err != nil {
		b.Skip(err)
	}
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		s, err := Segment(data, wal.SegmentStartLSN(0x15, 16<<20), 15)
		if err != nil || len(s.Rels) == 0 {
			b.Fatal(err, len(s.Rels))
		}
	}
}

// TestJoinAcrossSegments cuts the fixture at every page that begins with
// the continuation of a record, as if it were two segments: the summary
// of the first, joined with that of the second, and merged with it, must
// say exactly what the summary of the whole says, through encoding.
func TestJoinAcrossSegments(t *testing.T) {
	seg := readGz(t, "000000010000000000000007_15_1mb.gz")
	start := wal.SegmentStartLSN(7, 1<<20)
	whole, err := Segment(seg, start, 15)
	if err != nil {
		t.Fatal(err)
	}
	const page = 8192
	cuts, incomplete := 0, 0
	for k := 1; k*page < len(seg); k++ {
		if seg[k*page+2]&1 == 0 { // XLP_FIRST_IS_CONTRECORD
			continue
		}
		a, err := Segment(seg[:k*page], start, 15)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Segment(seg[k*page:], start+wal.LSN(k*page), 15)
		if err != nil {
			t.Fatal(err)
		}
		if b.HeadLen == 0 {
			t.Fatalf("page %d continues a record, the summary has no head", k)
		}
		if !a.Complete {
			incomplete++
		}
		a, _ = Decode(a.Encode())
		b, _ = Decode(b.Encode())
		if !a.Join(b, 15) {
			t.Fatalf("cut at page %d: the summaries do not join (tail %d bytes, head %d of %d)", k, len(a.Tail), len(b.Head), b.HeadLen)
		}
		a.Merge(b)
		a.Head, a.HeadLen = whole.Head, whole.HeadLen
		if !bytes.Equal(a.Encode(), whole.Encode()) {
			t.Fatalf("cut at page %d: the joined summaries differ from the whole's", k)
		}
		cuts++
	}
	if cuts < 10 || incomplete == 0 {
		t.Fatalf("%d cuts, %d incomplete before the join: the fixture does not exercise Join", cuts, incomplete)
	}
	t.Logf("%d cuts, %d needed the join", cuts, incomplete)
}

func TestSortBlocks(t *testing.T) {
	// Sizes on both sides of the comparison-sort cut; numbers spread
	// over all 32 bits, and small ones (passes skipped); the scratch
	// reused from call to call.
	var scratch []uint32
	for _, n := range []int{0, 1, 255, 256, 511, 512, 100000, 3000} {
		for _, small := range []bool{false, true} {
			b := make([]uint32, n)
			x := uint32(2463534242)
			for i := range b {
				x ^= x << 13
				x ^= x >> 17
				x ^= x << 5
				b[i] = x >> (i % 20)
				if small {
					b[i] &= 0xFFFF
				}
			}
			want := slices.Clone(b)
			slices.Sort(want)
			scratch = sortBlocks(b, scratch)
			if !slices.Equal(b, want) {
				t.Fatalf("%d blocks (small %v) sorted wrong", n, small)
			}
		}
	}
}
