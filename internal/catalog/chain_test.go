package catalog

import (
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/wal"
)

const seg16 = 16 << 20

func index(tls map[uint32][2]uint64, missing ...[2]uint64) *WALIndex {
	ix := &WALIndex{SegSize: seg16}
	skip := map[[2]uint64]bool{}
	for _, m := range missing {
		skip[m] = true
	}
	for tli := uint32(1); tli <= 5; tli++ {
		r, ok := tls[tli]
		if !ok {
			continue
		}
		t := NewTimelineWAL(tli, seg16)
		for n := r[0]; n <= r[1]; n++ {
			if !skip[[2]uint64{uint64(tli), n}] {
				t.Add(n, time.Now())
			}
		}
		ix.Timelines = append(ix.Timelines, t)
	}
	return ix
}

func TestChainFollowsTimelines(t *testing.T) {
	// Timeline 2 branched from 1 inside segment 5; timeline 1 went on to
	// segment 9 (an abandoned branch).
	h := Histories{2: {{TLI: 1, SwitchLSN: wal.SegmentStartLSN(5, seg16) + 0x100}}}
	name := func(tli, no uint64) string { return wal.SegmentName(wal.TimeLineID(tli), no, seg16) }

	c := index(map[uint32][2]uint64{1: {1, 9}, 2: {5, 8}}).ChainFrom(h, 1, wal.SegmentStartLSN(2, seg16), 0)
	if c.Target != 2 || c.Last != name(2, 8) || c.Missing != "" || c.Newest != name(2, 8) {
		t.Fatalf("%+v", c)
	}
	// A gap on timeline 2.
	c = index(map[uint32][2]uint64{1: {1, 9}, 2: {5, 8}}, [2]uint64{2, 6}).ChainFrom(h, 1, wal.SegmentStartLSN(2, seg16), 0)
	if c.Last != name(2, 5) || c.Missing != name(2, 6) {
		t.Fatalf("gap: %+v", c)
	}
	// A gap on timeline 1 before the switch.
	c = index(map[uint32][2]uint64{1: {1, 9}, 2: {5, 8}}, [2]uint64{1, 3}).ChainFrom(h, 1, wal.SegmentStartLSN(2, seg16), 0)
	if c.Missing != name(1, 3) {
		t.Fatalf("gap before the switch: %+v", c)
	}
	// A backup taken on timeline 1 after the switch point does not follow
	// timeline 2.
	c = index(map[uint32][2]uint64{1: {1, 9}, 2: {5, 8}}).ChainFrom(h, 1, wal.SegmentStartLSN(7, seg16), 0)
	if c.Target != 1 || c.Last != name(1, 9) || c.Missing != "" {
		t.Fatalf("abandoned branch: %+v", c)
	}
	// The start segment itself missing.
	c = index(map[uint32][2]uint64{1: {3, 9}}).ChainFrom(nil, 1, wal.SegmentStartLSN(2, seg16), 0)
	if c.Missing != name(1, 2) || c.Last != "" {
		t.Fatalf("missing start: %+v", c)
	}
}
