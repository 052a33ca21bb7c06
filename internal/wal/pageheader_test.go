package wal

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pgkeep/pgkeep/internal/pgversion"
)

// testdata/majors/N/wal_page is the first page of a WAL segment written by
// PostgreSQL N (internal/pgtest TestGenerateFixtures); wal_page.json names
// the segment and the cluster's system identifier.
func TestEveryMajorSegmentHeader(t *testing.T) {
	seen := map[uint16]int{}
	for _, major := range pgversion.Majors() {
		t.Run(strconv.Itoa(major), func(t *testing.T) {
			dir := filepath.Join("testdata", "majors", strconv.Itoa(major))
			page, err := os.ReadFile(filepath.Join(dir, "wal_page"))
			if err != nil {
				t.Fatal(err)
			}
			var want struct {
				Segment  string `json:"segment"`
				SystemID string `json:"system_identifier"`
			}
			data, err := os.ReadFile(filepath.Join(dir, "wal_page.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(data, &want); err != nil {
				t.Fatal(err)
			}
			h, err := ParseSegmentHeader(page)
			if err != nil {
				t.Fatal(err)
			}
			seg, err := ParseSegmentName(want.Segment, DefaultSegSize)
			if err != nil {
				t.Fatal(err)
			}
			if h.Major != major || strconv.FormatUint(h.SysID, 10) != want.SystemID || h.TLI != uint32(seg.TLI) ||
				h.PageAddr != LSN(seg.No*DefaultSegSize) || h.SegSize != DefaultSegSize || h.BlockSz != 8192 {
				t.Errorf("PostgreSQL %d: %+v, want segment %s of %s", major, h, want.Segment, want.SystemID)
			}
			if m, ok := MajorOfPageMagic(h.Magic); !ok || m != major {
				t.Errorf("MajorOfPageMagic(%#x) = %d, %v; the page is PostgreSQL %d's", h.Magic, m, ok, major)
			}
			seen[h.Magic] = major
			// Another page of the segment has a short header: not a start.
			short := append([]byte(nil), page[:SegmentHeaderSize]...)
			binary.LittleEndian.PutUint16(short[2:], 0)
			if _, err := ParseSegmentHeader(short); !errors.Is(err, ErrNotSegment) {
				t.Errorf("short header accepted: %v", err)
			}
		})
	}
	if len(seen) != len(pgversion.Majors()) {
		t.Errorf("page magics are not one per major: %v", seen)
	}
}

func segmentHeader(magic uint16, sysid uint64, segSize uint32) []byte {
	b := make([]byte, 8192)
	binary.LittleEndian.PutUint16(b[0:], magic)
	binary.LittleEndian.PutUint16(b[2:], xlpLongHeader)
	binary.LittleEndian.PutUint32(b[4:], 1)
	binary.LittleEndian.PutUint64(b[8:], 3*uint64(segSize))
	binary.LittleEndian.PutUint64(b[24:], sysid)
	binary.LittleEndian.PutUint32(b[32:], segSize)
	binary.LittleEndian.PutUint32(b[36:], 8192)
	return b
}

func TestParseSegmentHeader(t *testing.T) {
	h, err := ParseSegmentHeader(segmentHeader(0xD110, 7711757119419494528, 16<<20))
	if err != nil || h.SysID != 7711757119419494528 || h.SegSize != 16<<20 || h.TLI != 1 || h.Major != 15 || h.PageAddr != 3*16<<20 {
		t.Fatalf("%+v %v", h, err)
	}
	bad := segmentHeader(0xD110, 1, 16<<20)
	binary.LittleEndian.PutUint16(bad[2:], 0) // no long header
	if _, err := ParseSegmentHeader(bad); !errors.Is(err, ErrNotSegment) {
		t.Errorf("page without a long header: %v", err)
	}
	if _, err := ParseSegmentHeader(segmentHeader(0xD110, 1, 3<<20)); !errors.Is(err, ErrNotSegment) {
		t.Errorf("impossible segment size: %v", err)
	}
	mid := segmentHeader(0xD110, 1, 16<<20)
	binary.LittleEndian.PutUint64(mid[8:], 16<<20+8192)
	if _, err := ParseSegmentHeader(mid); !errors.Is(err, ErrNotSegment) {
		t.Errorf("page address inside a segment: %v", err)
	}
	if _, err := ParseSegmentHeader(make([]byte, 10)); !errors.Is(err, ErrNotSegment) {
		t.Errorf("short data: %v", err)
	}
	if _, err := ParseSegmentHeader(segmentHeader(0x1234, 1, 16<<20)); !errors.Is(err, ErrNotSegment) || errors.Is(err, pgversion.ErrUnsupported) {
		t.Errorf("foreign magic: %v", err)
	}

	// Magic of PostgreSQL's family that no supported release writes.
	var ue *pgversion.UnsupportedError
	for magic, want := range map[uint16]string{
		0xD11A: "WAL page magic 0xD11A: a PostgreSQL newer than 18 is not supported by this pgkeep (supported: 12 to 18): upgrade pgkeep",
		0xD098: "WAL page magic 0xD098: a PostgreSQL older than 12 is too old for pgkeep (supported: 12 to 18)",
	} {
		_, err := ParseSegmentHeader(segmentHeader(magic, 1, 16<<20))
		if !errors.As(err, &ue) || err.Error() != want || errors.Is(err, ErrNotSegment) {
			t.Errorf("magic %#x: %v", magic, err)
		}
	}
	if _, err := ParseSegmentHeader(segmentHeader(0xD117, 1, 16<<20)); !errors.Is(err, pgversion.ErrUnsupported) ||
		!strings.Contains(err.Error(), "development build") {
		t.Errorf("magic between releases: %v", err)
	}
	if m, ok := MajorOfPageMagic(0xD106); !ok || m != 13 {
		t.Errorf("0xD106: %d %v", m, ok)
	}
}

func FuzzParseSegmentHeader(f *testing.F) {
	f.Add(segmentHeader(0xD110, 42, 16<<20))
	f.Add(segmentHeader(0xD118, 42, 1<<20))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseSegmentHeader(data)
		if err != nil {
			if !errors.Is(err, ErrNotSegment) && !errors.Is(err, pgversion.ErrUnsupported) {
				t.Fatalf("error wraps neither sentinel: %v", err)
			}
			return
		}
		if h.SegSize == 0 || h.SegSize&(h.SegSize-1) != 0 || !pgversion.Supported(h.Major) {
			t.Fatalf("accepted %+v", h)
		}
	})
}
