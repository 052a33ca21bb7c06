package walrec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Block ids of the headers that follow the record header (xlogrecord.h).
const (
	blockIDDataShort   = 255 // XLR_BLOCK_ID_DATA_SHORT: 1-byte length of the main data
	blockIDDataLong    = 254 // XLR_BLOCK_ID_DATA_LONG: 4-byte length
	blockIDOrigin      = 253 // XLR_BLOCK_ID_ORIGIN: 2-byte replication origin
	blockIDTopLevelXID = 252 // XLR_BLOCK_ID_TOPLEVEL_XID (14+): 4-byte xid
	maxBlockID         = 32  // XLR_MAX_BLOCK_ID

	bkpForkMask  = 0x0F
	bkpHasImage  = 0x10
	bkpHasData   = 0x20
	bkpWillInit  = 0x40
	bkpSameRel   = 0x80
	bimgHasHole  = 0x01
	bimgCompr14  = 0x02 // BKPIMAGE_IS_COMPRESSED, PostgreSQL 12 to 14
	bimgCompr15  = 0x04 | 0x08 | 0x10
	imageHdrSize = 5 // XLogRecordBlockImageHeader: length, hole_offset, bimg_info
)

// RelFileLocator names a relation's storage (RelFileNode before 16).
type RelFileLocator struct {
	SpcOID, DBOID, RelNumber uint32
}

// BlockRef is one block a record touches.
type BlockRef struct {
	Rel      RelFileLocator
	Fork     uint8
	Block    uint32
	WillInit bool // replay rebuilds the page from scratch
	HasImage bool // a full-page image is in the record
}

// Decoded is what Decode finds in a record.
type Decoded struct {
	Blocks   []BlockRef
	MainData []byte
}

// Decode parses the block headers and finds the main data of rec, as
// written by PostgreSQL major (which decides the full-page image flags).
func Decode(rec *Record, major int) (*Decoded, error) {
	d := &Decoded{}
	if err := DecodeInto(rec, major, d); err != nil {
		return nil, err
	}
	return d, nil
}

// DecodeInto is Decode into d, reusing its memory: for reading every
// record of a segment without an allocation each.
func DecodeInto(rec *Record, major int, d *Decoded) error {
	d.Blocks, d.MainData = d.Blocks[:0], nil
	_, err := decodeTo(rec, major, false, d)
	return err
}

// DecodePrefix parses the block headers of a record of which only the
// first bytes are at hand (Parser.Close's partial record). complete is
// false when the headers themselves are cut: the blocks found are then
// not all the record touches.
func DecodePrefix(rec *Record, major int) (d *Decoded, complete bool, err error) {
	d, err = decode(rec, major, true)
	if errors.Is(err, errCut) {
		return d, false, nil
	}
	return d, err == nil, err
}

// errCut means the headers of a record prefix end beyond the prefix.
var errCut = errors.New("record headers cut")

func decode(rec *Record, major int, prefix bool) (*Decoded, error) {
	return decodeTo(rec, major, prefix, &Decoded{})
}

func decodeTo(rec *Record, major int, prefix bool, d *Decoded) (*Decoded, error) {
	raw := rec.Raw
	if prefix {
		if len(raw) < recordHeaderSize {
			return &Decoded{}, errCut
		}
		// The headers end where the data begins; the total length in
		// the record header is what the data takes.
		total := int(binary.LittleEndian.Uint32(raw))
		if total < len(raw) {
			return nil, fmt.Errorf("%w: record prefix longer than the record", ErrCorrupt)
		}
	}
	pos := recordHeaderSize
	var dataLen, mainLen int
	var last RelFileLocator
	haveRel := false
	fail := func(what string) (*Decoded, error) {
		if prefix {
			return d, errCut // the headers run past what is at hand
		}
		return nil, fmt.Errorf("%w: record at %s: %s", ErrCorrupt, rec.LSN, what)
	}
	le := binary.LittleEndian
	end := len(raw)
	if prefix {
		end = int(le.Uint32(raw))
	}
	for pos < end-mainLen-dataLen {
		if pos >= len(raw) {
			return fail("cut")
		}
		id := raw[pos]
		switch {
		case id == blockIDDataShort:
			if pos+2 > len(raw) {
				return fail("short main data header")
			}
			mainLen = int(raw[pos+1])
			pos += 2
			goto headersDone
		case id == blockIDDataLong:
			if pos+5 > len(raw) {
				return fail("short long main data header")
			}
			mainLen = int(le.Uint32(raw[pos+1:]))
			pos += 5
			goto headersDone
		case id == blockIDOrigin:
			pos += 3
		case id == blockIDTopLevelXID && major >= 14:
			pos += 5
		case id <= maxBlockID:
			if pos+4 > len(raw) {
				return fail("short block header")
			}
			flags := raw[pos+1]
			n := int(le.Uint16(raw[pos+2:]))
			pos += 4
			b := BlockRef{Fork: flags & bkpForkMask, WillInit: flags&bkpWillInit != 0, HasImage: flags&bkpHasImage != 0}
			if flags&bkpHasData == 0 && n != 0 {
				return fail("block data length without data")
			}
			dataLen += n
			if b.HasImage {
				if pos+imageHdrSize > len(raw) {
					return fail("short image header")
				}
				imgLen := int(le.Uint16(raw[pos:]))
				info := raw[pos+4]
				pos += imageHdrSize
				compressed := info&bimgCompr15 != 0
				if major < 15 {
					compressed = info&bimgCompr14 != 0
				}
				if info&bimgHasHole != 0 && compressed {
					pos += 2 // XLogRecordBlockCompressHeader: hole_length
				}
				dataLen += imgLen
			}
			if flags&bkpSameRel == 0 {
				if pos+12 > len(raw) {
					return fail("short relation")
				}
				last = RelFileLocator{SpcOID: le.Uint32(raw[pos:]), DBOID: le.Uint32(raw[pos+4:]), RelNumber: le.Uint32(raw[pos+8:])}
				haveRel = true
				pos += 12
			} else if !haveRel {
				return fail("BKPBLOCK_SAME_REL on the first block")
			}
			b.Rel = last
			if pos+4 > len(raw) {
				return fail("short block number")
			}
			b.Block = le.Uint32(raw[pos:])
			pos += 4
			d.Blocks = append(d.Blocks, b)
		default:
			return fail(fmt.Sprintf("unknown block id %d", id))
		}
	}
headersDone:
	if prefix {
		if pos+dataLen+mainLen != end {
			return nil, fmt.Errorf("%w: record at %s: headers do not add up", ErrCorrupt, rec.LSN)
		}
		return d, nil
	}
	if pos+dataLen+mainLen != len(raw) {
		return fail(fmt.Sprintf("headers end at %d, with %d bytes of block data and %d of main data, in a record of %d", pos, dataLen, mainLen, len(raw)))
	}
	d.MainData = raw[pos+dataLen:]
	return d, nil
}

// Moment is a record recovery can stop at by time or name.
type Moment struct {
	Kind string    // "commit", "abort" or "restore point"
	Time time.Time // the commit, abort or restore point time
	Name string    // restore point name
}

// MomentOf returns the commit, abort or restore point time a record
// carries (recovery_target_time and recovery_target_name stop at these),
// or nil for other records.
func MomentOf(rec *Record, major int) (*Moment, error) {
	var kind string
	switch {
	case rec.RmID == RmXact:
		switch rec.Info & xactOpMask {
		case xactCommit, xactCommitPrepared:
			kind = "commit"
		case xactAbort, xactAbortPrepared:
			kind = "abort"
		default:
			return nil, nil
		}
	case rec.RmID == RmXLOG && rec.Info&0xF0 == xlogRestorePoint:
		kind = "restore point"
	default:
		return nil, nil
	}
	d, err := Decode(rec, major)
	if err != nil {
		return nil, err
	}
	if len(d.MainData) < 8 {
		return nil, fmt.Errorf("%w: %s record at %s has %d bytes of data", ErrCorrupt, kind, rec.LSN, len(d.MainData))
	}
	m := &Moment{Kind: kind, Time: pgTime(int64(binary.LittleEndian.Uint64(d.MainData)))}
	if kind == "restore point" {
		name := d.MainData[8:min(len(d.MainData), 8+64)]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		m.Name = string(name)
	}
	return m, nil
}
