package walrec

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/pgkeep/pgkeep/internal/wal"
)

// The fixture: a 1 MiB segment of PostgreSQL 15 (initdb --wal-segsize=1)
// holding a CREATE TABLE, 3000 inserted rows of md5 text, a restore point
// 'fixture-rp', an aborted insert, a 20 kB row (records across pages) and
// a switch; the .waldump.gz file is pg_waldump's view of it (LSN, rmgr,
// total length, block references), the reference the walk must agree with.
func readGz(t testing.TB, name string) []byte {
	t.Helper()
	f, err := os.Open("testdata/" + name)
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

var rmgrNames = map[uint8]string{0: "XLOG", 1: "Transaction", 2: "Storage", 3: "CLOG", 4: "Database", 5: "Tablespace",
	6: "MultiXact", 7: "RelMap", 8: "Standby", 9: "Heap2", 10: "Heap", 11: "Btree", 12: "Hash", 13: "Gin", 14: "Gist",
	15: "Sequence", 16: "SPGist", 17: "BRIN", 18: "CommitTs", 19: "ReplicationOrigin", 20: "Generic", 21: "LogicalMessage"}

var forkNames = map[uint8]string{0: "main", 1: "fsm", 2: "vm", 3: "init"}

func TestSegmentMatchesWaldump(t *testing.T) {
	seg := readGz(t, "000000010000000000000007_15_1mb.gz")
	var want []string
	sc := bufio.NewScanner(bytes.NewReader(readGz(t, "000000010000000000000007_15_1mb.waldump.gz")))
	for sc.Scan() {
		want = append(want, sc.Text())
	}
	var got []string
	var moments []*Moment
	next, err := Segment(seg, wal.SegmentStartLSN(7, 1<<20), func(r *Record) error {
		d, err := Decode(r, 15)
		if err != nil {
			return err
		}
		parts := []string{fmt.Sprintf("%X/%08X", uint32(r.LSN>>32), uint32(r.LSN)), rmgrNames[r.RmID], strconv.Itoa(len(r.Raw))}
		for _, b := range d.Blocks {
			parts = append(parts, fmt.Sprintf("%d/%d/%d/%s/%d", b.Rel.SpcOID, b.Rel.DBOID, b.Rel.RelNumber, forkNames[b.Fork], b.Block))
		}
		got = append(got, strings.Join(parts, " "))
		m, err := MomentOf(r, 15)
		if err != nil {
			return err
		}
		if m != nil {
			moments = append(moments, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d records, pg_waldump sees %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("record %d: %q, pg_waldump: %q", i, got[i], want[i])
		}
	}
	if next != wal.SegmentStartLSN(8, 1<<20) {
		t.Fatalf("after the switch the next record is at %s", next)
	}
	var kinds []string
	for _, m := range moments {
		k := m.Kind
		if m.Name != "" {
			k += " " + m.Name
		}
		kinds = append(kinds, k)
	}
	if s := strings.Join(kinds, ","); s != "commit,commit,restore point fixture-rp,abort,commit" {
		t.Fatalf("moments %s", s)
	}
	if moments[0].Time.Year() != 2026 || !moments[4].Time.After(moments[0].Time) {
		t.Fatalf("commit times %v .. %v", moments[0].Time, moments[4].Time)
	}
}

// TestSegmentCut: a segment cut short (a .partial, a streamed prefix)
// yields the complete records before the cut and says where the cut
// record starts.
func TestSegmentCut(t *testing.T) {
	seg := readGz(t, "000000010000000000000007_15_1mb.gz")
	start := wal.SegmentStartLSN(7, 1<<20)
	var all []wal.LSN
	Segment(seg, start, func(r *Record) error { all = append(all, r.LSN); return nil })
	for _, cut := range []int{100, 8192, 8192 + 30, 300000, len(seg) - 1} {
		var n int
		var last *Record
		next, err := Segment(seg[:cut], start, func(r *Record) error {
			n++
			if r.End > start+wal.LSN(cut) {
				t.Fatalf("cut at %d: record at %s ends past the cut", cut, r.LSN)
			}
			last = r
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n < len(all) && next != all[n] {
			t.Fatalf("cut at %d: next %s, want %s", cut, next, all[n])
		}
		_ = last
	}
	// Zeroed tail: the end of written WAL.
	z := bytes.Clone(seg)
	for i := 200000; i < len(z); i++ {
		z[i] = 0
	}
	var n int
	if _, err := Segment(z, start, func(*Record) error { n++; return nil }); err != nil || n == 0 || n >= len(all) {
		t.Fatalf("zeroed tail: %d records, %v", n, err)
	}
	// A flipped byte inside a record ends the valid WAL there (CRC).
	f := bytes.Clone(seg)
	f[300000] ^= 0xFF
	n = 0
	if _, err := Segment(f, start, func(*Record) error { n++; return nil }); err != nil || n == 0 || n >= len(all) {
		t.Fatalf("damaged record: %d records, %v", n, err)
	}
}

func FuzzSegment(f *testing.F) {
	f.Add(readGz(f, "000000010000000000000006_15_1mb.gz")[:16384])
	f.Fuzz(func(t *testing.T, data []byte) {
		Segment(data, 0, func(r *Record) error {
			Decode(r, 15)
			MomentOf(r, 15)
			return nil
		})
	})
}

// TestParserStreams: fed in pieces of any size, the parser sees the same
// records as on the whole segment; cut short, it hands back the record the
// cut went through, whose headers DecodePrefix reads.
func TestParserStreams(t *testing.T) {
	seg := readGz(t, "000000010000000000000007_15_1mb.gz")
	start := wal.SegmentStartLSN(7, 1<<20)
	var want []wal.LSN
	Segment(seg, start, func(r *Record) error { want = append(want, r.LSN); return nil })
	for _, step := range []int{1000, 8192, 3*8192 + 17, 1 << 20} {
		var got []wal.LSN
		p := NewParser(start, func(r *Record) error { got = append(got, r.LSN); return nil })
		for off := 0; off < len(seg); off += step {
			p.Write(seg[off:min(off+step, len(seg))])
		}
		if _, _, err := p.Close(); err != nil || len(got) != len(want) || got[len(got)-1] != want[len(want)-1] {
			t.Fatalf("step %d: %d records (want %d), %v", step, len(got), len(want), err)
		}
	}
	// Cut inside a record: the partial record is the next one.
	var full []*Record
	Segment(seg, start, func(r *Record) error {
		full = append(full, &Record{LSN: r.LSN, End: r.End, RmID: r.RmID, Raw: append([]byte(nil), r.Raw...)})
		return nil
	})
	checked := 0
	for _, r := range full {
		if r.End-r.LSN < 200 || len(r.Raw) < 100 {
			continue
		}
		cut := int(r.LSN-start) + 60
		p := NewParser(start, func(*Record) error { return nil })
		p.Write(seg[:cut])
		next, partial, err := p.Close()
		if err != nil || partial == nil || partial.LSN != r.LSN || next != r.LSN {
			t.Fatalf("cut in the record at %s: next %s, partial %+v, %v", r.LSN, next, partial, err)
		}
		d, complete, err := DecodePrefix(partial, 15)
		whole, werr := Decode(r, 15)
		if err != nil || werr != nil {
			t.Fatalf("prefix of %s: %v / %v", r.LSN, err, werr)
		}
		if complete && len(d.Blocks) != len(whole.Blocks) {
			t.Fatalf("prefix of %s: %d blocks, the whole record has %d", r.LSN, len(d.Blocks), len(whole.Blocks))
		}
		checked++
		if checked > 50 {
			break
		}
	}
	if checked == 0 {
		t.Fatal("no record long enough to cut")
	}
}
