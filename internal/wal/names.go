package wal

import (
	"errors"
	"fmt"
	"strconv"
)

// Segment sizes PostgreSQL allows (initdb --wal-segsize): powers of two from
// 1 MiB to 1 GiB. 16 MiB is the default.
const (
	MinSegSize     = 1 << 20
	MaxSegSize     = 1 << 30
	DefaultSegSize = 16 << 20
)

// ValidSegSize reports whether n is a WAL segment size PostgreSQL allows: a
// power of two from 1 MiB to 1 GiB (IsValidWalSegSize).
func ValidSegSize(n uint64) bool {
	return n >= MinSegSize && n <= MaxSegSize && n&(n-1) == 0
}

// segmentsPerXLogID is how many segments one "xlogid" (4 GiB of WAL, the
// middle eight hex digits of a segment name) holds for segSize
// (XLogSegmentsPerXLogId).
func segmentsPerXLogID(segSize uint64) uint64 { return 0x100000000 / segSize }

func mustValidSegSize(segSize uint64) {
	if !ValidSegSize(segSize) {
		panic(fmt.Sprintf("wal: invalid WAL segment size %d (want a power of two from 1 MiB to 1 GiB)", segSize))
	}
}

// SegmentOf returns the number of the segment that holds lsn (XLByteToSeg).
// segSize must be valid.
func SegmentOf(lsn LSN, segSize uint64) uint64 { return uint64(lsn) / segSize }

// PrevSegmentOf returns the number of the segment that holds the byte just
// before lsn (XLByteToPrevSeg): for an end-of-WAL position such as a
// backup's stop LSN, the last segment that holds any of the WAL before it.
// It differs from SegmentOf only when lsn is exactly at a segment boundary.
// lsn must not be 0.
func PrevSegmentOf(lsn LSN, segSize uint64) uint64 { return (uint64(lsn) - 1) / segSize }

// SegmentStartLSN returns the first LSN of segment segNo.
func SegmentStartLSN(segNo, segSize uint64) LSN { return LSN(segNo * segSize) }

// Segment identifies a WAL segment: a timeline and a segment number (the
// segment's first LSN divided by the segment size).
type Segment struct {
	TLI TimeLineID
	No  uint64
}

// SegmentName returns the 24-hex-digit file name of segment segNo on
// timeline tli (XLogFileName): timeline, then segNo / (4 GiB / segSize),
// then segNo % (4 GiB / segSize), each as eight upper-case hex digits.
// It panics if segSize is not valid (see ValidSegSize).
func SegmentName(tli TimeLineID, segNo, segSize uint64) string {
	mustValidSegSize(segSize)
	per := segmentsPerXLogID(segSize)
	return fmt.Sprintf("%08X%08X%08X", uint32(tli), uint32(segNo/per), uint32(segNo%per))
}

// ParseSegmentName parses a 24-hex-digit segment name for the given segment
// size. It rejects lower-case hex (PostgreSQL never writes it), timeline 0,
// and a low part too large for the segment size, so that a name it accepts
// round-trips through SegmentName.
func ParseSegmentName(name string, segSize uint64) (Segment, error) {
	if !ValidSegSize(segSize) {
		return Segment{}, fmt.Errorf("parsing WAL segment name %q: invalid segment size %d", name, segSize)
	}
	if len(name) != 24 || !isUpperHex(name) {
		return Segment{}, fmt.Errorf("%q is not a WAL segment name (24 upper-case hex digits)", name)
	}
	// Cannot fail: eight hex digits each.
	tli, _ := strconv.ParseUint(name[0:8], 16, 32)
	log, _ := strconv.ParseUint(name[8:16], 16, 32)
	seg, _ := strconv.ParseUint(name[16:24], 16, 32)
	if tli == 0 {
		return Segment{}, fmt.Errorf("WAL segment name %q has timeline 0", name)
	}
	per := segmentsPerXLogID(segSize)
	if seg >= per {
		return Segment{}, fmt.Errorf("%q is not a WAL segment name for %d-byte segments: its low part must be below %X", name, segSize, per)
	}
	return Segment{TLI: TimeLineID(tli), No: log*per + seg}, nil
}

// NextSegmentName returns the name of the segment that follows name on the
// same timeline.
func NextSegmentName(name string, segSize uint64) (string, error) {
	seg, err := ParseSegmentName(name, segSize)
	if err != nil {
		return "", err
	}
	if seg.No+1 > SegmentOf(^LSN(0), segSize) {
		return "", fmt.Errorf("WAL segment %s is the last one there can be", name)
	}
	return SegmentName(seg.TLI, seg.No+1, segSize), nil
}

// SegmentRange returns, in order, the names of the segments on timeline tli
// that hold the WAL from start (inclusive) to stop (exclusive): from the
// segment holding start to the segment holding stop-1.
//
// These are exactly the segments a base backup needs when start and stop
// are the LSNs pg_backup_start and pg_backup_stop return. The stop LSN is
// the end of the backup-end record, i.e. the position of the first byte
// after it, so the last segment needed is the one holding stop-1
// (PostgreSQL waits for that one to be archived: XLByteToPrevSeg). The
// segment holding stop itself is the same one unless stop falls exactly on
// a segment boundary; then that next segment holds none of the backup's
// WAL and may not be written, let alone archived, for a long time.
//
// SegmentRange returns nil when stop <= start. The caller bounds the range:
// it allocates one name per segment. It panics if segSize is not valid.
func SegmentRange(tli TimeLineID, start, stop LSN, segSize uint64) []string {
	mustValidSegSize(segSize)
	if stop <= start {
		return nil
	}
	first, last := SegmentOf(start, segSize), PrevSegmentOf(stop, segSize)
	names := make([]string, 0, last-first+1)
	for no := first; ; no++ {
		names = append(names, SegmentName(tli, no, segSize))
		if no == last {
			return names
		}
	}
}

// Kind is the kind of a file in the WAL archive.
type Kind int

// The kinds of archive files. The zero Kind is not a valid kind.
const (
	KindSegment         Kind = iota + 1 // 000000010000000000000001
	KindPartial                         // 000000010000000000000001.partial
	KindBackupHistory                   // 000000010000000000000001.00000028.backup
	KindTimelineHistory                 // 00000002.history
)

func (k Kind) String() string {
	switch k {
	case KindSegment:
		return "segment"
	case KindPartial:
		return "partial segment"
	case KindBackupHistory:
		return "backup history file"
	case KindTimelineHistory:
		return "timeline history file"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// ErrNotWALName is wrapped by Classify's errors.
var ErrNotWALName = errors.New("not a WAL archive file name")

// Classify tells what kind of archive file name is. Names are bare file
// names as PostgreSQL passes them in %f: no directories. Accepted forms,
// with H an upper-case hex digit (PostgreSQL never writes lower case):
//
//	HHHHHHHHHHHHHHHHHHHHHHHH                 segment (24 digits)
//	HHHHHHHHHHHHHHHHHHHHHHHH.partial         partial segment
//	HHHHHHHHHHHHHHHHHHHHHHHH.HHHHHHHH.backup backup history file
//	HHHHHHHH.history                         timeline history file
//
// Names whose timeline (the first eight digits) is 0 are rejected. Whether a
// segment's low part fits the cluster's segment size is ParseSegmentName's
// business.
func Classify(name string) (Kind, error) {
	var k Kind
	switch {
	case len(name) == 24 && isUpperHex(name):
		k = KindSegment
	case len(name) == 32 && isUpperHex(name[:24]) && name[24:] == ".partial":
		k = KindPartial
	case len(name) == 40 && isUpperHex(name[:24]) && name[24] == '.' && isUpperHex(name[25:33]) && name[33:] == ".backup":
		k = KindBackupHistory
	case len(name) == 16 && isUpperHex(name[:8]) && name[8:] == ".history":
		k = KindTimelineHistory
	default:
		return 0, fmt.Errorf("%w: %q", ErrNotWALName, name)
	}
	if name[:8] == "00000000" {
		return 0, fmt.Errorf("%w: %q has timeline 0", ErrNotWALName, name)
	}
	return k, nil
}

// TimelineOf returns the timeline of an archive file name: the value of its
// first eight hex digits. It returns 0 when name does not start with eight
// upper-case hex digits; it does not otherwise check the name (see
// Classify).
func TimelineOf(name string) TimeLineID {
	if len(name) < 8 || !isUpperHex(name[:8]) {
		return 0
	}
	v, _ := strconv.ParseUint(name[:8], 16, 32)
	return TimeLineID(v)
}

// HistoryName is the name of timeline tli's history file.
func HistoryName(tli TimeLineID) string { return fmt.Sprintf("%08X.history", uint32(tli)) }

func isUpperHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}
