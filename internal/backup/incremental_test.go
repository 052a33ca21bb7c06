package backup

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/walsum"
)

const cs = catalog.ChunkSize

// parentWith returns a parent backup holding one relation file of n
// chunks (the last one last bytes long) in one piece of object 3, with
// chunk checksums 1..n.
func parentWith(path string, n int, last int64) *catalog.Manifest {
	size := int64(n-1)*cs + last
	var sums []byte
	for i := range n {
		sums = binary.LittleEndian.AppendUint64(sums, uint64(i+1))
	}
	m := &catalog.Manifest{}
	m.ID = "20261201T000000Z"
	m.Timeline = 1
	m.Type = "full"
	m.Objects = []catalog.Object{{Seq: 3, Size: size + 100}}
	m.Files = []catalog.File{{Path: path, Size: size, Pieces: []catalog.Piece{{Object: 3, Offset: 100, Size: size, XXH64: "00000000000000ff", Chunks: sums}}}}
	return m
}

func relFile(path string, size int64) srcFile {
	f := srcFile{rel: path, size: size}
	f.fork, f.relSeg, f.isRel = relationOf(path)
	return f
}

var geo8k = geometry{blockSize: 8192, relSegBlocks: 131072}

// copied returns the chunk indexes of file 0 the plan copies.
func copied(pl *incPlan) map[int]bool {
	out := map[int]bool{}
	for _, sp := range pl.spans {
		for off := sp.offset; off < sp.offset+sp.size; off += cs {
			out[int(off/cs)] = true
		}
	}
	return out
}

func TestPlanIncrementalRules(t *testing.T) {
	const path = "base/5/16384"
	rel := walsum.RelFork{SpcOID: 1663, DBOID: 5, RelNumber: 16384, Fork: walsum.MainFork}
	parent := parentWith(path, 8, cs)
	cases := []struct {
		name   string
		size   int64
		change func(s *walsum.Summary)
		want   []int // chunks copied
	}{
		{"nothing changed", 8 * cs, func(s *walsum.Summary) {}, nil},
		{"one block", 8 * cs, func(s *walsum.Summary) { s.AddBlock(rel, 16*3+5) }, []int{3}},
		{"two blocks, one chunk each", 8 * cs, func(s *walsum.Summary) { s.AddBlock(rel, 0); s.AddBlock(rel, 16*7+15) }, []int{0, 7}},
		{"another relation", 8 * cs, func(s *walsum.Summary) { s.AddBlock(walsum.RelFork{SpcOID: 1663, DBOID: 5, RelNumber: 99}, 1) }, nil},
		{"truncated at block 40", 8 * cs, func(s *walsum.Summary) { s.SetLimit(rel, 40) }, []int{2, 3, 4, 5, 6, 7}},
		{"created", 8 * cs, func(s *walsum.Summary) { s.SetLimit(rel, 0) }, []int{0, 1, 2, 3, 4, 5, 6, 7}},
		{"database copied as a whole", 8 * cs, func(s *walsum.Summary) { s.DBs[walsum.DB{SpcOID: 1663, DBOID: 5}] = true }, []int{0, 1, 2, 3, 4, 5, 6, 7}},
		{"grown by zero pages", 10 * cs, func(s *walsum.Summary) {}, []int{8, 9}},
		{"shrunk", 5 * cs, func(s *walsum.Summary) {}, nil},
	}
	for _, c := range cases {
		s := walsum.New()
		c.change(s)
		pl := planIncremental([]srcFile{relFile(path, c.size)}, parent, s, geo8k)
		got := copied(pl)
		if len(got) != len(c.want) {
			t.Errorf("%s: copies chunks %v, want %v", c.name, got, c.want)
			continue
		}
		for _, ci := range c.want {
			if !got[ci] {
				t.Errorf("%s: copies chunks %v, want %v", c.name, got, c.want)
			}
		}
		// What is not copied is referred to, byte for byte, at the
		// parent's offsets, with the parent's chunk checksums.
		var covered int64
		for _, sp := range pl.spans {
			covered += sp.size
		}
		for _, ref := range pl.refs[0] {
			covered += ref.Size
			ci := int(ref.FileOffset / cs)
			if ref.Backup != parent.ID || ref.Object != 3 || ref.Offset != 100+ref.FileOffset || binary.LittleEndian.Uint64(ref.Chunks) != uint64(ci+1) {
				t.Errorf("%s: reference %+v does not point at the parent's copy", c.name, ref)
			}
		}
		if covered != c.size {
			t.Errorf("%s: %d of %d bytes planned", c.name, covered, c.size)
		}
	}

	// A parent's last chunk that is shorter than the file's now is copied.
	short := parentWith(path, 2, 8192)
	if got := copied(planIncremental([]srcFile{relFile(path, 2*cs)}, short, walsum.New(), geo8k)); !got[1] || got[0] {
		t.Errorf("a chunk the parent has shorter: copies %v, want [1]", got)
	}
	// The second segment of a relation: blocks count from 131072.
	seg1 := "base/5/16384.1"
	s := walsum.New()
	s.AddBlock(rel, 131072+16*2)
	if got := copied(planIncremental([]srcFile{relFile(seg1, 8*cs)}, parentWith(seg1, 8, cs), s, geo8k)); len(got) != 1 || !got[2] {
		t.Errorf("segment 1: copies %v, want [2]", got)
	}
	// FSM forks, other files and files the parent does not have: whole.
	for _, p := range []string{"base/5/16384_fsm", "base/5/PG_VERSION", "base/5/77777"} {
		f := relFile(p, 3*cs)
		f.rel = p
		pl := planIncremental([]srcFile{f}, parentWith("base/5/16384_fsm", 3, cs), walsum.New(), geo8k)
		if len(pl.spans) != 1 || pl.spans[0].size != 3*cs || len(pl.refs) != 0 {
			t.Errorf("%s: planned %+v, refs %+v; want it copied whole", p, pl.spans, pl.refs)
		}
	}
	// No summaries: relation files the parent has are compared instead.
	if pl := planIncremental([]srcFile{relFile(path, 8*cs)}, parent, nil, geo8k); len(pl.scan) != 1 || len(pl.spans) != 0 {
		t.Errorf("without summaries: scan %v, spans %v", pl.scan, pl.spans)
	}
}

func TestChooseParent(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	mk := func(id string, chain int, parent, full string) *catalog.Manifest {
		m := parentWith("base/5/1", 1, cs)
		m.ID, m.Chain, m.Parent, m.Full = id, chain, parent, full
		m.StartTime, _ = catalog.IDTime(id)
		if parent != "" {
			m.Type = "incremental"
		}
		return m
	}
	full := mk("20261201T000000Z", 0, "", "")
	inc := mk("20261201T010000Z", 1, full.ID, full.ID)
	old := mk("20261101T000000Z", 0, "", "")
	oldInc := mk("20261130T000000Z", 3, "20261129T000000Z", old.ID)
	sealed := mk("20261201T020000Z", 0, "", "")
	sealed.Sealed = true
	otherTL := mk("20261201T030000Z", 0, "", "")
	otherTL.Timeline = 2
	nochunks := mk("20261201T040000Z", 0, "", "")
	nochunks.Files[0].Pieces[0].Chunks = nil
	noFull := mk("20261201T050000Z", 1, full.ID, "")

	cases := []struct {
		name     string
		newest   *catalog.Manifest
		typ      string
		maxChain int
		want     string // parent id, or a word of the reason
	}{
		{"no backups", nil, TypeAuto, 7, "no earlier backup"},
		{"on the full", full, TypeAuto, 7, full.ID},
		{"on the newest", inc, TypeAuto, 7, inc.ID},
		{"chain full", inc, TypeAuto, 1, "--max-chain"},
		{"max-chain 0", full, TypeAuto, -1, "--max-chain"},
		{"full too old", old, TypeAuto, 7, "--full-every"},
		{"the chain's full too old", oldInc, TypeAuto, 7, old.ID},
		{"asked for incremental: old full is fine", old, TypeIncremental, 7, old.ID},
		{"asked for full", full, TypeFull, 7, "full backup was asked"},
		{"sealed", sealed, TypeIncremental, 7, "no key"},
		{"timeline", otherTL, TypeAuto, 7, "timeline 2"},
		{"no chunk checksums", nochunks, TypeAuto, 7, "without chunk checksums"},
		{"no full named", noFull, TypeAuto, 7, "names no full"},
	}
	for _, c := range cases {
		p, why := chooseParent(c.newest, c.typ, c.maxChain, 7*24*time.Hour, 1, now)
		got := why
		if p != nil {
			got = p.ID
		}
		if !strings.Contains(got, c.want) {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}
