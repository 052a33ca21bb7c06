package pgcontrol

import (
	"bytes"
	"fmt"
	"strconv"
)

// TablespaceMapEntry is one line of a tablespace_map: the tablespace's OID
// (the name of its symlink in pg_tblspc) and the directory it points to.
type TablespaceMapEntry struct {
	OID  string
	Path string
}

// ParseTablespaceMap parses a tablespace_map, the spcmapfile text
// pg_backup_stop returns, as PostgreSQL 15 to 18 read it
// (read_tablespace_map in xlogrecovery.c). Each line is an OID, one space,
// and a path, which may contain and even begin with spaces. A backslash
// makes the next byte literal; the server writes one before every
// backslash, CR and LF in a path, so a path may span lines. Unescaped CR
// and LF end lines; empty lines are skipped. The last line must be
// terminated.
//
// OIDs must be decimal numbers that fit in 32 bits and appear once; paths
// must not be empty. Servers that escape only line breaks (releases before
// 15 may) write files that parse the same unless a path contains a
// backslash.
func ParseTablespaceMap(data []byte) ([]TablespaceMapEntry, error) {
	var (
		out     []TablespaceMapEntry
		line    []byte
		escaped bool
		lineNo  = 1
		seen    = map[string]bool{}
	)
	for _, c := range data {
		switch {
		case !escaped && (c == '\n' || c == '\r'):
			if len(line) > 0 {
				e, err := parseTablespaceMapLine(line)
				if err != nil {
					return nil, fmt.Errorf("tablespace_map line %d: %w", lineNo, err)
				}
				if seen[e.OID] {
					return nil, fmt.Errorf("tablespace_map line %d: tablespace %s appears twice", lineNo, e.OID)
				}
				seen[e.OID] = true
				out = append(out, e)
				line = line[:0]
			}
		case !escaped && c == '\\':
			escaped = true
		default:
			line = append(line, c)
			escaped = false
		}
		if c == '\n' {
			lineNo++
		}
	}
	if len(line) > 0 || escaped {
		return nil, fmt.Errorf("tablespace_map line %d: not terminated by a newline", lineNo)
	}
	return out, nil
}

// parseTablespaceMapLine splits a de-escaped line at its first space.
func parseTablespaceMapLine(line []byte) (TablespaceMapEntry, error) {
	n := bytes.IndexByte(line, ' ')
	if n < 1 || n == len(line)-1 {
		return TablespaceMapEntry{}, fmt.Errorf("%q is not \"OID path\"", line)
	}
	oid := string(line[:n])
	if v, err := strconv.ParseUint(oid, 10, 32); err != nil || v == 0 || oid[0] == '0' {
		return TablespaceMapEntry{}, fmt.Errorf("%q is not a tablespace OID", oid)
	}
	return TablespaceMapEntry{OID: oid, Path: string(line[n+1:])}, nil
}

// FormatTablespaceMap writes entries as PostgreSQL 15 to 18 write a
// tablespace_map: "OID path\n" per entry, with a backslash before every
// backslash, CR and LF in the path. ParseTablespaceMap reads the result
// back to the same entries.
func FormatTablespaceMap(entries []TablespaceMapEntry) []byte {
	var b bytes.Buffer
	for _, e := range entries {
		b.WriteString(e.OID)
		b.WriteByte(' ')
		for i := 0; i < len(e.Path); i++ {
			if c := e.Path[i]; c == '\\' || c == '\n' || c == '\r' {
				b.WriteByte('\\')
			}
			b.WriteByte(e.Path[i])
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}
