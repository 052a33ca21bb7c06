package restore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DirKind is what a restore target holds.
type DirKind int

const (
	// DirEmpty: the directory is absent, or empty.
	DirEmpty DirKind = iota
	// DirCluster: a PostgreSQL cluster is there (PG_VERSION,
	// global/pg_control or postmaster.pid).
	DirCluster
	// DirInterrupted: an interrupted pgkeep restore: the files of a
	// backup, with pg_control still under its temporary name.
	DirInterrupted
	// DirOther: not empty, and not a cluster.
	DirOther
)

// DirState describes a restore target (Inspect).
type DirState struct {
	Kind DirKind
	// Entries is the number of entries at the top level; Example is one
	// of them.
	Entries int
	Example string
	// Version is the content of PG_VERSION ("" if there is none);
	// PIDFile says whether postmaster.pid is there.
	Version string
	PIDFile bool
}

// Inspect says what dir holds. A cluster is recognised by PG_VERSION,
// global/pg_control or postmaster.pid; a restore pgkeep did not finish has
// no global/pg_control but its global/pg_control.pgkeep-restoring, so it
// can never be taken for a cluster (nor started).
func Inspect(dir string) (DirState, error) {
	var st DirState
	fi, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("checking target directory: %w", err)
	}
	if !fi.IsDir() {
		return st, fmt.Errorf("target %s is not a directory", dir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return st, fmt.Errorf("checking target directory: %w", err)
	}
	if len(entries) == 0 {
		return st, nil
	}
	st.Entries, st.Example = len(entries), entries[0].Name()
	exists := func(rel string) bool {
		_, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(rel)))
		return err == nil
	}
	if v, err := os.ReadFile(filepath.Join(dir, "PG_VERSION")); err == nil {
		st.Version = strings.TrimSpace(string(v))
	}
	st.PIDFile = exists("postmaster.pid")
	hasVersion := exists("PG_VERSION")
	switch {
	case exists("global/pg_control") || st.PIDFile:
		st.Kind = DirCluster
	case exists(controlTemp):
		st.Kind = DirInterrupted
	case hasVersion:
		st.Kind = DirCluster
	default:
		st.Kind = DirOther
	}
	return st, nil
}

// Describe says in a few words what a cluster directory is ("a
// PostgreSQL 15 cluster, and postmaster.pid says a server may be running
// there").
func (s DirState) Describe() string {
	what := "a PostgreSQL cluster"
	if s.Version != "" {
		what = "a PostgreSQL " + s.Version + " cluster"
	}
	if s.PIDFile {
		what += ", and its postmaster.pid says a server may be running there"
	}
	return what
}

// refuseNonEmpty returns the ErrNotEmpty refusal for a target that is not
// empty, or nil for an empty one. ifNotExists changes only the words:
// with it a cluster was left alone before this is reached, so what is
// refused here is never a cluster.
func refuseNonEmpty(dir string, st DirState, ifNotExists bool) error {
	switch st.Kind {
	case DirEmpty:
		return nil
	case DirInterrupted:
		return fmt.Errorf("%w: %s holds a restore that did not finish (%s is there, global/pg_control is not), so nothing there can start; empty the directory and restore again", ErrNotEmpty, dir, controlTemp)
	case DirCluster:
		if st.PIDFile {
			return fmt.Errorf("%w: %s holds postmaster.pid, so a PostgreSQL server may be running there; stop it and restore into an empty directory", ErrNotEmpty, dir)
		}
		return fmt.Errorf("%w: %s already holds %s; restore only into an empty or new directory (with --if-not-exists, as at boot, an existing cluster is left alone)", ErrNotEmpty, dir, st.Describe())
	}
	if ifNotExists {
		return fmt.Errorf("%w: %s has %d entries (for example %s) but is not a PostgreSQL cluster (no PG_VERSION, global/pg_control or postmaster.pid), so --if-not-exists does not leave it alone: restore only into an empty or new directory", ErrNotEmpty, dir, st.Entries, st.Example)
	}
	return fmt.Errorf("%w: %s has %d entries (for example %s); restore only into an empty or new directory", ErrNotEmpty, dir, st.Entries, st.Example)
}
