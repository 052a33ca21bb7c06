// Package pgpage reads PostgreSQL data pages: the page header, and the
// data checksum PostgreSQL stores in it when the cluster was initialized
// with --data-checksums (src/include/storage/checksum_impl.h and
// bufpage.h; unchanged from 9.3 to 18, and checked on pages each major
// from 12 to 18 wrote, testdata/majors).
//
// Pages are read as PostgreSQL stores them on little-endian machines
// (amd64, arm64).
package pgpage

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pgkeep/pgkeep/internal/wal"
)

// Size is PostgreSQL's default block size (BLCKSZ). Clusters built with
// another block size record it in pg_control.
const Size = 8192

// RelSegBytes is the size of a relation segment file in a default build
// (RELSEG_SIZE * BLCKSZ = 1 GiB). Clusters built with --with-segsize record
// their RELSEG_SIZE, in blocks, in pg_control.
const RelSegBytes = 1 << 30

// HeaderSize is the size of the page header (SizeOfPageHeaderData).
const HeaderSize = 24

// Page header flag bits (pd_flags); others are invalid.
const (
	FlagHasFreeLines = 0x0001 // PD_HAS_FREE_LINES
	FlagPageFull     = 0x0002 // PD_PAGE_FULL
	FlagAllVisible   = 0x0004 // PD_ALL_VISIBLE
	validFlagBits    = 0x0007 // PD_VALID_FLAG_BITS
)

// ValidBlockSize reports whether n is a block size PostgreSQL can be built
// with: a power of two from 1 KiB to 32 KiB.
func ValidBlockSize(n int) bool { return n >= 1<<10 && n <= 32<<10 && n&(n-1) == 0 }

// PageHeader is PageHeaderData, the first 24 bytes of every page.
type PageHeader struct {
	LSN             wal.LSN // pd_lsn: end of the last WAL record that changed the page
	Checksum        uint16  // pd_checksum
	Flags           uint16  // pd_flags
	Lower           uint16  // pd_lower: start of free space
	Upper           uint16  // pd_upper: end of free space; 0 on a new (never initialized) page
	Special         uint16  // pd_special: start of the access method's special space
	PageSizeVersion uint16  // pd_pagesize_version: page size | layout version (4)
	PruneXID        uint32  // pd_prune_xid
}

// ParsePageHeader decodes the header at the start of page, which must hold
// at least HeaderSize bytes.
func ParsePageHeader(page []byte) (PageHeader, error) {
	if len(page) < HeaderSize {
		return PageHeader{}, fmt.Errorf("page header: %d bytes, need %d", len(page), HeaderSize)
	}
	le := binary.LittleEndian
	return PageHeader{
		LSN:             PageLSN(page),
		Checksum:        le.Uint16(page[8:]),
		Flags:           le.Uint16(page[10:]),
		Lower:           le.Uint16(page[12:]),
		Upper:           le.Uint16(page[14:]),
		Special:         le.Uint16(page[16:]),
		PageSizeVersion: le.Uint16(page[18:]),
		PruneXID:        le.Uint32(page[20:]),
	}, nil
}

// PageLSN returns pd_lsn, the LSN just past the last WAL record that
// changed the page (PageGetLSN), or 0 when page is shorter than 8 bytes.
//
// Backup tools read pages while PostgreSQL writes them, so a page may be
// torn: half old, half new. Such a page fails its checksum, but WAL replay
// rewrites it from the full-page image logged after the backup started.
// Hence the rule PostgreSQL's own base backup follows: verify a page only
// if its LSN is before the backup's start LSN; a page with
// PageLSN(page) >= start was changed during the backup and is skipped
// (after a re-read still fails, since the first read may itself have been
// torn).
func PageLSN(page []byte) wal.LSN {
	if len(page) < 8 {
		return 0
	}
	le := binary.LittleEndian
	// PageXLogRecPtr: xlogid (high half), then xrecoff (low half).
	return wal.LSN(uint64(le.Uint32(page[0:]))<<32 | uint64(le.Uint32(page[4:])))
}

const (
	nSums    = 32       // N_SUMS: parallel partial checksums
	fnvPrime = 16777619 // FNV_PRIME
)

// Checksum computes the checksum PostgreSQL stores in pd_checksum for page
// at block number blkno (pg_checksum_page), where blkno counts blocks from
// the start of the relation fork, across segment files. The stored
// pd_checksum counts as zero. The page is treated as rows of 32 little-
// endian uint32 columns, each column folded into its own FNV-1a-like sum
// (x = (s^v)*FNV_PRIME ^ (s^v)>>17), two rounds of zeros mixed in, the
// sums XORed together and with blkno, and the result reduced to
// (sum % 65535) + 1, which is never 0.
//
// len(page) is the block size; it must be a multiple of 128 bytes of at
// least 128 (every valid block size is). Checksum panics otherwise.
func Checksum(page []byte, blkno uint32) uint16 {
	const rowBytes = 4 * nSums
	if len(page) < rowBytes || len(page)%rowBytes != 0 {
		panic(fmt.Sprintf("pgpage: Checksum of a %d-byte page; want a multiple of %d", len(page), rowBytes))
	}
	// The partial sums start from checksumBaseOffsets (checksum_impl.h).
	sums := [nSums]uint32{
		0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A,
		0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
		0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA,
		0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
		0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE,
		0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
		0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E,
		0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
	}
	le := binary.LittleEndian
	for off := 0; off < len(page); off += rowBytes {
		row := page[off : off+rowBytes : off+rowBytes]
		for j := range sums {
			v := le.Uint32(row[4*j:])
			if off == 0 && j == 2 {
				// Bytes 8-9 are pd_checksum, 10-11 pd_flags: the checksum
				// counts as zero.
				v &^= 0xFFFF
			}
			x := sums[j] ^ v
			sums[j] = x*fnvPrime ^ x>>17
		}
	}
	for range 2 {
		for j := range sums {
			x := sums[j]
			sums[j] = x*fnvPrime ^ x>>17
		}
	}
	var sum uint32
	for _, s := range sums {
		sum ^= s
	}
	sum ^= blkno
	return uint16(sum%65535 + 1)
}

// Reasons Verify rejects a page, wrapped in *PageError.
var (
	ErrChecksum    = errors.New("checksum mismatch")
	ErrBadHeader   = errors.New("invalid page header")
	ErrNewNotZeros = errors.New("uninitialized page (pd_upper 0) is not all zeros")
	ErrPageSize    = errors.New("not a whole page")
)

// PageError describes a page that failed verification.
type PageError struct {
	Block    uint32  // block number in the relation fork
	LSN      wal.LSN // the page's pd_lsn as read (see PageLSN for the torn-page rule)
	Expected uint16  // checksum computed from the content (ErrChecksum only)
	Found    uint16  // checksum stored in the page (ErrChecksum only)
	Err      error   // ErrChecksum, ErrBadHeader, ErrNewNotZeros or ErrPageSize
	Detail   string  // what is wrong with the header (ErrBadHeader only)
}

func (e *PageError) Error() string {
	switch e.Err {
	case ErrChecksum:
		return fmt.Sprintf("block %d: %v: stored %d, computed %d (page LSN %s)", e.Block, e.Err, e.Found, e.Expected, e.LSN)
	case ErrBadHeader:
		return fmt.Sprintf("block %d: %v: %s (page LSN %s)", e.Block, e.Err, e.Detail, e.LSN)
	case ErrPageSize:
		return fmt.Sprintf("block %d: %v: %s", e.Block, e.Err, e.Detail)
	}
	return fmt.Sprintf("block %d: %v", e.Block, e.Err)
}

func (e *PageError) Unwrap() error { return e.Err }

// Verify checks one page read from a cluster with data checksums enabled,
// as PostgreSQL does when it reads a page (PageIsVerifiedExtended): a page
// is valid if its checksum matches and its header is sane (no unknown
// flag bits, pd_lower <= pd_upper <= pd_special <= page size, pd_special
// 8-aligned), or if it is entirely zero (a new page). blkno is the block
// number in the relation fork (see Checksum); len(page) must be a valid
// block size. Errors are *PageError.
//
// Verify says nothing useful for clusters without checksums
// (pg_control's DataChecksumVersion 0), where pd_checksum is not
// maintained. Pages changed during a backup may be torn; see PageLSN.
func Verify(page []byte, blkno uint32) error {
	if !ValidBlockSize(len(page)) {
		return &PageError{Block: blkno, LSN: PageLSN(page), Err: ErrPageSize,
			Detail: fmt.Sprintf("%d bytes is not a block size (1 KiB to 32 KiB, a power of two)", len(page))}
	}
	h, _ := ParsePageHeader(page) // cannot fail: len(page) >= 1 KiB
	if h.Upper != 0 {
		want := Checksum(page, blkno)
		detail := headerProblem(h, len(page))
		switch {
		case want != h.Checksum:
			return &PageError{Block: blkno, LSN: h.LSN, Expected: want, Found: h.Checksum, Err: ErrChecksum}
		case detail != "":
			return &PageError{Block: blkno, LSN: h.LSN, Err: ErrBadHeader, Detail: detail}
		}
		return nil
	}
	if !allZero(page) {
		return &PageError{Block: blkno, LSN: h.LSN, Err: ErrNewNotZeros}
	}
	return nil
}

// headerProblem describes what is insane about h, or returns "".
func headerProblem(h PageHeader, pageSize int) string {
	switch {
	case h.Flags&^validFlagBits != 0:
		return fmt.Sprintf("unknown flag bits %#04x", h.Flags&^validFlagBits)
	case h.Lower > h.Upper:
		return fmt.Sprintf("pd_lower %d > pd_upper %d", h.Lower, h.Upper)
	case h.Upper > h.Special:
		return fmt.Sprintf("pd_upper %d > pd_special %d", h.Upper, h.Special)
	case int(h.Special) > pageSize:
		return fmt.Sprintf("pd_special %d beyond the %d-byte page", h.Special, pageSize)
	case h.Special%8 != 0:
		return fmt.Sprintf("pd_special %d not 8-aligned", h.Special)
	}
	return ""
}

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// ErrPartialBlock is returned by VerifyFile and VerifyBlocks when the data
// ends inside a block: a file being extended while it was read, or a
// truncated copy.
var ErrPartialBlock = errors.New("data ends with a partial block")
