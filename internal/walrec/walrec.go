// Package walrec reads the records of PostgreSQL WAL segments and decodes
// what pgkeep needs from them: where each record starts and ends, commit
// and abort times, restore points, and (for incremental backups) the blocks
// each record touches.
//
// The format is that of src/include/access/xlogrecord.h and
// xlog_internal.h, which PostgreSQL 12 to 18 share, except for the flag
// bits of full-page images (BKPIMAGE_*, changed in 15) and the
// XLR_BLOCK_ID_TOPLEVEL_XID block id (added in 14). Records start on
// 8-byte (MAXALIGN) boundaries; a record may continue over page and
// segment boundaries, each page then beginning with a header whose
// xlp_rem_len says how much of the record remains.
package walrec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/pgkeep/pgkeep/internal/wal"
)

// Page header sizes (SizeOfXLogShortPHD, SizeOfXLogLongPHD: the structs,
// 20 and 36 bytes, MAXALIGNed) and flags of xlp_info.
const (
	shortPageHeader     = 24
	longPageHeader      = 40
	xlpFirstIsContRec   = 0x0001
	xlpLongHeader       = 0x0002
	recordHeaderSize    = 24 // SizeOfXLogRecord: offsetof(xl_crc) + 4
	maxAlign            = 8
	defaultWALBlockSize = 8192
)

// Resource managers and record kinds pgkeep looks at (rmgrlist.h,
// pg_control.h, xact.h).
const (
	RmXLOG = 0
	RmXact = 1

	xlogSwitch       = 0x40 // XLOG_SWITCH
	xlogRestorePoint = 0x70 // XLOG_RESTORE_POINT

	xactOpMask         = 0x70
	xactCommit         = 0x00
	xactAbort          = 0x20
	xactCommitPrepared = 0x30
	xactAbortPrepared  = 0x40
)

// Record is one WAL record, reassembled when it spans pages.
type Record struct {
	LSN  wal.LSN // where it starts
	End  wal.LSN // just past its last byte (XLogReaderState.EndRecPtr)
	XID  uint32
	Info uint8
	RmID uint8
	// Raw is the whole record: header, block headers, data. The record
	// a Parser hands to its callback is only valid during the call.
	Raw []byte
}

// IsSwitch reports whether the record is XLOG_SWITCH: the rest of its
// segment is unused.
func (r *Record) IsSwitch() bool { return r.RmID == RmXLOG && r.Info&0xF0 == xlogSwitch }

// ErrCorrupt is wrapped when a segment's pages or records are not what
// PostgreSQL writes.
var ErrCorrupt = errors.New("malformed WAL")

// Segment walks the records that start in one WAL segment. data is the
// segment's content from its first byte (a whole segment, or the part of
// it that was written: a .partial or a streamed prefix), start the LSN of
// its first byte. A record that began in the previous segment is skipped;
// fn is called for each record that starts in data and ends within it.
// The walk stops at the end of valid WAL: an XLOG_SWITCH record, zeroed or
// recycled space (a record header that is zero, or fails its CRC), or the
// end of data. It returns the LSN where the next record would start: the
// start of an incomplete record at the end of data, or the end of the last
// one. A page header that does not belong to this segment (a recycled
// page) also ends the walk; other damage is an error wrapping ErrCorrupt.
func Segment(data []byte, start wal.LSN, fn func(*Record) error) (wal.LSN, error) {
	p := NewParser(start, fn)
	if _, err := p.Write(data); err != nil {
		return p.Next(), err
	}
	next, _, err := p.Close()
	return next, err
}

// Parser walks the records of one segment as its bytes arrive (Write, in
// order, from the segment's first byte), so a segment can be read once and
// its records seen on the way. It implements io.Writer.
type Parser struct {
	start wal.LSN
	fn    func(*Record) error
	page  int    // XLOG_BLCKSZ, from the first page's long header
	seg   uint64 // xlp_seg_size, from the same header (0: unknown)

	buf   []byte // bytes of the page not yet complete
	off   int64  // segment offset of buf[0] (a page boundary)
	first bool   // the first page is still to come
	done  bool   // the walk has ended (end of valid WAL, a switch, an error)
	err   error

	// A record in progress across pages.
	rec     []byte
	recLSN  wal.LSN
	recNeed int  // its total length (0: not in a record)
	skip    bool // skipping the continuation of a record of the previous segment
	next    wal.LSN
	// The continuation skipped at the start, kept up to headCap bytes.
	head     []byte
	headCap  int
	headNeed int
	out      Record // handed to fn, reused
}

// NewParser returns a Parser for the segment starting at start, calling fn
// for each complete record.
func NewParser(start wal.LSN, fn func(*Record) error) *Parser {
	return &Parser{start: start, fn: fn, page: defaultWALBlockSize, first: true, next: start}
}

// KeepHead makes the parser keep up to max bytes of the continuation of a
// record of the previous segment that the segment starts with (see Head).
func (p *Parser) KeepHead(max int) { p.headCap = max }

// Head returns the kept bytes of the continuation the segment starts with
// and the continuation's whole length (0: the segment starts with a
// record of its own). Joined to the previous segment's partial record,
// they complete it.
func (p *Parser) Head() (data []byte, total int) { return p.head, p.headNeed }

// Next returns the LSN where the next record would start, as far as the
// bytes seen tell.
func (p *Parser) Next() wal.LSN { return p.next }

// Write feeds the next bytes of the segment.
func (p *Parser) Write(data []byte) (int, error) {
	n := len(data)
	if p.done {
		return n, p.err
	}
	if p.first && len(p.buf)+len(data) >= longPageHeader {
		hdr := append(append([]byte(nil), p.buf...), data[:min(len(data), longPageHeader)]...)
		if binary.LittleEndian.Uint16(hdr[2:])&xlpLongHeader != 0 {
			if bs := int(binary.LittleEndian.Uint32(hdr[36:])); bs >= 1024 && bs <= 1<<16 && bs&(bs-1) == 0 {
				p.page = bs
			}
			if ss := uint64(binary.LittleEndian.Uint32(hdr[32:])); wal.ValidSegSize(ss) {
				p.seg = ss
			}
		}
	}
	for len(data) > 0 && !p.done {
		if len(p.buf) == 0 && len(data) >= p.page {
			p.pageDone(data[:p.page])
			data = data[p.page:]
			continue
		}
		take := min(p.page-len(p.buf), len(data))
		p.buf = append(p.buf, data[:take]...)
		data = data[take:]
		if len(p.buf) == p.page {
			p.pageDone(p.buf)
			p.buf = p.buf[:0]
		}
	}
	return n, p.err
}

// Close ends the walk. next is the LSN where the next record would start;
// partial, if not nil, is the record cut off at the end of the data
// (its LSN and the bytes of it that were there: enough for its headers,
// usually, see DecodePrefix).
func (p *Parser) Close() (next wal.LSN, partial *Record, err error) {
	if !p.done && len(p.buf) > 0 {
		p.walkPage(p.buf, true)
	}
	if !p.done && p.recNeed > 0 && !p.skip {
		partial = &Record{LSN: p.recLSN, Raw: p.rec}
		if len(p.rec) >= recordHeaderSize {
			partial.XID, partial.Info, partial.RmID = binary.LittleEndian.Uint32(p.rec[4:]), p.rec[16], p.rec[17]
		}
	}
	p.done = true
	return p.next, partial, p.err
}

func (p *Parser) lsn(pageOff int) wal.LSN { return p.start + wal.LSN(p.off) + wal.LSN(pageOff) }

// stop ends the walk at the end of valid WAL (err nil) or on damage.
func (p *Parser) stop(err error) {
	p.done, p.err = true, err
	p.recNeed = 0
}

// pageDone walks one whole page and moves on.
func (p *Parser) pageDone(page []byte) {
	p.walkPage(page, false)
	p.off += int64(p.page)
	p.first = false
}

// walkPage walks the records of the page at p.off. cut means the page is
// only the part of it that was written.
func (p *Parser) walkPage(page []byte, cut bool) {
	if len(page) < shortPageHeader {
		return
	}
	le := binary.LittleEndian
	magic, info := le.Uint16(page), le.Uint16(page[2:])
	pageAddr, remLen := le.Uint64(page[8:]), int(le.Uint32(page[16:]))
	if magic == 0 && pageAddr == 0 {
		p.stop(nil) // never written
		return
	}
	if magic&0xFF00 != 0xD100 {
		p.stop(fmt.Errorf("%w: page at %s has magic %#04x", ErrCorrupt, p.lsn(0), magic))
		return
	}
	if wal.LSN(pageAddr) != p.lsn(0) {
		p.stop(nil) // a recycled page from an older segment
		return
	}
	off := shortPageHeader
	if info&xlpLongHeader != 0 {
		off = longPageHeader
	}
	if p.first {
		// A record that began in the previous segment: skip its rest.
		p.skip = info&xlpFirstIsContRec != 0 && remLen > 0
		if p.skip {
			p.recNeed = remLen
			p.headNeed = remLen
		}
	}
	if info&xlpFirstIsContRec != 0 && p.recNeed > 0 {
		if p.skip {
			if remLen != p.recNeed && !p.first {
				p.stop(nil)
				return
			}
		} else if remLen != p.recNeed-len(p.rec) {
			p.stop(nil) // the record was never finished (the server crashed)
			return
		}
		room := len(page) - off
		take := min(remLen, room)
		if !p.skip {
			p.rec = append(p.rec, page[off:off+take]...)
		} else if keep := min(take, p.headCap-len(p.head)); keep > 0 {
			p.head = append(p.head, page[off:off+keep]...)
		}
		if take < remLen {
			if p.skip {
				p.recNeed -= take
			}
			return // the continuation fills this page
		}
		off += take
		if p.skip {
			p.skip, p.recNeed = false, 0
		} else if !p.emit(p.rec, p.recLSN, p.lsn(off)) {
			return
		}
		off = align(off)
		p.next = p.lsn(off)
	} else if p.recNeed > 0 {
		p.stop(nil) // a record in progress that no page continues
		return
	}
	for off+4 <= len(page) && !p.done {
		total := int(le.Uint32(page[off:]))
		if total == 0 || total < recordHeaderSize {
			p.stop(nil) // end of written or valid WAL
			return
		}
		at := p.lsn(off)
		if off+total <= len(page) {
			if !p.emit(page[off:off+total], at, p.lsn(off+total)) {
				return
			}
			off = align(off + total)
			p.next = p.lsn(off)
			continue
		}
		if cut && len(page) < p.page {
			// The data ends inside this record.
			p.rec, p.recLSN, p.recNeed = append(p.rec[:0], page[off:]...), at, total
			return
		}
		p.rec, p.recLSN, p.recNeed = append(p.rec[:0], page[off:]...), at, total
		p.next = at
		return
	}
}

// emit checks a complete record and hands it on. It reports whether the
// walk goes on.
func (p *Parser) emit(raw []byte, at, end wal.LSN) bool {
	p.recNeed = 0
	if !checkCRC(raw) {
		p.stop(nil) // torn or recycled: the end of valid WAL
		return false
	}
	le := binary.LittleEndian
	p.out = Record{LSN: at, End: end, Raw: raw, XID: le.Uint32(raw[4:]), Info: raw[16], RmID: raw[17]}
	rec := &p.out
	if err := p.fn(rec); err != nil {
		p.stop(err)
		return false
	}
	if rec.IsSwitch() {
		// The rest of the segment is unused: the next record starts the
		// next segment.
		p.next = end
		if p.seg != 0 {
			p.next = p.start + wal.LSN(p.seg)
		}
		p.stop(nil)
		return false
	}
	p.next = end
	return true
}

func align(n int) int { return (n + maxAlign - 1) &^ (maxAlign - 1) }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checkCRC verifies xl_crc: CRC-32C of the record after its header, then of
// the header up to the CRC field.
func checkCRC(raw []byte) bool {
	crc := crc32.Update(0, castagnoli, raw[recordHeaderSize:])
	crc = crc32.Update(crc, castagnoli, raw[:20])
	return crc == binary.LittleEndian.Uint32(raw[20:])
}

// pgEpoch is PostgreSQL's timestamp epoch (2000-01-01 UTC); TimestampTz is
// microseconds since it.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func pgTime(us int64) time.Time { return pgEpoch.Add(time.Duration(us) * time.Microsecond) }
