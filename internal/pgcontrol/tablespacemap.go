package pgcontrol

import (
	"bytes"
)

// TablespaceMapEntry is one line of a tablespace_map: the tablespace's OID
// (the name of its symlink in pg_tblspc) and the directory it points to.
type TablespaceMapEntry struct {
	OID  string
	Path string
}

// FormatTablespaceMap writes entries as PostgreSQL 15 to 18 write a
// tablespace_map: "OID path\n" per entry, with a backslash before every
// backslash, CR and LF in the path. Its tests read the result back to
// the same entries.
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
