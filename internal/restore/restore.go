package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/pgcontrol"
	"github.com/pgkeep/pgkeep/internal/pgversion"
	"github.com/pgkeep/pgkeep/internal/progress"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/units"
	"github.com/pgkeep/pgkeep/internal/walarchive"
)

// Options configures a restore.
type Options struct {
	PGData   string
	BackupID string
	Target   Target
	Workers  int
	// TablespaceMap remaps tablespace OIDs to new locations.
	TablespaceMap map[string]string
	// Standby writes standby.signal instead of recovery.signal.
	Standby bool
	// RestoreCommand is the restore_command to write (the same pgkeep
	// binary with the same repository settings).
	RestoreCommand string
	// RecoveryEndCommand, if set, is written as recovery_end_command (it
	// removes the prefetch spool).
	RecoveryEndCommand string
	// ArchiveOff writes archive_mode = off, for a side restore that must
	// not archive into the repository it came from.
	ArchiveOff bool
	// IfNotExists leaves a target that already holds a cluster alone
	// (Result.Skipped = SkipCluster); any other non-empty target is still
	// refused (ErrNotEmpty).
	IfNotExists bool
	// IfBackupExists does nothing (Result.Skipped) when the repository is
	// not there yet (no identity record) or holds no complete backup. A
	// repository that cannot be read is an error, never "no backup".
	IfBackupExists bool
	// Owner, if set, is given every directory and file the restore
	// creates (see ResolveOwner), and must be able to reach the data
	// directory and read ServerReads.
	Owner *Owner
	// ServerReads are the files the restored server's restore_command
	// reads (the pgkeep binary, its config file, key files), checked
	// before anything is written when Owner is set.
	ServerReads []NamedPath
	// Delta restores into an existing data directory of the same cluster,
	// its server stopped, writing only what differs from the backup and
	// removing what the backup does not have (delta.go). An empty target
	// is restored as usual.
	Delta bool
	// DeltaReadAll makes a delta restore read every local file to compare
	// it, ignoring the checksums the last restore recorded
	// (RestoredRecord).
	DeltaReadAll bool
	Progress     progress.Reporter
}

// NamedPath is a path and what it is, for messages.
type NamedPath struct {
	Path, What string
}

// Skip says why a restore did nothing.
type Skip string

const (
	// SkipCluster: the target already holds a cluster (IfNotExists).
	SkipCluster Skip = "cluster-exists"
	// SkipNoRepository: there is no repository at the location yet
	// (IfBackupExists): the first boot of a new deployment.
	SkipNoRepository Skip = "no-repository"
	// SkipNoBackup: the repository holds no complete backup yet
	// (IfBackupExists).
	SkipNoBackup Skip = "no-backup"
)

// ErrNotEmpty means the target directory already holds files.
var ErrNotEmpty = errors.New("target directory is not empty")

// Result describes a restore.
type Result struct {
	// Skipped, if not "", says why nothing was restored, and Reason says
	// it in words; the other fields are then zero.
	Skipped     Skip
	Reason      string
	Owner       *Owner // who the files were given to; nil: the invoking user
	Backup      *catalog.Manifest
	Tablespaces map[string]string // OID -> location restored to
	Files       int
	Bytes       int64
	Duration    time.Duration
	// Delta is what a delta restore compared and wrote (nil otherwise).
	Delta *DeltaStats
}

// Run restores into opts.PGData, which must be empty or absent. With
// IfNotExists or IfBackupExists it may do nothing instead (Result.Skipped;
// section 6.3 of docs/design.md has the rules), and with an Owner every
// file it creates is given to that user.
func Run(ctx context.Context, r *repo.Repo, opts Options) (*Result, error) {
	began := time.Now()
	if opts.Workers < 1 {
		opts.Workers = 1
	}
	rep := opts.Progress
	if rep == nil {
		rep = progress.Nop{}
	}
	if err := opts.Target.Validate(); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(opts.PGData) {
		return nil, fmt.Errorf("--pgdata %q must be an absolute path", opts.PGData)
	}
	target, err := Inspect(opts.PGData)
	if err != nil {
		return nil, err
	}
	skip := func(why Skip, reason string) (*Result, error) {
		return &Result{Skipped: why, Reason: reason, Duration: time.Since(began)}, nil
	}
	if opts.IfNotExists && target.Kind == DirCluster {
		// Before the repository is read: a machine whose data is there
		// boots without it.
		return skip(SkipCluster, fmt.Sprintf("%s already holds %s", opts.PGData, target.Describe()))
	}
	delta := opts.Delta && target.Kind != DirEmpty
	if delta && target.Kind == DirOther {
		return nil, fmt.Errorf("%w: %s holds %d entries (for example %s) but no PostgreSQL cluster", ErrDeltaTarget, opts.PGData, target.Entries, target.Example)
	}
	if !delta {
		if err := refuseNonEmpty(opts.PGData, target, opts.IfNotExists); err != nil {
			return nil, err
		}
	}
	cat, err := catalog.Load(ctx, r)
	if opts.IfBackupExists && errors.Is(err, repo.ErrNoRepository) {
		// Only a positive "not there" gets here (storage.ErrNotFound);
		// an unreachable or misconfigured store is an error below.
		return skip(SkipNoRepository, fmt.Sprintf("there is no pgkeep repository at %s yet (no pgkeep.json)", r.Location()))
	}
	if err != nil {
		return nil, err
	}
	if opts.IfBackupExists && len(cat.Backups) == 0 {
		reason := fmt.Sprintf("the repository %s holds no complete backup yet", r.Location())
		if n := len(cat.Incomplete()); n > 0 {
			reason += fmt.Sprintf(" (%d incomplete: in progress or interrupted)", n)
		}
		return skip(SkipNoBackup, reason)
	}
	id := cat.Identity
	m, chain, err := ChooseBackup(cat.Backups, cat.WAL, cat.Histories, opts.BackupID, opts.Target)
	if err != nil {
		return nil, err
	}
	if err := pgversion.Check(m.PGMajor, "backup "+m.ID); err != nil {
		return nil, fmt.Errorf("refusing to restore: %w", err)
	}
	if (opts.Target.Name != "" || opts.Target.XID != "") && opts.BackupID == "" && len(cat.Backups) > 1 {
		// Neither says where in the WAL it lies: recovery from the newest
		// backup cannot reach one before that backup's end.
		rep.Logf("WARNING: restoring the newest backup, %s: a restore point or transaction before its end (LSN %s, %s) cannot be reached from it; name an earlier backup with --backup",
			m.ID, m.StopLSN, m.StopTime.UTC().Format(time.RFC3339))
	}
	if err := m.NeedContents(); err != nil {
		return nil, err
	}
	endAtGap := false
	if chain.Missing != "" {
		edge, err := ReadEdge(ctx, r, cat.WAL, chain, m.PGMajor, id.WalSegSize)
		if err != nil {
			return nil, err
		}
		if endAtGap, err = CheckGap(m, chain, edge, opts.Target); err != nil {
			return nil, err
		}
		rep.Logf("WARNING: the archive has a gap (%s..%s missing) after LSN %s: recovery ends there at the latest; the target must lie before it", chain.Missing, chain.MissingTo, chain.End)
	}
	for oid := range opts.TablespaceMap {
		found := false
		for _, ts := range m.Tablespaces {
			found = found || ts.OID == oid
		}
		if !found {
			return nil, fmt.Errorf("--tablespace-map %s: backup %s has no tablespace with OID %s", oid, m.ID, oid)
		}
	}
	if o := opts.Owner; o != nil {
		// Before anything is written: the server, running as the owner,
		// must reach its directories and read what restore_command uses.
		if err := o.CheckReaches(opts.PGData, "the data directory"); err != nil {
			return nil, err
		}
		for _, loc := range tablespaceLocations(m, opts.TablespaceMap) {
			if err := o.CheckReaches(loc, "the tablespace directory"); err != nil {
				return nil, err
			}
		}
		for _, f := range opts.ServerReads {
			if err := o.CheckReads(f.Path, f.What); err != nil {
				return nil, err
			}
		}
	}
	if delta {
		if err := checkDeltaTarget(opts.PGData, id.SystemIdentifier, m.PGMajor); err != nil {
			return nil, err
		}
	}
	rep.Logf("restoring backup %s (%s, LSN %s) into %s", m.ID, units.Bytes(m.Size), m.StopLSN, opts.PGData)

	if err := mkdirAllOwned(opts.PGData, opts.Owner); err != nil {
		return nil, fmt.Errorf("creating %s: %w", opts.PGData, err)
	}
	if err := os.Chmod(opts.PGData, 0o700); err != nil {
		return nil, err
	}
	var tsMap map[string]string
	targets := allTargets(m)
	var stats *DeltaStats
	written := m.Size
	if delta {
		stats = &DeltaStats{}
		if tsMap, targets, err = prepareDelta(ctx, opts, m, stats); err != nil {
			return nil, err
		}
		written = stats.Written
		rep.Logf("delta: %s of %s differ (%d of %d objects to fetch); removed %d entries the backup does not have",
			units.Bytes(stats.Written), units.Bytes(m.Size), stats.Fetched, stats.Objects, stats.Removed)
	} else if tsMap, err = layout(opts.PGData, m, opts.TablespaceMap, opts.Owner); err != nil {
		return nil, err
	}
	rep.Begin("restore "+m.ID, written)
	err = fetchAndCreate(ctx, r, opts.PGData, m, targets, opts.Workers, rep)
	rep.End()
	if err != nil {
		return nil, err
	}
	if err := writeRecovery(opts.PGData, m, opts, tsMap); err != nil {
		return nil, err
	}
	if endAtGap {
		// The operator chose to restore up to the gap: its first segment
		// is the end of the archive for this recovery.
		if err := os.WriteFile(filepath.Join(opts.PGData, walarchive.ArchiveEndMarker), []byte(chain.Missing+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("writing %s: %w", walarchive.ArchiveEndMarker, err)
		}
	}
	// Every file and directory is given to the owner here, before
	// pg_control is installed (under its temporary name, it is given
	// too), and the fsync makes the new owners durable with the data.
	if err := syncTree(opts.PGData, tsMap, opts.Owner); err != nil {
		return nil, err
	}
	// After the fsync and the ownership changes (which change the files'
	// change times): what a later delta restore may trust.
	if err := writeRestoredRecord(opts.PGData, m, opts.Owner); err != nil {
		return nil, err
	}
	// pg_control goes last: until it exists PostgreSQL refuses to start,
	// so an interrupted restore can never be started by mistake.
	if err := os.Rename(filepath.Join(opts.PGData, controlTemp), filepath.Join(opts.PGData, "global", "pg_control")); err != nil {
		return nil, fmt.Errorf("installing pg_control: %w", err)
	}
	if err := syncDir(filepath.Join(opts.PGData, "global")); err != nil {
		return nil, err
	}
	return &Result{Owner: opts.Owner, Backup: m, Tablespaces: tsMap, Files: len(m.Files), Bytes: written, Duration: time.Since(began), Delta: stats}, nil
}

// prepareDelta readies an existing data directory for a delta restore:
// pg_control aside, tablespace links and directories as the backup has
// them, what it does not have removed; and returns what to write.
func prepareDelta(ctx context.Context, opts Options, m *catalog.Manifest, st *DeltaStats) (map[string]string, map[catalog.ObjectRef][]target, error) {
	if err := moveControlAside(opts.PGData); err != nil {
		return nil, nil, err
	}
	known, err := readRestoredRecord(opts.PGData)
	if err != nil {
		return nil, nil, err
	}
	if opts.DeltaReadAll {
		known = nil
	}
	tsMap, err := deltaLayout(opts.PGData, m, opts.TablespaceMap, opts.Owner)
	if err != nil {
		return nil, nil, err
	}
	if st.Removed, err = removeExtra(opts.PGData, m, tsMap); err != nil {
		return nil, nil, err
	}
	// The directories and parents the backup has, as for any restore
	// (existing ones are left as they are).
	if err := makeDirs(opts.PGData, m, tsMap); err != nil {
		return nil, nil, err
	}
	targets, err := deltaTargets(ctx, opts.PGData, m, known, opts.Workers, st)
	if err != nil {
		return nil, nil, err
	}
	deltaObjects(m, targets, st)
	return tsMap, targets, nil
}

// controlTemp is where pg_control is written until the restore is done.
const controlTemp = "global/pg_control.pgkeep-restoring"

// destPath maps a manifest path to where it is written.
func destPath(path string) string {
	if path == "global/pg_control" {
		return controlTemp
	}
	return path
}

// checkEmpty refuses a target that is not empty (ErrNotEmpty).
func checkEmpty(dir string) error {
	st, err := Inspect(dir)
	if err != nil {
		return err
	}
	return refuseNonEmpty(dir, st, false)
}

// tablespaceLocations returns where the backup's tablespaces go.
func tablespaceLocations(m *catalog.Manifest, remap map[string]string) []string {
	var out []string
	for _, ts := range m.Tablespaces {
		loc := ts.Location
		if to, ok := remap[ts.OID]; ok {
			loc = to
		}
		out = append(out, loc)
	}
	return out
}

// mkdirAllOwned is os.MkdirAll(dir, 0700) that gives each directory it
// creates to owner (if not nil), so that a new data directory's parents
// do not stay root's and unreachable.
func mkdirAllOwned(dir string, owner *Owner) error {
	if owner == nil {
		return os.MkdirAll(dir, 0o700)
	}
	var missing []string
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, p)
		if p == "/" || p == "." {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		if err := os.Lchown(missing[i], owner.UID, owner.GID); err != nil {
			return fmt.Errorf("giving %s to %s: %w", missing[i], owner, err)
		}
	}
	return nil
}

// layout creates directories and tablespace links, and returns the
// tablespace locations used (OID -> path).
func layout(pgdata string, m *catalog.Manifest, remap map[string]string, owner *Owner) (map[string]string, error) {
	tsMap := map[string]string{}
	for _, ts := range m.Tablespaces {
		loc := ts.Location
		if to, ok := remap[ts.OID]; ok {
			loc = to
		}
		if !filepath.IsAbs(loc) {
			return nil, fmt.Errorf("tablespace %s location %q must be absolute", ts.OID, loc)
		}
		if err := checkEmpty(loc); err != nil {
			return nil, fmt.Errorf("tablespace %s: %w (remap it with --tablespace-map %s=/new/path)", ts.OID, err, ts.OID)
		}
		if err := mkdirAllOwned(loc, owner); err != nil {
			return nil, fmt.Errorf("creating tablespace %s at %s: %w", ts.OID, loc, err)
		}
		tsMap[ts.OID] = loc
	}
	if err := os.MkdirAll(filepath.Join(pgdata, "pg_tblspc"), 0o700); err != nil {
		return nil, err
	}
	for oid, loc := range tsMap {
		if err := os.Symlink(loc, filepath.Join(pgdata, "pg_tblspc", oid)); err != nil {
			return nil, fmt.Errorf("linking tablespace %s: %w", oid, err)
		}
	}
	return tsMap, makeDirs(pgdata, m, tsMap)
}

// makeDirs creates the directories of m, the data directory's first and
// then those below the tablespace links, and every file's parent.
func makeDirs(pgdata string, m *catalog.Manifest, tsMap map[string]string) error {
	dirs := append([]catalog.Dir(nil), m.Dirs...)
	sort.Slice(dirs, func(i, j int) bool { return dirs[i].Path < dirs[j].Path })
	for _, d := range dirs {
		if strings.HasPrefix(d.Path, "pg_tblspc/") {
			continue // below the links
		}
		if err := os.MkdirAll(filepath.Join(pgdata, filepath.FromSlash(d.Path)), 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", d.Path, err)
		}
	}
	// Directories below tablespace links, now that the links exist.
	for _, d := range dirs {
		if strings.HasPrefix(d.Path, "pg_tblspc/") && !isTablespaceLink(d.Path) {
			if err := os.MkdirAll(filepath.Join(pgdata, filepath.FromSlash(d.Path)), 0o700); err != nil {
				return err
			}
		}
	}
	// Every file's directory exists before any data arrives; the files
	// themselves are created by createFiles, alongside the fetch.
	parents := map[string]bool{}
	for _, f := range m.Files {
		if err := checkInside(pgdata, f.Path, tsMap); err != nil {
			return err
		}
		parent := filepath.Dir(filepath.Join(pgdata, filepath.FromSlash(destPath(f.Path))))
		if !parents[parent] {
			parents[parent] = true
			if err := os.MkdirAll(parent, 0o700); err != nil {
				return fmt.Errorf("creating %s: %w", parent, err)
			}
		}
	}
	return nil
}

// createFiles creates every file of the backup at its final size, so that
// holes (ranges WAL replay fills) and empty files are right. It runs while
// the data is fetched: creating a thousand files is a good part of a
// restore's kernel time, and a writer that gets to a file first creates it
// itself (fileCache.open); extending a file to its final size never
// touches data already written.
func createFiles(ctx context.Context, pgdata string, m *catalog.Manifest) error {
	for _, f := range m.Files {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		p := filepath.Join(pgdata, filepath.FromSlash(destPath(f.Path)))
		fh, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("creating %s: %w", p, err)
		}
		if st, serr := fh.Stat(); serr != nil || st.Size() != f.Size {
			err = fh.Truncate(f.Size)
		}
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("sizing %s: %w", p, err)
		}
	}
	return nil
}

func isTablespaceLink(p string) bool {
	parts := strings.Split(p, "/")
	return len(parts) == 2 && parts[0] == "pg_tblspc"
}

// checkInside makes sure a manifest path resolves inside the data
// directory or, under pg_tblspc/OID/, inside that tablespace.
func checkInside(pgdata, p string, tsMap map[string]string) error {
	if err := catalog.SafePath(p); err != nil {
		return err
	}
	parts := strings.SplitN(p, "/", 3)
	if parts[0] == "pg_tblspc" {
		if len(parts) < 3 {
			return fmt.Errorf("manifest file %q would replace a tablespace link", p)
		}
		if _, ok := tsMap[parts[1]]; !ok {
			return fmt.Errorf("manifest file %q is in tablespace %s, which the backup does not declare", p, parts[1])
		}
	}
	return nil
}

// fetchAndCreate runs createFiles and fetchAll side by side; the first
// error stops both.
func fetchAndCreate(ctx context.Context, r *repo.Repo, pgdata string, m *catalog.Manifest, targets map[catalog.ObjectRef][]target, workers int, rep progress.Reporter) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return createFiles(gctx, pgdata, m) })
	g.Go(func() error { return fetchAll(gctx, r, pgdata, m, targets, workers, rep) })
	return g.Wait()
}

// target is a piece to write where its file is.
type target struct {
	file  *catalog.File
	piece catalog.Piece
	// write, when not nil, says which of the piece's chunks to write (a
	// delta restore writes only those that differ); the others are read
	// and verified only.
	write []bool
}

// size is what writing t writes.
func (t target) size() int64 {
	if t.write == nil {
		return t.piece.Size
	}
	var n int64
	for ci, w := range t.write {
		if w {
			n += min(catalog.ChunkSize, t.piece.Size-int64(ci)*catalog.ChunkSize)
		}
	}
	return n
}

// allTargets returns every piece of m, by the object that holds it: what
// a restore into an empty directory writes.
func allTargets(m *catalog.Manifest) map[catalog.ObjectRef][]target {
	out := map[catalog.ObjectRef][]target{}
	for i := range m.Files {
		f := &m.Files[i]
		for _, p := range f.Pieces {
			ref := catalog.ObjectRef{Backup: p.ObjectOf(m.ID), Seq: p.Object}
			out[ref] = append(out[ref], target{file: f, piece: p})
		}
	}
	return out
}

// fetchAll downloads the data objects that hold targets, of this backup
// and of the earlier ones an incremental backup refers to, and writes
// their pieces.
func fetchAll(ctx context.Context, r *repo.Repo, pgdata string, m *catalog.Manifest, targets map[catalog.ObjectRef][]target, workers int, rep progress.Reporter) error {
	var objects []catalog.Object
	for _, o := range m.Objects {
		if o.Backup == "" {
			o.Backup = m.ID
		}
		if len(targets[catalog.ObjectRef{Backup: o.Backup, Seq: o.Seq}]) > 0 {
			objects = append(objects, o)
		}
	}
	// Largest first keeps all workers busy to the end.
	sort.SliceStable(objects, func(i, j int) bool { return objects[i].Size > objects[j].Size })

	bufs := make(chan []byte, workers)
	for range workers {
		bufs <- make([]byte, 256<<10)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for _, o := range objects {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			buf := <-bufs
			defer func() { bufs <- buf }()
			files := &fileCache{root: pgdata}
			defer files.closeAll()
			ts := targets[catalog.ObjectRef{Backup: o.Backup, Seq: o.Seq}]
			sort.Slice(ts, func(i, j int) bool { return ts[i].piece.Offset < ts[j].piece.Offset })
			key := repo.Data(o.Backup, o.Seq)
			var got envelope.Sum
			err := r.ReadObject(gctx, key, func(rd io.Reader) error {
				var pos int64
				for _, t := range ts {
					if t.piece.Offset < pos {
						return fmt.Errorf("%w: pieces of %s overlap in the manifest", envelope.ErrCorrupt, key)
					}
					if t.piece.Offset > pos {
						if _, err := io.CopyN(io.Discard, rd, t.piece.Offset-pos); err != nil {
							return err
						}
						pos = t.piece.Offset
					}
					if err := writePiece(files, t, rd, buf, rep); err != nil {
						return err
					}
					pos += t.piece.Size
				}
				return nil
			}, func(s envelope.Sum) { got = s })
			if err == nil && got.String() != o.XXH64 {
				err = fmt.Errorf("%w: %s has checksum %s, the manifest says %s", envelope.ErrCorrupt, key, got, o.XXH64)
			}
			if err != nil {
				return fmt.Errorf("restoring %s: %w", key, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// writePiece copies one piece from rd into its file (the chunks t.write
// selects) and verifies it.
func writePiece(files *fileCache, t target, rd io.Reader, buf []byte, rep progress.Reporter) error {
	f, p := t.file, t.piece
	fh, err := files.open(destPath(f.Path))
	if err != nil {
		return err
	}
	check := catalog.NewPieceCheck(p)
	var done int64 // bytes of the piece read
	for done < p.Size {
		// Reads stop at chunk boundaries, so that a read is written
		// whole or not at all.
		want := min(int64(len(buf)), p.Size-done)
		if t.write != nil {
			want = min(want, catalog.ChunkSize-done%catalog.ChunkSize)
		}
		n, err := rd.Read(buf[:want])
		if n > 0 {
			check.Write(buf[:n])
			if t.write == nil || t.write[done/catalog.ChunkSize] {
				off := p.FileOffset + done
				if _, werr := fh.WriteAt(buf[:n], off); werr != nil {
					return fmt.Errorf("writing %s: %w", fh.Name(), werr)
				}
				startWriteback(fh, off, int64(n))
				rep.Advance(int64(n))
			}
			done += int64(n)
		}
		if err == io.EOF && done < p.Size {
			// The object's verified content ended early: the manifest and
			// the object disagree.
			return fmt.Errorf("%w: object ended inside %s", envelope.ErrCorrupt, f.Path)
		}
		if err != nil && err != io.EOF {
			return err // the reader's own error: a transport failure is retried
		}
	}
	if err := check.Verify(); err != nil {
		return fmt.Errorf("%s bytes %d..%d: %w", f.Path, p.FileOffset, p.FileOffset+p.Size, err)
	}
	return nil
}

// writebackWindow is the span of a file whose writeback a restore starts
// as soon as a write reaches its end.
const writebackWindow = 8 << 20

// startWriteback starts writing back the window of fh that a write of n
// bytes at off completed, so that the final fsync finds most data on its
// way to disk already (on a slow disk, writing back overlaps decoding).
// Windows of 8 MiB, not every write: starting writeback is work in the
// calling thread, and per 256 KiB write it cost 6 to 8% of a restore's
// wall time on these machines (small submissions); files under 8 MiB are
// left to the fsync. Errors here only lose the head start; the fsync
// reports real failures.
func startWriteback(fh *os.File, off, n int64) {
	end := off + n
	if end/writebackWindow == off/writebackWindow {
		return
	}
	w := end / writebackWindow * writebackWindow
	unix.SyncFileRange(int(fh.Fd()), w-writebackWindow, writebackWindow, unix.SYNC_FILE_RANGE_WRITE)
}

// fileCache keeps the files one object writes to open.
type fileCache struct {
	root  string
	files map[string]*os.File
}

func (c *fileCache) open(rel string) (*os.File, error) {
	if fh, ok := c.files[rel]; ok {
		return fh, nil
	}
	if c.files == nil {
		c.files = map[string]*os.File{}
	}
	// createFiles may not have got to it yet.
	fh, err := os.OpenFile(filepath.Join(c.root, filepath.FromSlash(rel)), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", rel, err)
	}
	c.files[rel] = fh
	return fh, nil
}

func (c *fileCache) closeAll() {
	for k, fh := range c.files {
		fh.Close()
		delete(c.files, k)
	}
}

// writeRecovery writes backup_label, tablespace_map, the recovery settings
// and the signal file.
func writeRecovery(pgdata string, m *catalog.Manifest, opts Options, tsMap map[string]string) error {
	write := func(name, content string) error {
		if err := os.WriteFile(filepath.Join(pgdata, name), []byte(content), 0o600); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
		return nil
	}
	if err := write("backup_label", m.BackupLabel); err != nil {
		return err
	}
	if len(m.Tablespaces) > 0 {
		oids := make([]string, 0, len(tsMap))
		for oid := range tsMap {
			oids = append(oids, oid)
		}
		sort.Strings(oids)
		entries := make([]pgcontrol.TablespaceMapEntry, 0, len(oids))
		for _, oid := range oids {
			entries = append(entries, pgcontrol.TablespaceMapEntry{OID: oid, Path: tsMap[oid]})
		}
		if err := write("tablespace_map", string(pgcontrol.FormatTablespaceMap(entries))); err != nil {
			return err
		}
	}
	conf := recoveryConf(m, opts)
	f, err := os.OpenFile(filepath.Join(pgdata, "postgresql.auto.conf"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("opening postgresql.auto.conf: %w", err)
	}
	_, err = f.WriteString(conf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing postgresql.auto.conf: %w", err)
	}
	signal := "recovery.signal"
	if opts.Standby {
		signal = "standby.signal"
	}
	return write(signal, "")
}

// recoveryConf renders the recovery settings appended to
// postgresql.auto.conf. The same for every supported major: PostgreSQL 12
// made them server settings (no recovery.conf; recovery.signal and
// standby.signal instead) and made recovery_target_timeline default to
// latest, and every setting written here exists under the same name from
// 12 to 18 (the "Archive Recovery" and "Recovery Target" sections of each
// release's runtime-config-wal documentation).
func recoveryConf(m *catalog.Manifest, opts Options) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\n# Recovery settings written by pgkeep restore of backup %s at %s.\n", m.ID, time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "# Remove them once the cluster is promoted.\n")
	set := func(k, v string) { fmt.Fprintf(&b, "%s = %s\n", k, quoteConf(v)) }
	set("restore_command", opts.RestoreCommand)
	if opts.RecoveryEndCommand != "" {
		set("recovery_end_command", opts.RecoveryEndCommand)
	}
	t := opts.Target
	switch {
	case t.Time != nil:
		set("recovery_target_time", t.Time.UTC().Format("2006-01-02 15:04:05.999999")+"+00")
	case t.LSN != nil:
		set("recovery_target_lsn", t.LSN.String())
	case t.XID != "":
		set("recovery_target_xid", t.XID)
	case t.Name != "":
		set("recovery_target_name", t.Name)
	case t.Immediate:
		set("recovery_target", "immediate")
	}
	if t.IsSet() {
		action := t.Action
		if action == "" {
			action = "promote"
		}
		set("recovery_target_action", action)
	}
	timeline := t.Timeline
	if timeline == "" {
		timeline = "latest"
	}
	set("recovery_target_timeline", timeline)
	if opts.ArchiveOff {
		set("archive_mode", "off")
	}
	return b.String()
}

// quoteConf quotes a value for postgresql.conf.
func quoteConf(v string) string {
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

// syncTree flushes every restored file and directory to disk, in two
// passes over them, many at a time. The first gives each to the owner (if
// any; symlinks too, with lchown) and starts the writeback of all its data
// (sync_file_range, as PostgreSQL's own fsync of a data directory does
// first): the writes of every file then go to the device together, instead
// of one fsync's worth after another. The second fsyncs each, which now
// mostly waits for writes already under way and for the journal. During
// the download only 8 MiB windows of large files were started, so the
// files under 8 MiB and the tails were all still dirty here: the first
// pass took restores of 545 MiB onto a fresh ext4 from 0.84 to 0.78 s
// (medians of interleaved runs; syncfs would take 0.75, but waits for
// everything else that is dirty there too). Making each file durable as
// soon as its last piece was written, during the download, was no faster
// there: the fsyncs' journal commits slowed the writers as much.
// Unlike syncfs(2), it never waits for other programs' dirty data on the
// same file system, which on a busy host can be gigabytes.
func syncTree(pgdata string, tsMap map[string]string, owner *Owner) error {
	roots := []string{pgdata}
	for _, loc := range tsMap {
		roots = append(roots, loc)
	}
	type entry struct {
		path    string
		regular bool
	}
	var paths []entry
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type()&fs.ModeSymlink == 0 {
				paths = append(paths, entry{p, d.Type().IsRegular()})
			} else if owner != nil {
				if err := os.Lchown(p, owner.UID, owner.GID); err != nil {
					return fmt.Errorf("giving %s to %s: %w", p, owner, err)
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("syncing restored files: %w", err)
		}
	}
	// Each pass opens every path again: holding a thousand files open
	// between the passes could exceed the open-file limit.
	for _, pass := range []func(*os.File, bool) error{
		func(fh *os.File, regular bool) error { return startSync(fh, regular, owner) },
		func(fh *os.File, _ bool) error { return fh.Sync() },
	} {
		var g errgroup.Group
		g.SetLimit(syncParallel)
		for _, e := range paths {
			g.Go(func() error {
				fh, err := os.Open(e.path)
				if err != nil {
					return fmt.Errorf("syncing %s: %w", e.path, err)
				}
				defer fh.Close()
				if err := pass(fh, e.regular); err != nil {
					return fmt.Errorf("syncing %s: %w", e.path, err)
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
	}
	return nil
}

// syncParallel is how many files each pass of syncTree works on at once:
// the device and the journal batch concurrent fsyncs.
const syncParallel = 16

// startSync gives fh to owner (if not nil) and, for a regular file,
// starts the writeback of all its data. Where sync_file_range is refused
// (not every file system has it), the fsync alone does the work.
func startSync(fh *os.File, regular bool, owner *Owner) error {
	if owner != nil {
		if err := fh.Chown(owner.UID, owner.GID); err != nil {
			return fmt.Errorf("giving it to %s: %w", owner, err)
		}
	}
	if regular {
		unix.SyncFileRange(int(fh.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	}
	return nil
}

func syncDir(p string) error {
	fh, err := os.Open(p)
	if err != nil {
		return err
	}
	defer fh.Close()
	if err := fh.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", p, err)
	}
	return nil
}

// ParseTablespaceMap parses --tablespace-map OID=PATH values.
func ParseTablespaceMap(values []string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range values {
		oid, path, ok := strings.Cut(v, "=")
		if _, err := strconv.ParseUint(oid, 10, 32); !ok || err != nil || !filepath.IsAbs(path) {
			return nil, fmt.Errorf("--tablespace-map %q: want OID=/absolute/path", v)
		}
		out[oid] = filepath.Clean(path)
	}
	return out, nil
}
