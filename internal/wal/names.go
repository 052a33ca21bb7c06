// Package wal knows PostgreSQL's WAL file names: segments, partial
// segments, backup history files and timeline history files; LSNs and
// segment arithmetic; and the content of timeline history files.
package wal

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// TimeLineID is a PostgreSQL timeline.
type TimeLineID uint32

// LSN is a WAL location.
type LSN uint64

// String formats the LSN as PostgreSQL does: high/low 32 bits in hex.
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l)) }

// ParseLSN parses "X/X".
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || hi == "" || lo == "" || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("%q is not an LSN like 0/3000060", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%q is not an LSN like 0/3000060", s)
	}
	return LSN(h<<32 | l), nil
}

// ValidSegSize reports whether n is a WAL segment size PostgreSQL allows:
// a power of two from 1 MiB to 1 GiB.
func ValidSegSize(n uint64) bool {
	return n >= 1<<20 && n <= 1<<30 && n&(n-1) == 0
}

// segmentsPerXLogID is how many segments one "xlogid" (4 GiB of WAL) holds.
func segmentsPerXLogID(segSize uint64) uint64 { return 0x100000000 / segSize }

// SegmentOf returns the number of the segment that holds lsn.
func SegmentOf(lsn LSN, segSize uint64) uint64 { return uint64(lsn) / segSize }

// SegmentStartLSN returns the first LSN of segment segNo.
func SegmentStartLSN(segNo, segSize uint64) LSN { return LSN(segNo * segSize) }

// SegmentName returns the file name of segment segNo on timeline tli.
func SegmentName(tli TimeLineID, segNo, segSize uint64) string {
	per := segmentsPerXLogID(segSize)
	return fmt.Sprintf("%08X%08X%08X", uint32(tli), uint32(segNo/per), uint32(segNo%per))
}

// Segment identifies a WAL segment.
type Segment struct {
	TLI TimeLineID
	No  uint64
}

// ParseSegmentName parses a 24-hex-digit segment name for the given
// segment size.
func ParseSegmentName(name string, segSize uint64) (Segment, error) {
	if !ValidSegSize(segSize) {
		return Segment{}, fmt.Errorf("invalid WAL segment size %d", segSize)
	}
	if len(name) != 24 || !isUpperHex(name) {
		return Segment{}, fmt.Errorf("%q is not a WAL segment name (24 upper-case hex digits)", name)
	}
	tli, _ := strconv.ParseUint(name[0:8], 16, 32)
	log, _ := strconv.ParseUint(name[8:16], 16, 32)
	seg, _ := strconv.ParseUint(name[16:24], 16, 32)
	per := segmentsPerXLogID(segSize)
	if seg >= per {
		return Segment{}, fmt.Errorf("%q is not a valid segment name for %d-byte segments", name, segSize)
	}
	if tli == 0 {
		return Segment{}, fmt.Errorf("%q has timeline 0", name)
	}
	return Segment{TLI: TimeLineID(tli), No: log*per + seg}, nil
}

// Kind is the kind of a file in the WAL archive.
type Kind int

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
	return "unknown"
}

// ErrNotWALName is wrapped by Classify's errors.
var ErrNotWALName = errors.New("not a WAL file name")

// Classify tells what kind of archive file name is. Names are bare file
// names as PostgreSQL passes them in %f: no directories.
func Classify(name string) (Kind, error) {
	if len(name) >= 8 && name[:8] == "00000000" {
		return 0, fmt.Errorf("%w: %q has timeline 0", ErrNotWALName, name)
	}
	switch {
	case len(name) == 24 && isUpperHex(name):
		if name[:8] == "00000000" {
			return 0, fmt.Errorf("%w: %q has timeline 0", ErrNotWALName, name)
		}
		return KindSegment, nil
	case len(name) == 32 && strings.HasSuffix(name, ".partial") && isUpperHex(name[:24]):
		return KindPartial, nil
	case len(name) == 40 && strings.HasSuffix(name, ".backup") && isUpperHex(name[:24]) && name[24] == '.' && isUpperHex(name[25:33]):
		return KindBackupHistory, nil
	case len(name) == 16 && strings.HasSuffix(name, ".history") && isUpperHex(name[:8]):
		if name[:8] == "00000000" {
			return 0, fmt.Errorf("%w: %q has timeline 0", ErrNotWALName, name)
		}
		return KindTimelineHistory, nil
	}
	return 0, fmt.Errorf("%w: %q", ErrNotWALName, name)
}

// TimelineOf returns the timeline in a valid archive file name.
func TimelineOf(name string) TimeLineID {
	if len(name) < 8 {
		return 0
	}
	v, _ := strconv.ParseUint(name[:8], 16, 32)
	return TimeLineID(v)
}

// HistoryName returns the name of timeline tli's history file.
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

// HistoryEntry is one line of a timeline history file: timeline TLI ended,
// and its child began, at SwitchLSN.
type HistoryEntry struct {
	TLI       TimeLineID
	SwitchLSN LSN
	Reason    string
}

// ParseHistory parses a timeline history file. Lines are
// "parentTLI<tab>switchpoint<tab>reason"; blank lines and lines starting
// with '#' are ignored. Timelines must increase.
func ParseHistory(data []byte) ([]HistoryEntry, error) {
	var out []HistoryEntry
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimRight(line, "\r")
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		fields := strings.FieldsFunc(trimmed, func(r rune) bool { return r == '\t' || r == ' ' })
		if len(fields) < 2 {
			return nil, fmt.Errorf("history file line %d: want timeline and switch point", i+1)
		}
		tli, err := strconv.ParseUint(fields[0], 10, 32)
		if err != nil || tli == 0 {
			return nil, fmt.Errorf("history file line %d: bad timeline %q", i+1, fields[0])
		}
		lsn, err := ParseLSN(fields[1])
		if err != nil {
			return nil, fmt.Errorf("history file line %d: %w", i+1, err)
		}
		if n := len(out); n > 0 && TimeLineID(tli) <= out[n-1].TLI {
			return nil, fmt.Errorf("history file line %d: timeline %d does not increase", i+1, tli)
		}
		reason := ""
		if parts := strings.SplitN(trimmed, "\t", 3); len(parts) == 3 {
			reason = parts[2]
		}
		out = append(out, HistoryEntry{TLI: TimeLineID(tli), SwitchLSN: lsn, Reason: reason})
	}
	return out, nil
}

// TimelineOfLSN returns the timeline that holds lsn on the way to target,
// given target's history: the first ancestor whose switch point is after
// lsn, or target itself.
func TimelineOfLSN(history []HistoryEntry, target TimeLineID, lsn LSN) TimeLineID {
	for _, h := range history {
		if lsn < h.SwitchLSN {
			return h.TLI
		}
	}
	return target
}
