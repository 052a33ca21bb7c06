package wal

import (
	"errors"
	"testing"
)

func TestSegmentNames(t *testing.T) {
	cases := []struct {
		tli     TimeLineID
		no      uint64
		segSize uint64
		name    string
	}{
		{1, 1, 16 << 20, "000000010000000000000001"},
		{1, 0xFF, 16 << 20, "0000000100000000000000FF"},
		{1, 0x100, 16 << 20, "000000010000000100000000"},
		{2, 0x1234, 16 << 20, "000000020000001200000034"},
		{1, 4096, 1 << 20, "000000010000000100000000"},
		{1, 4095, 1 << 20, "000000010000000000000FFF"},
		{3, 64 + 5, 64 << 20, "000000030000000100000005"},
		{1, 9, 1 << 30, "000000010000000200000001"},
	}
	for _, c := range cases {
		if got := SegmentName(c.tli, c.no, c.segSize); got != c.name {
			t.Errorf("SegmentName(%d, %d, %d) = %s, want %s", c.tli, c.no, c.segSize, got, c.name)
		}
		seg, err := ParseSegmentName(c.name, c.segSize)
		if err != nil || seg.TLI != c.tli || seg.No != c.no {
			t.Errorf("ParseSegmentName(%s, %d) = %+v, %v", c.name, c.segSize, seg, err)
		}
	}
	// A segment number beyond what one xlogid holds is invalid for the size.
	if _, err := ParseSegmentName("000000010000000000000100", 16<<20); err == nil {
		t.Error("segment 0x100 of 16 MiB segments accepted")
	}
	if _, err := ParseSegmentName("00000001000000000000000a", 16<<20); err == nil {
		t.Error("lower-case hex accepted")
	}
}

func TestSegmentArithmetic(t *testing.T) {
	const seg = 16 << 20
	if SegmentOf(0x3000060, seg) != 3 || SegmentOf(0x2FFFFFF, seg) != 2 || SegmentOf(0x100000000, seg) != 256 {
		t.Fatal("SegmentOf")
	}
	if SegmentStartLSN(3, seg) != 0x3000000 {
		t.Fatal("SegmentStartLSN")
	}
	for _, n := range []uint64{1 << 20, 16 << 20, 64 << 20, 1 << 30} {
		if !ValidSegSize(n) {
			t.Errorf("%d should be valid", n)
		}
	}
	for _, n := range []uint64{0, 1 << 19, 3 << 20, 2 << 30} {
		if ValidSegSize(n) {
			t.Errorf("%d should be invalid", n)
		}
	}
}

func TestLSN(t *testing.T) {
	for s, want := range map[string]LSN{"0/3000060": 0x3000060, "16/B374D848": 0x16B374D848, "FFFFFFFF/FFFFFFFF": ^LSN(0)} {
		got, err := ParseLSN(s)
		if err != nil || got != want || got.String() != s {
			t.Errorf("ParseLSN(%s) = %v (%s), %v", s, got, got, err)
		}
	}
	for _, bad := range []string{"", "0", "/1", "1/", "x/1", "1/2/3", "123456789/0"} {
		if _, err := ParseLSN(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestClassify(t *testing.T) {
	good := map[string]Kind{
		"000000010000000000000001":                 KindSegment,
		"000000010000000000000001.partial":         KindPartial,
		"000000010000000000000003.00000028.backup": KindBackupHistory,
		"00000002.history":                         KindTimelineHistory,
	}
	for name, want := range good {
		if got, err := Classify(name); err != nil || got != want {
			t.Errorf("Classify(%s) = %v, %v", name, got, err)
		}
	}
	for _, bad := range []string{"", "RECOVERYXLOG", "00000001000000000000001", "0000000100000000000000010",
		"000000010000000000000001.gz", "pg_wal/000000010000000000000001", "00000002.HISTORY",
		"000000000000000000000001", "00000000.history", "0000000g.history", "000000010000000000000003.0000002.backup"} {
		if _, err := Classify(bad); !errors.Is(err, ErrNotWALName) {
			t.Errorf("Classify(%q) = %v, want ErrNotWALName", bad, err)
		}
	}
	if TimelineOf("0000000A.history") != 10 || TimelineOf("000000030000000000000001") != 3 {
		t.Error("TimelineOf")
	}
	if HistoryName(10) != "0000000A.history" {
		t.Error("HistoryName")
	}
}

func TestHistory(t *testing.T) {
	data := []byte("1\t0/3000060\tno recovery target specified\n\n# comment\n2\t0/5000000\tat restore point \"x\"\n")
	h, err := ParseHistory(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0].TLI != 1 || h[0].SwitchLSN != 0x3000060 || h[1].Reason != `at restore point "x"` {
		t.Fatalf("%+v", h)
	}
	for lsn, want := range map[LSN]TimeLineID{0x1000000: 1, 0x3000060: 2, 0x4FFFFFF: 2, 0x5000000: 3, 0x9000000: 3} {
		if got := TimelineOfLSN(h, 3, lsn); got != want {
			t.Errorf("TimelineOfLSN(%s) = %d, want %d", lsn, got, want)
		}
	}
	for _, bad := range []string{"x\t0/1\n", "1\n", "2\t0/1\n1\t0/2\n", "1\tnot-an-lsn\n", "0\t0/1\n"} {
		if _, err := ParseHistory([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseSegmentName(f *testing.F) {
	f.Add("000000010000000000000001", uint8(24))
	f.Add("0000000200000001000000FF", uint8(20))
	f.Fuzz(func(t *testing.T, name string, shift uint8) {
		segSize := uint64(1) << (shift % 40)
		seg, err := ParseSegmentName(name, segSize)
		if err != nil {
			return
		}
		if back := SegmentName(seg.TLI, seg.No, segSize); back != name {
			t.Fatalf("%s -> %+v -> %s", name, seg, back)
		}
	})
}

func FuzzClassify(f *testing.F) {
	for _, s := range []string{"000000010000000000000001", "00000002.history", "000000010000000000000001.partial", "000000010000000000000003.00000028.backup"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		k, err := Classify(name)
		if err == nil && (TimelineOf(name) == 0 || k < KindSegment || k > KindTimelineHistory) {
			t.Fatalf("accepted %q as %v with timeline %d", name, k, TimelineOf(name))
		}
	})
}

func FuzzParseHistory(f *testing.F) {
	f.Add([]byte("1\t0/3000060\tno recovery target specified\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseHistory(data)
		if err != nil {
			return
		}
		for i := 1; i < len(h); i++ {
			if h[i].TLI <= h[i-1].TLI {
				t.Fatal("timelines do not increase")
			}
		}
	})
}

func FuzzParseLSN(f *testing.F) {
	f.Add("0/3000060")
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLSN(s)
		if err != nil {
			return
		}
		if l2, err := ParseLSN(l.String()); err != nil || l2 != l {
			t.Fatalf("%q -> %v does not round-trip", s, l)
		}
	})
}
