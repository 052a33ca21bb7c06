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
	// Raw is the whole record: header, block headers, data. It is only
	// valid during the callback.
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
	w := walker{data: data, start: start}
	return w.run(fn)
}

type walker struct {
	data  []byte
	start wal.LSN
	page  int    // XLOG_BLCKSZ, from the first page's long header
	buf   []byte // reassembly buffer for records that span pages
}

func (w *walker) lsn(off int) wal.LSN { return w.start + wal.LSN(off) }

// pageHeader checks the header of the page at off and returns its size,
// the continuation length and flags. ok is false when the page is not
// this segment's (recycled or never written).
func (w *walker) pageHeader(off int) (size int, remLen uint32, info uint16, ok bool, err error) {
	if off+shortPageHeader > len(w.data) {
		return 0, 0, 0, false, nil
	}
	le := binary.LittleEndian
	magic := le.Uint16(w.data[off:])
	info = le.Uint16(w.data[off+2:])
	pageAddr := le.Uint64(w.data[off+8:])
	remLen = le.Uint32(w.data[off+16:])
	if magic == 0 && pageAddr == 0 {
		return 0, 0, 0, false, nil // never written
	}
	if magic&0xFF00 != 0xD100 {
		return 0, 0, 0, false, fmt.Errorf("%w: page at %s has magic %#04x", ErrCorrupt, w.lsn(off), magic)
	}
	if wal.LSN(pageAddr) != w.lsn(off) {
		return 0, 0, 0, false, nil // a recycled page from an older segment
	}
	size = shortPageHeader
	if info&xlpLongHeader != 0 {
		size = longPageHeader
	}
	return size, remLen, info, true, nil
}

func align(n int) int { return (n + maxAlign - 1) &^ (maxAlign - 1) }

func (w *walker) run(fn func(*Record) error) (wal.LSN, error) {
	if len(w.data) < longPageHeader {
		return w.start, nil
	}
	w.page = defaultWALBlockSize
	if bs := binary.LittleEndian.Uint32(w.data[36:]); binary.LittleEndian.Uint16(w.data[2:])&xlpLongHeader != 0 && bs >= 1024 && bs&(bs-1) == 0 {
		w.page = int(bs)
	}
	// Skip the tail of a record that began in the previous segment.
	off := 0
	for {
		hs, rem, info, ok, err := w.pageHeader(off)
		if err != nil || !ok {
			return w.lsn(off), err
		}
		if info&xlpFirstIsContRec == 0 || rem == 0 {
			off += hs
			break
		}
		room := w.page - hs
		if int(rem) <= room {
			off = align(off + hs + int(rem))
			break
		}
		off += w.page // the continuation fills this page
	}
	for {
		if off%w.page == 0 {
			hs, _, _, ok, err := w.pageHeader(off)
			if err != nil || !ok {
				return w.lsn(off), err
			}
			off += hs
		}
		if off+4 > len(w.data) {
			return w.lsn(off), nil
		}
		recStart := off
		total := int(binary.LittleEndian.Uint32(w.data[off:]))
		if total == 0 {
			return w.lsn(off), nil // end of written WAL
		}
		if total < recordHeaderSize {
			return w.lsn(off), nil // not a record: the end of valid WAL
		}
		raw, end, complete, err := w.gather(off, total)
		if err != nil {
			return w.lsn(recStart), err
		}
		if !complete {
			return w.lsn(recStart), nil
		}
		if !checkCRC(raw) {
			return w.lsn(recStart), nil // torn or recycled: the end of valid WAL
		}
		le := binary.LittleEndian
		rec := &Record{LSN: w.lsn(recStart), End: w.lsn(end), Raw: raw,
			XID: le.Uint32(raw[4:]), Info: raw[16], RmID: raw[17]}
		if err := fn(rec); err != nil {
			return rec.LSN, err
		}
		if rec.IsSwitch() {
			return w.lsn(len(w.data)), nil
		}
		off = align(end)
		if off >= len(w.data) {
			return w.lsn(off), nil
		}
	}
}

// gather collects total bytes of the record at off, across page headers.
// end is the offset just past its last byte; complete is false when data
// ends first.
func (w *walker) gather(off, total int) (raw []byte, end int, complete bool, err error) {
	pageEnd := (off/w.page + 1) * w.page
	if off+total <= pageEnd {
		if off+total > len(w.data) {
			return nil, 0, false, nil
		}
		return w.data[off : off+total], off + total, true, nil
	}
	w.buf = append(w.buf[:0], w.data[off:min(pageEnd, len(w.data))]...)
	pos := pageEnd
	for len(w.buf) < total {
		if pos >= len(w.data) {
			return nil, 0, false, nil
		}
		hs, rem, info, ok, err := w.pageHeader(pos)
		if err != nil {
			return nil, 0, false, err
		}
		if !ok {
			return nil, 0, false, nil
		}
		need := total - len(w.buf)
		if info&xlpFirstIsContRec == 0 || int(rem) != need {
			return nil, 0, false, nil // the record was never finished (the server crashed)
		}
		take := min(need, w.page-hs)
		if pos+hs+take > len(w.data) {
			return nil, 0, false, nil
		}
		w.buf = append(w.buf, w.data[pos+hs:pos+hs+take]...)
		end = pos + hs + take
		pos += w.page
	}
	return w.buf, end, true, nil
}

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
