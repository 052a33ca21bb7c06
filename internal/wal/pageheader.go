package wal

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pgkeep/pgkeep/internal/pgversion"
)

// ErrNotSegment is wrapped when data does not start with the long page
// header of a WAL segment.
var ErrNotSegment = errors.New("not a WAL segment")

// pageMagic is XLOG_PAGE_MAGIC of each supported major's release
// (src/include/access/xlog_internal.h), the first two bytes of every WAL
// page; PostgreSQL changes it whenever the WAL format changes, so it names
// the major that wrote a segment. Checked against the first WAL page each
// major's initdb wrote (testdata/majors).
var pageMagic = [...]struct {
	magic uint16
	major int
}{
	{0xD101, 12},
	{0xD106, 13},
	{0xD10D, 14},
	{0xD110, 15},
	{0xD113, 16},
	{0xD116, 17},
	{0xD118, 18},
}

// MajorOfPageMagic returns the major version whose WAL pages carry magic.
func MajorOfPageMagic(magic uint16) (int, bool) {
	for _, m := range pageMagic {
		if m.magic == magic {
			return m.major, true
		}
	}
	return 0, false
}

// SegmentHeader is the long page header at the start of every WAL segment
// (XLogLongPageHeaderData).
type SegmentHeader struct {
	Magic    uint16 // xlp_magic
	Major    int    // the PostgreSQL major version Magic belongs to
	TLI      uint32 // xlp_tli
	PageAddr LSN    // xlp_pageaddr: the segment's start
	SysID    uint64 // xlp_sysid: the cluster's system identifier
	SegSize  uint32 // xlp_seg_size
	BlockSz  uint32 // xlp_xlog_blcksz
}

// xlpLongHeader is XLP_LONG_HEADER in xlp_info.
const xlpLongHeader = 0x0002

// SegmentHeaderSize is how many bytes ParseSegmentHeader needs
// (SizeOfXLogLongPHD).
const SegmentHeaderSize = 40

// ParseSegmentHeader reads the long page header at the start of a WAL
// segment. The page magic must be a supported major's: another one of the
// 0xD0xx and 0xD1xx that PostgreSQL uses is a PostgreSQL pgkeep does not
// support (an error wrapping pgversion.ErrUnsupported, naming the range);
// anything else, or a page without the long header, is not a segment
// (ErrNotSegment).
func ParseSegmentHeader(data []byte) (SegmentHeader, error) {
	if len(data) < SegmentHeaderSize {
		return SegmentHeader{}, fmt.Errorf("%w: %d bytes, too short for a WAL page header", ErrNotSegment, len(data))
	}
	le := binary.LittleEndian
	h := SegmentHeader{
		Magic:    le.Uint16(data[0:2]),
		TLI:      le.Uint32(data[4:8]),
		PageAddr: LSN(le.Uint64(data[8:16])),
		SysID:    le.Uint64(data[24:32]),
		SegSize:  le.Uint32(data[32:36]),
		BlockSz:  le.Uint32(data[36:40]),
	}
	info := le.Uint16(data[2:4])
	// Every release since 8.0 has a magic from 0xD05D up, in 0xD0xx and
	// 0xD1xx; a long page header is what starts a segment.
	if h.Magic&0xFE00 != 0xD000 || info&xlpLongHeader == 0 {
		return SegmentHeader{}, fmt.Errorf("%w: no long page header (magic %#04x, info %#04x)", ErrNotSegment, h.Magic, info)
	}
	major, ok := MajorOfPageMagic(h.Magic)
	if !ok {
		return SegmentHeader{}, unknownMagic(h.Magic)
	}
	h.Major = major
	if !ValidSegSize(uint64(h.SegSize)) || h.BlockSz == 0 || h.BlockSz&(h.BlockSz-1) != 0 {
		return SegmentHeader{}, fmt.Errorf("%w: implausible segment size %d or block size %d", ErrNotSegment, h.SegSize, h.BlockSz)
	}
	if uint64(h.PageAddr)%uint64(h.SegSize) != 0 {
		return SegmentHeader{}, fmt.Errorf("%w: page address %s is not at the start of a %d-byte segment", ErrNotSegment, h.PageAddr, h.SegSize)
	}
	return h, nil
}

// unknownMagic explains a WAL page magic of PostgreSQL's family that no
// supported major writes: above the newest is a later PostgreSQL, below
// the oldest an older one, and in between a development build.
func unknownMagic(magic uint16) error {
	source := fmt.Sprintf("WAL page magic 0x%04X", magic)
	switch first, last := pageMagic[0], pageMagic[len(pageMagic)-1]; {
	case magic > last.magic:
		return &pgversion.UnsupportedError{Newer: true, Source: source}
	case magic < first.magic:
		return &pgversion.UnsupportedError{Source: source}
	}
	return fmt.Errorf("%w: %s is no PostgreSQL %s release's: a development build pgkeep does not know", pgversion.ErrUnsupported, source, pgversion.Range())
}
