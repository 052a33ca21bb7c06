// Package wal knows PostgreSQL's write-ahead log at the level of names and
// positions: LSNs, segment arithmetic for every legal segment size, the
// names of the files an archive holds (segments, partial segments, backup
// history files, timeline history files) and the content of timeline
// history files.
//
// Facts follow src/include/access/xlog_internal.h and
// src/backend/access/transam/timeline.c of PostgreSQL 12 to 18, which agree
// on everything here, except the WAL page magic (pageheader.go).
package wal

import (
	"fmt"
	"strconv"
	"strings"
)

// TimeLineID is a PostgreSQL timeline. Timeline 0 does not exist; the first
// timeline of every cluster is 1.
type TimeLineID uint32

// LSN is a WAL location (XLogRecPtr): a byte position in the cluster's
// infinite WAL stream.
type LSN uint64

// InvalidLSN is PostgreSQL's InvalidXLogRecPtr.
const InvalidLSN LSN = 0

// String formats the LSN as PostgreSQL 12 to 18 do ("%X/%X"): the high and
// low 32 bits in upper-case hex without padding, e.g. "16/B374D848".
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l)) }

// ParseLSN parses "hi/lo", each half 1 to 8 hex digits (either case), the
// form pg_lsn accepts and PostgreSQL prints. Zero-padded halves are accepted too,
// though PostgreSQL 12 to 18 never print them (18 writes "0/2000028" in a
// backup label, testdata of internal/pgcontrol).
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || !isHex(hi, 1, 8) || !isHex(lo, 1, 8) {
		return 0, fmt.Errorf("parsing LSN %q: want two groups of 1-8 hex digits like 0/3000060", s)
	}
	// Cannot fail: both halves are 1-8 hex digits.
	h, _ := strconv.ParseUint(hi, 16, 32)
	l, _ := strconv.ParseUint(lo, 16, 32)
	return LSN(h<<32 | l), nil
}

// isHex reports whether s is min to max hex digits of either case.
func isHex(s string, min, max int) bool {
	if len(s) < min || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'F' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
