package walarchive

import (
	"encoding/binary"
	"testing"
)

func segmentHeader(sysid uint64, segSize uint32) []byte {
	b := make([]byte, 8192)
	binary.LittleEndian.PutUint16(b[0:], 0xD110)
	binary.LittleEndian.PutUint16(b[2:], xlpLongHeader)
	binary.LittleEndian.PutUint32(b[4:], 1)
	binary.LittleEndian.PutUint64(b[24:], sysid)
	binary.LittleEndian.PutUint32(b[32:], segSize)
	binary.LittleEndian.PutUint32(b[36:], 8192)
	return b
}

func TestParseSegmentHeader(t *testing.T) {
	h, err := ParseSegmentHeader(segmentHeader(7711757119419494528, 16<<20))
	if err != nil || h.SysID != 7711757119419494528 || h.SegSize != 16<<20 || h.TLI != 1 {
		t.Fatalf("%+v %v", h, err)
	}
	bad := segmentHeader(1, 16<<20)
	binary.LittleEndian.PutUint16(bad[2:], 0) // no long header
	if _, err := ParseSegmentHeader(bad); err == nil {
		t.Error("page without a long header accepted")
	}
	if _, err := ParseSegmentHeader(segmentHeader(1, 3<<20)); err == nil {
		t.Error("impossible segment size accepted")
	}
	if _, err := ParseSegmentHeader(make([]byte, 10)); err == nil {
		t.Error("short data accepted")
	}
}

func FuzzParseSegmentHeader(f *testing.F) {
	f.Add(segmentHeader(42, 16<<20))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseSegmentHeader(data)
		if err == nil && (h.SegSize == 0 || h.SegSize&(h.SegSize-1) != 0) {
			t.Fatalf("accepted segment size %d", h.SegSize)
		}
	})
}
