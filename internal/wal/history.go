package wal

import (
	"fmt"
	"strconv"
	"strings"
)

// HistoryEntry is one line of a timeline history file: timeline TLI, an
// ancestor of the file's timeline, ended at SwitchLSN, where its child
// began.
type HistoryEntry struct {
	TLI       TimeLineID
	SwitchLSN LSN
	Reason    string // free text, e.g. "no recovery target specified"
}

// ParseHistory parses the content of a timeline history file
// (NNNNNNNN.history). PostgreSQL writes one line per ancestor, oldest
// first:
//
//	parentTLI<TAB>switchpoint<TAB>reason
//
// with the timeline in decimal and the switch point as an LSN ("0/3000060").
// Blank lines and lines whose first non-blank character is '#' are
// ignored, as are the line endings "\n" and "\r\n". Like PostgreSQL
// (readTimeLineHistory), ParseHistory accepts spaces as well as tabs
// between fields, a missing reason, and requires timelines to increase
// strictly; it also rejects timeline 0 and switch points that go backwards,
// which no real history contains. Entries are returned oldest first. An
// empty file yields no entries and no error.
func ParseHistory(data []byte) ([]HistoryEntry, error) {
	var out []HistoryEntry
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimLeft(strings.TrimRight(line, "\r"), " \t\v\f\r")
		if line == "" || line[0] == '#' {
			continue
		}
		e, err := parseHistoryLine(line)
		if err != nil {
			return nil, fmt.Errorf("timeline history line %d: %w", i+1, err)
		}
		if n := len(out); n > 0 {
			if e.TLI <= out[n-1].TLI {
				return nil, fmt.Errorf("timeline history line %d: timeline %d does not follow %d (timelines must increase)", i+1, e.TLI, out[n-1].TLI)
			}
			if e.SwitchLSN < out[n-1].SwitchLSN {
				return nil, fmt.Errorf("timeline history line %d: switch point %s is before the previous one, %s", i+1, e.SwitchLSN, out[n-1].SwitchLSN)
			}
		}
		out = append(out, e)
	}
	return out, nil
}

// parseHistoryLine parses one non-blank, non-comment line with its leading
// blanks removed.
func parseHistoryLine(line string) (HistoryEntry, error) {
	tliText, rest, ok := cutBlank(line)
	if !ok {
		return HistoryEntry{}, fmt.Errorf("%q: want a timeline and a switch point", line)
	}
	tli, err := strconv.ParseUint(tliText, 10, 32)
	if err != nil || tli == 0 {
		return HistoryEntry{}, fmt.Errorf("%q: %q is not a timeline ID", line, tliText)
	}
	lsnText, reason, _ := cutBlank(strings.TrimLeft(rest, " \t"))
	lsn, err := ParseLSN(lsnText)
	if err != nil {
		return HistoryEntry{}, fmt.Errorf("bad switch point: %w", err)
	}
	return HistoryEntry{TLI: TimeLineID(tli), SwitchLSN: lsn, Reason: strings.TrimSpace(reason)}, nil
}

// cutBlank splits s at its first tab or space.
func cutBlank(s string) (before, after string, found bool) {
	if i := strings.IndexAny(s, " \t"); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// TimelineOfLSN returns the timeline that wrote lsn in the history of
// target, given target's history file entries (tliOfPointInHistory): the
// oldest ancestor whose switch point is after lsn, or target itself. An LSN
// equal to a switch point belongs to the child timeline.
func TimelineOfLSN(history []HistoryEntry, target TimeLineID, lsn LSN) TimeLineID {
	for _, h := range history {
		if lsn < h.SwitchLSN {
			return h.TLI
		}
	}
	return target
}

// TimelineSpan is the stretch of WAL one timeline contributes to a
// timeline's history: the LSNs from Begin (inclusive) to End (exclusive).
// The oldest timeline begins at 0; the target timeline has not ended and
// its End is InvalidLSN.
type TimelineSpan struct {
	TLI        TimeLineID
	Begin, End LSN
}
