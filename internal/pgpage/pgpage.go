// Package pgpage verifies PostgreSQL data page checksums (the algorithm of
// src/include/storage/checksum_impl.h: 32 parallel FNV-1a-like sums over
// the page, folded, mixed with the block number).
package pgpage

import (
	"encoding/binary"
	"fmt"

	"github.com/pgkeep/pgkeep/internal/wal"
)

// Size is the page size pgkeep verifies (PostgreSQL's default BLCKSZ).
const Size = 8192

const (
	nSums    = 32
	fnvPrime = 16777619
)

var baseOffsets = [nSums]uint32{
	0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A,
	0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
	0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA,
	0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
	0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE,
	0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
	0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E,
	0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
}

// Checksum computes the checksum PostgreSQL stores in pd_checksum for page
// (Size bytes) at block number blkno. The stored checksum field itself is
// treated as zero.
func Checksum(page []byte, blkno uint32) uint16 {
	sums := baseOffsets
	comp := func(s *uint32, v uint32) {
		tmp := *s ^ v
		*s = tmp*fnvPrime ^ (tmp >> 17)
	}
	for i := 0; i < Size/(4*nSums); i++ {
		row := page[i*4*nSums : (i+1)*4*nSums]
		for j := 0; j < nSums; j++ {
			v := binary.LittleEndian.Uint32(row[j*4:])
			if i == 0 && j == 2 {
				// Bytes 8-11 hold pd_checksum (8-9) and pd_flags (10-11):
				// the checksum counts as zero.
				v &^= 0xFFFF
			}
			comp(&sums[j], v)
		}
	}
	for i := 0; i < 2; i++ {
		for j := 0; j < nSums; j++ {
			comp(&sums[j], 0)
		}
	}
	var result uint32
	for _, s := range sums {
		result ^= s
	}
	result ^= blkno
	return uint16(result%65535 + 1)
}

// Header is the start of a page header (PageHeaderData).
type Header struct {
	LSN      wal.LSN
	Checksum uint16
	Flags    uint16
	Lower    uint16
	Upper    uint16
	Special  uint16
	Version  uint16 // pd_pagesize_version
}

// ParseHeader reads a page header.
func ParseHeader(page []byte) Header {
	le := binary.LittleEndian
	return Header{
		LSN:      PageLSN(page),
		Checksum: le.Uint16(page[8:]),
		Flags:    le.Uint16(page[10:]),
		Lower:    le.Uint16(page[12:]),
		Upper:    le.Uint16(page[14:]),
		Special:  le.Uint16(page[16:]),
		Version:  le.Uint16(page[18:]),
	}
}

// PageLSN returns pd_lsn: the LSN of the last WAL record that changed the
// page.
func PageLSN(page []byte) wal.LSN {
	le := binary.LittleEndian
	return wal.LSN(uint64(le.Uint32(page[0:]))<<32 | uint64(le.Uint32(page[4:])))
}

// Verify checks one page. New pages (pd_upper = 0) must be all zero;
// others must carry the right checksum for blkno.
func Verify(page []byte, blkno uint32) error {
	if len(page) != Size {
		return fmt.Errorf("page is %d bytes, not %d", len(page), Size)
	}
	h := ParseHeader(page)
	if h.Upper == 0 {
		for _, b := range page {
			if b != 0 {
				return fmt.Errorf("new page (pd_upper 0) is not all zeros")
			}
		}
		return nil
	}
	if want := Checksum(page, blkno); want != h.Checksum {
		return fmt.Errorf("checksum %d, expected %d", h.Checksum, want)
	}
	return nil
}
