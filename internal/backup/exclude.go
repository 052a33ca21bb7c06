package backup

import (
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/pgkeep/pgkeep/internal/walsum"
)

// The contents of these directories (relative to the data directory) are
// not backed up; the directories themselves are, empty, so their modes are
// kept. PostgreSQL clears or rebuilds them at startup, or they must not be
// restored (replication slots, WAL: WAL comes from the archive).
var excludeDirContents = map[string]bool{
	"pg_wal":       true, // archive_status is recreated below it
	"pg_dynshmem":  true,
	"pg_notify":    true,
	"pg_replslot":  true,
	"pg_serial":    true,
	"pg_snapshots": true,
	"pg_stat_tmp":  true,
	"pg_subtrans":  true,
	// pgkeep's own restore prefetch spool.
	"pgkeep_prefetch": true,
}

// Files never backed up, anywhere in the tree. backup_label and
// tablespace_map come from pg_backup_stop instead.
var excludeFiles = map[string]bool{
	// pgkeep's marker of a restore that ended the archive at a gap on
	// purpose (walarchive.ArchiveEndMarker).
	"pgkeep_archive_end": true,
	// What the last restore wrote, for a delta restore of this directory
	// (restore.RestoredRecord): it describes this copy, not the cluster.
	"pgkeep_restored":          true,
	"pgkeep_restored.tmp":      true,
	"postgresql.auto.conf.tmp": true,
	"current_logfiles.tmp":     true,
	"backup_label":             true,
	"tablespace_map":           true,
	"backup_manifest":          true,
	"postmaster.pid":           true,
	"postmaster.opts":          true,
	"recovery.signal":          true, // a restore writes its own
	"standby.signal":           true,
}

// excludeKind says what to do with a path met while walking.
type excludeKind int

const (
	include      excludeKind = iota
	skip                     // leave it out entirely
	skipContents             // keep the directory, leave out what is in it
)

// classify decides whether rel (slash-separated, relative to the data
// directory, or pg_tblspc/OID/... for tablespaces) is backed up.
func classify(rel string, isDir bool) excludeKind {
	base := path.Base(rel)
	// Temporary files and directories of any database or tablespace.
	if strings.HasPrefix(base, "pgsql_tmp") {
		return skip
	}
	if isDir {
		if excludeDirContents[rel] {
			return skipContents
		}
		return include
	}
	if !strings.Contains(rel, "/") && excludeFiles[base] {
		return skip
	}
	// The relation cache init file is rebuilt at startup (prefix match,
	// for its temporary files too).
	if strings.HasPrefix(base, "pg_internal.init") {
		return skip
	}
	return include
}

// relationFile matches relation data files: relfilenode, optional fork,
// optional segment number. It is compiled on first use, not at package
// initialisation, which every pgkeep process (each wal-push call) pays.
var relationFile = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^([0-9]+)(_fsm|_vm|_init)?(\.([0-9]+))?$`)
})

// isRelationDir reports whether dir holds relation files whose pages carry
// checksums: global, base/DBOID, pg_tblspc/OID/PG_*/DBOID.
func isRelationDir(dir string) bool {
	if dir == "global" {
		return true
	}
	parts := strings.Split(dir, "/")
	switch {
	case len(parts) == 2 && parts[0] == "base":
		return true
	case len(parts) == 4 && parts[0] == "pg_tblspc":
		return true
	}
	return false
}

// Tablespace OIDs of the data directory's own tablespaces.
const (
	defaultTablespace = 1663 // base/
	globalTablespace  = 1664 // global/
)

// relationOf names the relation fork a relation file belongs to and its
// segment number, and reports whether rel is a relation file (whose pages
// carry checksums, and whose changes WAL summaries record): global/REL,
// base/DB/REL and pg_tblspc/SPC/PG_*/DB/REL, with an optional _fsm, _vm
// or _init and an optional .SEGNO.
func relationOf(rel string) (f walsum.RelFork, seg uint32, ok bool) {
	dir := path.Dir(rel)
	if !isRelationDir(dir) {
		return f, 0, false
	}
	m := relationFile().FindStringSubmatch(path.Base(rel))
	if m == nil {
		return f, 0, false
	}
	num := func(s string) (uint32, bool) {
		v, err := strconv.ParseUint(s, 10, 32)
		return uint32(v), err == nil
	}
	var good bool
	if f.RelNumber, good = num(m[1]); !good {
		return f, 0, false
	}
	switch m[2] {
	case "_fsm":
		f.Fork = walsum.FSMFork
	case "_vm":
		f.Fork = walsum.VMFork
	case "_init":
		f.Fork = walsum.InitFork
	}
	if m[4] != "" {
		if seg, good = num(m[4]); !good {
			return f, 0, false
		}
	}
	parts := strings.Split(dir, "/")
	switch parts[0] {
	case "global":
		f.SpcOID = globalTablespace
	case "base":
		f.SpcOID = defaultTablespace
		f.DBOID, good = num(parts[1])
	default: // pg_tblspc/SPC/PG_*/DB
		f.SpcOID, good = num(parts[1])
		if good {
			f.DBOID, good = num(parts[3])
		}
	}
	return f, seg, good
}

// unloggedSkip reports, for the files of one database directory, which
// relation files belong to unlogged relations and can be left out: every
// fork but _init of a relation that has an _init fork. PostgreSQL resets
// unlogged relations from their init fork at the end of recovery.
func unloggedSkip(names []string) map[string]bool {
	hasInit := map[string]bool{}
	for _, n := range names {
		if m := relationFile().FindStringSubmatch(n); m != nil && m[2] == "_init" {
			hasInit[m[1]] = true
		}
	}
	if len(hasInit) == 0 {
		return nil
	}
	out := map[string]bool{}
	for _, n := range names {
		if m := relationFile().FindStringSubmatch(n); m != nil && hasInit[m[1]] && m[2] != "_init" {
			out[n] = true
		}
	}
	return out
}
