package restore

// Delta restore: into a data directory of the same cluster (its server
// stopped), write only what differs from the backup. Files are compared
// piece by piece with the manifest's checksums, relation files chunk by
// chunk (catalog.ChunkSize); a data object is fetched only when some piece
// it holds differs. Files and directories the backup does not have are
// removed, pg_wal's content among them: WAL comes from the archive.
//
// Safety: pg_control is moved out of the way before anything else is
// written (to the name a restore writes it under until it is done), so
// an interrupted delta restore is never started by mistake, and can be
// run again: the moved pg_control, or the backup's, still names the
// cluster.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sync/errgroup"

	"github.com/cespare/xxhash/v2"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/pgcontrol"
)

// ErrDeltaTarget means a delta restore's target is not a stopped data
// directory of the repository's cluster.
var ErrDeltaTarget = errors.New("not a data directory a delta restore may write to")

// DeltaStats says what a delta restore found and did.
type DeltaStats struct {
	Compared int64 `json:"compared_bytes"` // read from the local files to compare
	Written  int64 `json:"written_bytes"`  // written (and fetched pieces of)
	Same     int64 `json:"unchanged_bytes"`
	Fetched  int   `json:"objects_fetched"`
	Objects  int   `json:"objects"`
	Removed  int   `json:"removed"` // files and directories the backup does not have
}

// checkDeltaTarget makes sure pgdata holds a stopped cluster whose system
// identifier is sysid.
func checkDeltaTarget(pgdata string, sysid uint64, major int) error {
	if pid, running := serverRunning(pgdata); running {
		return fmt.Errorf("%w: a PostgreSQL server (pid %d) is running on %s; stop it first (pg_ctl -D %s stop)", ErrDeltaTarget, pid, pgdata, pgdata)
	}
	var data []byte
	var err error
	for _, name := range []string{"global/pg_control", controlTemp} {
		if data, err = os.ReadFile(filepath.Join(pgdata, filepath.FromSlash(name))); err == nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("%w: %s has no global/pg_control, so it cannot be shown to be this cluster's; restore into an empty directory instead", ErrDeltaTarget, pgdata)
	}
	ctl, err := pgcontrol.Parse(data)
	if err != nil {
		return fmt.Errorf("%w: reading %s/global/pg_control: %v", ErrDeltaTarget, pgdata, err)
	}
	if ctl.SystemIdentifier != sysid {
		return fmt.Errorf("%w: %s holds cluster %d, the repository is of cluster %d; a delta restore only writes over the same cluster", ErrDeltaTarget, pgdata, ctl.SystemIdentifier, sysid)
	}
	if v, err := pgcontrol.ReadVersionFile(pgdata); err == nil && v != major {
		return fmt.Errorf("%w: %s holds PostgreSQL %d, the backup is of PostgreSQL %d", ErrDeltaTarget, pgdata, v, major)
	}
	return nil
}

// serverRunning reports whether postmaster.pid names a live process.
func serverRunning(pgdata string) (int, bool) {
	data, err := os.ReadFile(filepath.Join(pgdata, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(data), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0, false
	}
	err = syscall.Kill(pid, 0)
	return pid, err == nil || errors.Is(err, syscall.EPERM)
}

// moveControlAside renames global/pg_control to the name a restore
// writes it under, so that the directory cannot be started until the
// delta restore is done.
func moveControlAside(pgdata string) error {
	from := filepath.Join(pgdata, "global", "pg_control")
	if _, err := os.Stat(from); errors.Is(err, fs.ErrNotExist) {
		return nil // a delta restore that was interrupted already did
	}
	if err := os.Rename(from, filepath.Join(pgdata, filepath.FromSlash(controlTemp))); err != nil {
		return fmt.Errorf("moving pg_control aside: %w", err)
	}
	return syncDir(filepath.Join(pgdata, "global"))
}

// deltaLayout makes the tablespace links and directories of m exist in an
// existing data directory (links that point elsewhere are replaced), and
// returns the tablespace locations.
func deltaLayout(pgdata string, m *catalog.Manifest, remap map[string]string, owner *Owner) (map[string]string, error) {
	tsMap := map[string]string{}
	for _, loc := range tablespaceLocations(m, remap) {
		if !filepath.IsAbs(loc) {
			return nil, fmt.Errorf("tablespace location %q must be absolute", loc)
		}
	}
	if err := os.MkdirAll(filepath.Join(pgdata, "pg_tblspc"), 0o700); err != nil {
		return nil, err
	}
	for _, ts := range m.Tablespaces {
		loc := ts.Location
		if to, ok := remap[ts.OID]; ok {
			loc = to
		}
		if err := mkdirAllOwned(loc, owner); err != nil {
			return nil, fmt.Errorf("creating tablespace %s at %s: %w", ts.OID, loc, err)
		}
		link := filepath.Join(pgdata, "pg_tblspc", ts.OID)
		if cur, err := os.Readlink(link); err != nil || filepath.Clean(cur) != filepath.Clean(loc) {
			if err := os.RemoveAll(link); err != nil {
				return nil, err
			}
			if err := os.Symlink(loc, link); err != nil {
				return nil, fmt.Errorf("linking tablespace %s: %w", ts.OID, err)
			}
		}
		tsMap[ts.OID] = loc
	}
	return tsMap, nil
}

// removeExtra removes what the backup does not have: files not in m,
// directories not in m, tablespace links m does not declare. pg_wal and
// tablespace links are followed (a pg_wal link stays, its content goes).
func removeExtra(pgdata string, m *catalog.Manifest, tsMap map[string]string) (int, error) {
	files := map[string]bool{}
	for _, f := range m.Files {
		files[destPath(f.Path)] = true
	}
	dirs := map[string]bool{"global": true, "pg_tblspc": true}
	for _, d := range m.Dirs {
		dirs[d.Path] = true
	}
	for _, f := range m.Files {
		for p := f.Path; strings.Contains(p, "/"); {
			p = p[:strings.LastIndex(p, "/")]
			dirs[p] = true
		}
	}
	removed := 0
	var walk func(abs, rel string) error
	walk = func(abs, rel string) error {
		entries, err := os.ReadDir(abs)
		if err != nil {
			return fmt.Errorf("reading %s: %w", abs, err)
		}
		for _, e := range entries {
			childAbs := filepath.Join(abs, e.Name())
			childRel := e.Name()
			if rel != "" {
				childRel = rel + "/" + e.Name()
			}
			isLink := e.Type()&fs.ModeSymlink != 0
			switch {
			case isTablespaceLink(childRel):
				if _, ok := tsMap[e.Name()]; ok {
					if err := walk(childAbs, childRel); err != nil {
						return err
					}
					continue
				}
			case isLink && dirs[childRel]:
				// pg_wal on another file system, say.
				if err := walk(childAbs, childRel); err != nil {
					return err
				}
				continue
			case e.IsDir() && dirs[childRel]:
				if err := walk(childAbs, childRel); err != nil {
					return err
				}
				continue
			case !e.IsDir() && !isLink && files[childRel]:
				continue
			}
			if err := os.RemoveAll(childAbs); err != nil {
				return fmt.Errorf("removing %s, which backup %s does not have: %w", childAbs, m.ID, err)
			}
			removed++
		}
		return nil
	}
	return removed, walk(pgdata, "")
}

// deltaTargets compares the local files with m and returns the pieces to
// write: every piece of a file that is not there, the differing chunks of
// relation files, the differing pieces of the others. pg_control is
// always written.
func deltaTargets(ctx context.Context, pgdata string, m *catalog.Manifest, known map[string]restoredFile, workers int, st *DeltaStats) (map[catalog.ObjectRef][]target, error) {
	perFile := make([][]target, len(m.Files))
	compared := make([]int64, len(m.Files))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(workers, 1))
	for i := range m.Files {
		g.Go(func() error {
			if gctx.Err() != nil {
				return gctx.Err()
			}
			ts, n, err := compareFile(pgdata, m, &m.Files[i], known)
			perFile[i], compared[i] = ts, n
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := map[catalog.ObjectRef][]target{}
	for i, ts := range perFile {
		st.Compared += compared[i]
		for _, t := range ts {
			ref := catalog.ObjectRef{Backup: t.piece.ObjectOf(m.ID), Seq: t.piece.Object}
			out[ref] = append(out[ref], t)
			st.Written += t.size()
		}
	}
	st.Same = m.Size - st.Written
	return out, nil
}

// compareFile returns what of f must be written, and how many local bytes
// it read to find out: none when the last restore recorded the file
// (known) and it has not changed since.
func compareFile(pgdata string, m *catalog.Manifest, f *catalog.File, known map[string]restoredFile) ([]target, int64, error) {
	all := func() []target {
		ts := make([]target, len(f.Pieces))
		for k, p := range f.Pieces {
			ts[k] = target{file: f, piece: p}
		}
		return ts
	}
	if f.Path == "global/pg_control" {
		return all(), 0, nil
	}
	if rec, ok := known[f.Path]; ok {
		if now, ok := fileIdentity(filepath.Join(pgdata, filepath.FromSlash(f.Path))); ok && rec.sameFile(now) {
			if ts, ok := compareRecorded(f, rec); ok {
				return ts, 0, nil
			}
		}
	}
	fh, err := os.Open(filepath.Join(pgdata, filepath.FromSlash(f.Path)))
	if errors.Is(err, fs.ErrNotExist) {
		return all(), 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading %s to compare it: %w", f.Path, err)
	}
	defer fh.Close()
	var out []target
	var read int64
	buf := make([]byte, catalog.ChunkSize)
	for _, p := range f.Pieces {
		if p.Chunks == nil {
			h := xxhash.New()
			n, err := io.Copy(h, io.NewSectionReader(fh, p.FileOffset, p.Size))
			if err != nil {
				return nil, 0, fmt.Errorf("reading %s to compare it: %w", f.Path, err)
			}
			read += n
			if n != p.Size || fmt.Sprintf("%016x", h.Sum64()) != p.XXH64 {
				out = append(out, target{file: f, piece: p})
			}
			continue
		}
		n := catalog.ChunkCount(p.Size)
		write := make([]bool, n)
		any := false
		for ci := range n {
			size := min(catalog.ChunkSize, p.Size-int64(ci)*catalog.ChunkSize)
			got, err := fh.ReadAt(buf[:size], p.FileOffset+int64(ci)*catalog.ChunkSize)
			read += int64(got)
			if err != nil && err != io.EOF {
				return nil, 0, fmt.Errorf("reading %s to compare it: %w", f.Path, err)
			}
			if int64(got) != size || xxhash.Sum64(buf[:size]) != binary.LittleEndian.Uint64(p.Chunks[8*ci:]) {
				write[ci], any = true, true
			}
		}
		if any {
			out = append(out, target{file: f, piece: p, write: write})
		}
	}
	return out, read, nil
}

// compareRecorded is compareFile for a file whose chunk checksums were
// recorded: it reports false when f has pieces it cannot judge that way.
func compareRecorded(f *catalog.File, rec restoredFile) ([]target, bool) {
	var out []target
	for _, p := range f.Pieces {
		if p.Chunks == nil {
			return nil, false
		}
		n := catalog.ChunkCount(p.Size)
		write := make([]bool, n)
		any := false
		for ci := range n {
			at := int(p.FileOffset/catalog.ChunkSize) + ci
			size := min(catalog.ChunkSize, p.Size-int64(ci)*catalog.ChunkSize)
			localSize := min(catalog.ChunkSize, rec.Size-int64(at)*catalog.ChunkSize)
			if 8*at+8 > len(rec.Chunks) || localSize != size || binary.LittleEndian.Uint64(rec.Chunks[8*at:]) != binary.LittleEndian.Uint64(p.Chunks[8*ci:]) {
				write[ci], any = true, true
			}
		}
		if any {
			out = append(out, target{file: f, piece: p, write: write})
		}
	}
	return out, true
}

// deltaObjects counts the objects m has and those targets need.
func deltaObjects(m *catalog.Manifest, targets map[catalog.ObjectRef][]target, st *DeltaStats) {
	st.Objects = len(m.Objects)
	for _, ts := range targets {
		if len(ts) > 0 {
			st.Fetched++
		}
	}
}

// RestoredRecord is the file a restore leaves in the data directory,
// pgkeep_restored: the chunk checksums of every relation file it wrote,
// with the file's identity (inode, size, modification and change times)
// right after. A delta restore trusts the recorded checksums of a file
// whose identity is unchanged (any write changes the times) instead of
// reading it: a cluster restored and not much used since compares in the
// time of a stat per file. It is removed before a restore writes
// anything, written anew at its end, and never backed up.
const RestoredRecord = "pgkeep_restored"

type restoredFile struct {
	Size   int64  `json:"size"`
	Ino    uint64 `json:"ino"`
	MTime  int64  `json:"mtime_ns"`
	CTime  int64  `json:"ctime_ns"`
	Chunks []byte `json:"chunks"`
}

type restoredState struct {
	Format int                     `json:"format"`
	Backup string                  `json:"backup"`
	Files  map[string]restoredFile `json:"files"`
}

// fileIdentity returns what restoredFile records of the file at p.
func fileIdentity(p string) (restoredFile, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		return restoredFile{}, false
	}
	return restoredFile{Size: st.Size, Ino: st.Ino, MTime: st.Mtim.Nano(), CTime: st.Ctim.Nano()}, true
}

// sameFile reports whether the file is as recorded.
func (f restoredFile) sameFile(now restoredFile) bool {
	return f.Size == now.Size && f.Ino == now.Ino && f.MTime == now.MTime && f.CTime == now.CTime
}

// fileChunks returns the chunk checksums of f's content from its
// manifest pieces, when they cover the file from 0, in chunk order.
func fileChunks(f *catalog.File) ([]byte, bool) {
	var out []byte
	var at int64
	for _, p := range f.Pieces {
		if p.Chunks == nil || p.FileOffset != at {
			return nil, false
		}
		out = append(out, p.Chunks...)
		at += p.Size
	}
	return out, at == f.Size && f.Size > 0
}

// writeRestoredRecord records the relation files of m as they are now,
// in a file given to owner (if not nil) like the rest.
func writeRestoredRecord(pgdata string, m *catalog.Manifest, owner *Owner) error {
	st := restoredState{Format: 1, Backup: m.ID, Files: map[string]restoredFile{}}
	for i := range m.Files {
		f := &m.Files[i]
		chunks, ok := fileChunks(f)
		if !ok {
			continue
		}
		id, ok := fileIdentity(filepath.Join(pgdata, filepath.FromSlash(f.Path)))
		if !ok || id.Size != f.Size {
			continue
		}
		id.Chunks = chunks
		st.Files[f.Path] = id
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := filepath.Join(pgdata, RestoredRecord+".tmp")
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", RestoredRecord, err)
	}
	if owner != nil {
		if err := os.Lchown(tmp, owner.UID, owner.GID); err != nil {
			return fmt.Errorf("giving %s to %s: %w", RestoredRecord, owner, err)
		}
	}
	return os.Rename(tmp, filepath.Join(pgdata, RestoredRecord))
}

// readRestoredRecord returns what the last restore into pgdata recorded
// (nil if nothing usable), and removes the record: from here on the
// files change.
func readRestoredRecord(pgdata string) (map[string]restoredFile, error) {
	p := filepath.Join(pgdata, RestoredRecord)
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := os.Remove(p); err != nil {
		return nil, fmt.Errorf("removing %s: %w", RestoredRecord, err)
	}
	var st restoredState
	if json.Unmarshal(data, &st) != nil || st.Format != 1 {
		return nil, nil // unreadable: compare by reading
	}
	return st.Files, nil
}
