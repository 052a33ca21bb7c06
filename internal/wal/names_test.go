package wal

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

const (
	mib = 1 << 20
	gib = 1 << 30
)

func TestSegmentNames(t *testing.T) {
	cases := []struct {
		tli     TimeLineID
		no      uint64
		segSize uint64
		name    string
	}{
		// 16 MiB: 256 segments per xlogid.
		{1, 1, 16 * mib, "000000010000000000000001"},
		{1, 0xFF, 16 * mib, "0000000100000000000000FF"},
		{1, 0x100, 16 * mib, "000000010000000100000000"},
		{2, 0x1234, 16 * mib, "000000020000001200000034"},
		{0xA, 0xFFFFFFFFFF, 16 * mib, "0000000AFFFFFFFF000000FF"}, // the last 16 MiB segment
		// 1 MiB: 4096 per xlogid.
		{1, 4095, 1 * mib, "000000010000000000000FFF"},
		{1, 4096, 1 * mib, "000000010000000100000000"},
		{7, 3*4096 + 17, 1 * mib, "000000070000000300000011"},
		// 64 MiB: 64 per xlogid.
		{3, 64 + 5, 64 * mib, "000000030000000100000005"},
		{3, 63, 64 * mib, "00000003000000000000003F"},
		// 1 GiB: 4 per xlogid.
		{1, 9, gib, "000000010000000200000001"},
		{1, 3, gib, "000000010000000000000003"},
	}
	for _, c := range cases {
		if got := SegmentName(c.tli, c.no, c.segSize); got != c.name {
			t.Errorf("SegmentName(%d, %d, %d) = %s, want %s", c.tli, c.no, c.segSize, got, c.name)
		}
		seg, err := ParseSegmentName(c.name, c.segSize)
		if err != nil || seg != (Segment{c.tli, c.no}) {
			t.Errorf("ParseSegmentName(%s, %d) = %+v, %v", c.name, c.segSize, seg, err)
		}
	}
	bad := []struct {
		name    string
		segSize uint64
	}{
		{"000000010000000000000100", 16 * mib},  // low part 0x100 > 0xFF
		{"000000010000000000000040", 64 * mib},  // 0x40 > 0x3F
		{"000000010000000000000004", gib},       // 4 > 3
		{"000000010000000000001000", 1 * mib},   // 0x1000 > 0xFFF
		{"00000001000000000000000a", 16 * mib},  // lower case
		{"000000000000000000000001", 16 * mib},  // timeline 0
		{"00000001000000000000001", 16 * mib},   // 23 digits
		{"0000000100000000000000010", 16 * mib}, // 25 digits
		{"000000010000000000000001", 3 * mib},   // bad size
		{"000000010000000000000001", 2 * gib},   // too big
		{"000000010000000000000001", 512 << 10}, // too small
	}
	for _, b := range bad {
		if seg, err := ParseSegmentName(b.name, b.segSize); err == nil {
			t.Errorf("ParseSegmentName(%q, %d) = %+v, want an error", b.name, b.segSize, seg)
		}
	}
}

func TestSegmentNamePanicsOnBadSize(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("SegmentName with a 3 MiB segment size did not panic")
		}
	}()
	SegmentName(1, 1, 3*mib)
}

func TestSegmentArithmetic(t *testing.T) {
	const seg = 16 * mib
	for lsn, want := range map[LSN]uint64{0: 0, 0x3000060: 3, 0x2FFFFFF: 2, 0x3000000: 3, 0x100000000: 256, 0x1FF000000: 511} {
		if got := SegmentOf(lsn, seg); got != want {
			t.Errorf("SegmentOf(%s) = %d, want %d", lsn, got, want)
		}
	}
	for lsn, want := range map[LSN]uint64{0x3000060: 3, 0x3000000: 2, 0x3000001: 3, 0x100000000: 255} {
		if got := PrevSegmentOf(lsn, seg); got != want {
			t.Errorf("PrevSegmentOf(%s) = %d, want %d", lsn, got, want)
		}
	}
	if SegmentStartLSN(3, seg) != 0x3000000 || SegmentStartLSN(256, seg) != 0x100000000 {
		t.Error("SegmentStartLSN, 16 MiB")
	}
	// Other sizes: the segment of an LSN and its start agree.
	for _, size := range []uint64{1 * mib, 2 * mib, 64 * mib, 256 * mib, gib} {
		for _, lsn := range []LSN{0, 1, LSN(size) - 1, LSN(size), 0x123456789A, 0xFFFFFFFFFFFFFFFF} {
			no := SegmentOf(lsn, size)
			start := SegmentStartLSN(no, size)
			if start > lsn || lsn-start >= LSN(size) {
				t.Errorf("size %d: %s is in segment %d starting at %s", size, lsn, no, start)
			}
			name := SegmentName(1, no, size)
			if s, err := ParseSegmentName(name, size); err != nil || s.No != no {
				t.Errorf("size %d: %s does not round-trip: %+v %v", size, name, s, err)
			}
		}
	}
	for _, n := range []uint64{1 * mib, 2 * mib, 16 * mib, 64 * mib, 512 * mib, gib} {
		if !ValidSegSize(n) {
			t.Errorf("%d should be valid", n)
		}
	}
	for _, n := range []uint64{0, 1, mib / 2, 3 * mib, 2 * gib, 1<<63 + 1} {
		if ValidSegSize(n) {
			t.Errorf("%d should be invalid", n)
		}
	}
}

func TestSegmentRange(t *testing.T) {
	cases := []struct {
		name        string
		start, stop LSN
		segSize     uint64
		want        []string
	}{
		// A real PostgreSQL 15 backup (testdata of pgcontrol): START WAL
		// LOCATION 0/2000028, STOP WAL LOCATION 0/3000050.
		{"real backup", 0x2000028, 0x3000050, 16 * mib, []string{"000000010000000000000002", "000000010000000000000003"}},
		{"within one segment", 0x5000028, 0x5000100, 16 * mib, []string{"000000010000000000000005"}},
		// Stop exactly on a boundary: the segment that starts there holds
		// none of the backup's WAL.
		{"stop on boundary", 0x2000028, 0x4000000, 16 * mib, []string{"000000010000000000000002", "000000010000000000000003"}},
		{"stop one past boundary", 0x2000028, 0x4000001, 16 * mib, []string{"000000010000000000000002", "000000010000000000000003", "000000010000000000000004"}},
		{"across xlogid", 0xFF000028, 0x100000100, 16 * mib, []string{"0000000100000000000000FF", "000000010000000100000000"}},
		{"1 MiB", 0xFFF00, 0x200010, 1 * mib, []string{"000000010000000000000000", "000000010000000000000001", "000000010000000000000002"}},
		{"64 MiB", 0xFC000000, 0x104000000, 64 * mib, []string{"00000001000000000000003F", "000000010000000100000000"}},
		{"1 GiB", 0, 0x100000000, gib, []string{"000000010000000000000000", "000000010000000000000001", "000000010000000000000002", "000000010000000000000003"}},
		{"empty", 0x3000000, 0x3000000, 16 * mib, nil},
		{"backwards", 0x4000000, 0x3000000, 16 * mib, nil},
	}
	for _, c := range cases {
		if got := SegmentRange(1, c.start, c.stop, c.segSize); !slices.Equal(got, c.want) {
			t.Errorf("%s: SegmentRange(%s, %s) = %v, want %v", c.name, c.start, c.stop, got, c.want)
		}
	}
}

func TestNextSegmentName(t *testing.T) {
	for _, c := range []struct {
		name    string
		segSize uint64
		next    string
	}{
		{"000000010000000000000001", 16 * mib, "000000010000000000000002"},
		{"0000000200000000000000FF", 16 * mib, "000000020000000100000000"},
		{"000000010000000000000FFF", 1 * mib, "000000010000000100000000"},
		{"000000010000000000000003", gib, "000000010000000100000000"},
	} {
		if got, err := NextSegmentName(c.name, c.segSize); err != nil || got != c.next {
			t.Errorf("NextSegmentName(%s, %d) = %s, %v; want %s", c.name, c.segSize, got, err, c.next)
		}
	}
	if _, err := NextSegmentName("00000001FFFFFFFF000000FF", 16*mib); err == nil {
		t.Error("a segment after the last possible one")
	}
	if _, err := NextSegmentName("00000001.history", 16*mib); err == nil {
		t.Error("NextSegmentName accepted a history file name")
	}
}

func TestLSN(t *testing.T) {
	for s, want := range map[string]LSN{
		"0/0": 0, "0/3000060": 0x3000060, "16/B374D848": 0x16B374D848,
		"FFFFFFFF/FFFFFFFF": ^LSN(0), "1/0": 1 << 32,
	} {
		got, err := ParseLSN(s)
		if err != nil || got != want || got.String() != s {
			t.Errorf("ParseLSN(%s) = %v (%s), %v", s, uint64(got), got, err)
		}
	}
	// Lower case and zero padding parse (pg_lsn accepts them; PostgreSQL
	// 18 pads the low half) but print canonically.
	for s, want := range map[string]string{"16/b374d848": "16/B374D848", "0/03000060": "0/3000060", "00000000/00000001": "0/1"} {
		got, err := ParseLSN(s)
		if err != nil || got.String() != want {
			t.Errorf("ParseLSN(%s) = %s, %v; want %s", s, got, err, want)
		}
	}
	for _, bad := range []string{"", "0", "/1", "1/", "x/1", "1/2/3", "123456789/0", "0/123456789",
		" 0/1", "0/1 ", "+1/2", "-1/2", "0x1/2", "1_0/2", "0/1\n"} {
		if l, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) = %s, want an error", bad, l)
		}
	}
}

func TestClassify(t *testing.T) {
	good := map[string]Kind{
		"000000010000000000000001":                 KindSegment,
		"0000000A00000ABC000000FF":                 KindSegment,
		"000000010000000000000001.partial":         KindPartial,
		"000000010000000000000003.00000028.backup": KindBackupHistory,
		"00000002.history":                         KindTimelineHistory,
		"FFFFFFFF.history":                         KindTimelineHistory,
	}
	for name, want := range good {
		if got, err := Classify(name); err != nil || got != want {
			t.Errorf("Classify(%s) = %v, %v; want %v", name, got, err, want)
		}
	}
	for _, bad := range []string{"", "RECOVERYXLOG", "RECOVERYHISTORY", "00000001000000000000001", "0000000100000000000000010",
		"000000010000000000000001.gz", "pg_wal/000000010000000000000001", "00000002.HISTORY", "0000000a.history",
		"000000000000000000000001", "00000000.history", "0000000g.history", "000000010000000000000003.0000002.backup",
		"000000000000000000000001.partial", "000000000000000000000003.00000028.backup", "00000001000000000000000a",
		"000000010000000000000001.PARTIAL", "000000010000000000000001.partial.partial", "000000010000000000000003.00000028.backupx",
		"000000010000000000000003.0000002g.backup", "000000010000000000000003x00000028.backup", "/00000002.history",
		"00000002.history\n", "000000010000000000000001\x00", "archive_status", ".history"} {
		if k, err := Classify(bad); !errors.Is(err, ErrNotWALName) {
			t.Errorf("Classify(%q) = %v, %v; want ErrNotWALName", bad, k, err)
		}
	}
	if TimelineOf("0000000A.history") != 10 || TimelineOf("000000030000000000000001") != 3 || TimelineOf("0000000a.history") != 0 || TimelineOf("1") != 0 {
		t.Error("TimelineOf")
	}
	for k := KindSegment; k <= KindTimelineHistory; k++ {
		if strings.HasPrefix(k.String(), "Kind(") {
			t.Errorf("Kind %d has no name", int(k))
		}
	}
}

func FuzzParseSegmentName(f *testing.F) {
	f.Add("000000010000000000000001", uint8(24))
	f.Add("0000000200000001000000FF", uint8(20))
	f.Add("00000003FFFFFFFF00000003", uint8(30))
	f.Add("000000010000000000000FFF", uint8(20))
	f.Add("00000001000000000000000a", uint8(24))
	f.Fuzz(func(t *testing.T, name string, shift uint8) {
		segSize := uint64(1) << (shift % 40)
		seg, err := ParseSegmentName(name, segSize)
		if err != nil {
			return
		}
		if seg.TLI == 0 {
			t.Fatalf("%s: timeline 0 accepted", name)
		}
		if back := SegmentName(seg.TLI, seg.No, segSize); back != name {
			t.Fatalf("%s -> %+v -> %s", name, seg, back)
		}
		if k, err := Classify(name); err != nil || k != KindSegment {
			t.Fatalf("ParseSegmentName accepted %s but Classify says %v, %v", name, k, err)
		}
		// The segment's first and last LSNs map back to it.
		start := SegmentStartLSN(seg.No, segSize)
		if SegmentOf(start, segSize) != seg.No || SegmentOf(start+LSN(segSize-1), segSize) != seg.No {
			t.Fatalf("%s: LSN arithmetic disagrees", name)
		}
	})
}

func FuzzClassify(f *testing.F) {
	for _, s := range []string{"000000010000000000000001", "00000002.history", "000000010000000000000001.partial",
		"000000010000000000000003.00000028.backup", "00000000.history", "0000000a.history", "RECOVERYXLOG"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		k, err := Classify(name)
		if err != nil {
			if !errors.Is(err, ErrNotWALName) {
				t.Fatalf("Classify(%q) error does not wrap ErrNotWALName: %v", name, err)
			}
			return
		}
		tli := TimelineOf(name)
		if tli == 0 || strings.ContainsAny(name, "/\\") {
			t.Fatalf("accepted %q as %v with timeline %d", name, k, tli)
		}
		switch k {
		case KindTimelineHistory:
			if fmt.Sprintf("%08X.history", uint32(tli)) != name {
				t.Fatalf("%q: timeline %d", name, tli)
			}
		case KindSegment, KindPartial, KindBackupHistory:
			// With 1 MiB segments every low part up to 0xFFF is valid; the
			// segment part must parse whenever it fits.
			seg, err := ParseSegmentName(name[:24], mib)
			if err == nil && seg.TLI != tli {
				t.Fatalf("%q: timeline %d vs %d", name, seg.TLI, tli)
			}
		default:
			t.Fatalf("Classify(%q) = %v", name, k)
		}
	})
}

func FuzzParseLSN(f *testing.F) {
	for _, s := range []string{"0/3000060", "FFFFFFFF/FFFFFFFF", "16/b374d848", "0/0", "1/", "00000000/00000001"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLSN(s)
		if err != nil {
			return
		}
		if l2, err := ParseLSN(l.String()); err != nil || l2 != l {
			t.Fatalf("%q -> %v does not round-trip", s, l)
		}
		// Only case and zero padding may distinguish input from output.
		hi, lo, _ := strings.Cut(s, "/")
		h2, l2, _ := strings.Cut(l.String(), "/")
		if !strings.EqualFold(trimZeros(hi), h2) || !strings.EqualFold(trimZeros(lo), l2) {
			t.Fatalf("%q parsed as %s", s, l)
		}
	})
}

func trimZeros(s string) string {
	s = strings.TrimLeft(s, "0")
	if s == "" {
		return "0"
	}
	return s
}
