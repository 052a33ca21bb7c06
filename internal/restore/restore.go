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
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/pgversion"
	"github.com/pgkeep/pgkeep/internal/progress"
	"github.com/pgkeep/pgkeep/internal/repo"
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
	Progress   progress.Reporter
}

// ErrNotEmpty means the target directory already holds files.
var ErrNotEmpty = errors.New("target directory is not empty")

// Result describes a restore.
type Result struct {
	Backup      *catalog.Manifest
	Tablespaces map[string]string // OID -> location restored to
	Files       int
	Bytes       int64
	Duration    time.Duration
}

// Run restores into opts.PGData, which must be empty or absent.
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
	if err := checkEmpty(opts.PGData); err != nil {
		return nil, err
	}
	cat, err := catalog.Load(ctx, r)
	if err != nil {
		return nil, err
	}
	id := cat.Identity
	m, chain, err := ChooseBackup(cat.Backups, cat.WAL, cat.Histories, opts.BackupID, opts.Target)
	if err != nil {
		return nil, err
	}
	if err := pgversion.Check(m.PGMajor, "backup "+m.ID); err != nil {
		return nil, fmt.Errorf("refusing to restore: %w", err)
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
	rep.Logf("restoring backup %s (%s, LSN %s) into %s", m.ID, progress.Bytes(m.Size), m.StopLSN, opts.PGData)

	if err := os.MkdirAll(opts.PGData, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", opts.PGData, err)
	}
	if err := os.Chmod(opts.PGData, 0o700); err != nil {
		return nil, err
	}
	tsMap, err := layout(opts.PGData, m, opts.TablespaceMap)
	if err != nil {
		return nil, err
	}
	rep.Begin("restore "+m.ID, m.Size)
	err = fetchAndCreate(ctx, r, opts.PGData, m, opts.Workers, rep)
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
	if err := syncTree(opts.PGData, tsMap); err != nil {
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
	return &Result{Backup: m, Tablespaces: tsMap, Files: len(m.Files), Bytes: m.Size, Duration: time.Since(began)}, nil
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

func checkEmpty(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking target directory: %w", err)
	}
	if len(entries) > 0 {
		if _, err := os.Stat(filepath.Join(dir, "postmaster.pid")); err == nil {
			return fmt.Errorf("%w: %s holds postmaster.pid, so a PostgreSQL server may be running there; stop it and restore into an empty directory", ErrNotEmpty, dir)
		}
		return fmt.Errorf("%w: %s has %d entries (for example %s); restore only into an empty or new directory", ErrNotEmpty, dir, len(entries), entries[0].Name())
	}
	return nil
}

// layout creates directories and tablespace links, and returns the
// tablespace locations used (OID -> path).
func layout(pgdata string, m *catalog.Manifest, remap map[string]string) (map[string]string, error) {
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
		if err := os.MkdirAll(loc, 0o700); err != nil {
			return nil, fmt.Errorf("creating tablespace %s at %s: %w", ts.OID, loc, err)
		}
		tsMap[ts.OID] = loc
	}
	dirs := append([]catalog.Dir(nil), m.Dirs...)
	sort.Slice(dirs, func(i, j int) bool { return dirs[i].Path < dirs[j].Path })
	for _, d := range dirs {
		p := filepath.Join(pgdata, filepath.FromSlash(d.Path))
		if strings.HasPrefix(d.Path, "pg_tblspc/") {
			continue // below the links, created once they exist
		}
		if err := os.MkdirAll(p, 0o700); err != nil {
			return nil, fmt.Errorf("creating %s: %w", p, err)
		}
	}
	if err := os.MkdirAll(filepath.Join(pgdata, "pg_tblspc"), 0o700); err != nil {
		return nil, err
	}
	for oid, loc := range tsMap {
		if err := os.Symlink(loc, filepath.Join(pgdata, "pg_tblspc", oid)); err != nil {
			return nil, fmt.Errorf("linking tablespace %s: %w", oid, err)
		}
	}
	// Directories below tablespace links, now that the links exist.
	for _, d := range dirs {
		if strings.HasPrefix(d.Path, "pg_tblspc/") && !isTablespaceLink(d.Path) {
			if err := os.MkdirAll(filepath.Join(pgdata, filepath.FromSlash(d.Path)), 0o700); err != nil {
				return nil, err
			}
		}
	}
	// Every file's directory exists before any data arrives; the files
	// themselves are created by createFiles, alongside the fetch.
	parents := map[string]bool{}
	for _, f := range m.Files {
		if err := checkInside(pgdata, f.Path, tsMap); err != nil {
			return nil, err
		}
		parent := filepath.Dir(filepath.Join(pgdata, filepath.FromSlash(destPath(f.Path))))
		if !parents[parent] {
			parents[parent] = true
			if err := os.MkdirAll(parent, 0o700); err != nil {
				return nil, fmt.Errorf("creating %s: %w", parent, err)
			}
		}
	}
	return tsMap, nil
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
func fetchAndCreate(ctx context.Context, r *repo.Repo, pgdata string, m *catalog.Manifest, workers int, rep progress.Reporter) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	created := make(chan error, 1)
	go func() {
		err := createFiles(ctx, pgdata, m)
		if err != nil {
			cancel(err)
		}
		created <- err
	}()
	err := fetchAll(ctx, r, pgdata, m, workers, rep)
	if err != nil {
		cancel(err)
	}
	cerr := <-created
	if err != nil {
		return err
	}
	return cerr
}

// fetchAll downloads every data object and writes its pieces.
func fetchAll(ctx context.Context, r *repo.Repo, pgdata string, m *catalog.Manifest, workers int, rep progress.Reporter) error {
	type target struct {
		file  *catalog.File
		piece catalog.Piece
	}
	byObject := map[int][]target{}
	for i := range m.Files {
		f := &m.Files[i]
		for _, p := range f.Pieces {
			byObject[p.Object] = append(byObject[p.Object], target{f, p})
		}
	}
	objects := append([]catalog.Object(nil), m.Objects...)
	// Largest first keeps all workers busy to the end.
	sort.Slice(objects, func(i, j int) bool { return objects[i].Size > objects[j].Size })

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan catalog.Object)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			files := &fileCache{root: pgdata}
			defer files.closeAll()
			for o := range next {
				ts := byObject[o.Seq]
				sort.Slice(ts, func(i, j int) bool { return ts[i].piece.Offset < ts[j].piece.Offset })
				key := repo.Data(m.ID, o.Seq)
				var got envelope.Sum
				err := r.ReadObject(ctx, key, func(rd io.Reader) error {
					var pos int64
					for _, t := range ts {
						if t.piece.Offset > pos {
							if _, err := io.CopyN(io.Discard, rd, t.piece.Offset-pos); err != nil {
								return err
							}
							pos = t.piece.Offset
						}
						if err := writePiece(files, t.file, t.piece, rd, buf, rep); err != nil {
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
					cancel(fmt.Errorf("restoring %s: %w", key, err))
					return
				}
				files.closeAll()
			}
		}()
	}
feed:
	for _, o := range objects {
		select {
		case next <- o:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

// writePiece copies one piece from rd into its file and verifies it.
func writePiece(files *fileCache, f *catalog.File, p catalog.Piece, rd io.Reader, buf []byte, rep progress.Reporter) error {
	fh, err := files.open(destPath(f.Path))
	if err != nil {
		return err
	}
	h := envelope.NewHasher()
	off := p.FileOffset
	left := p.Size
	for left > 0 {
		n, err := rd.Read(buf[:min(int64(len(buf)), left)])
		if n > 0 {
			h.Write(buf[:n])
			if _, werr := fh.WriteAt(buf[:n], off); werr != nil {
				return fmt.Errorf("writing %s: %w", fh.Name(), werr)
			}
			// Start writing back now, so that the final fsync finds the
			// data on its way to disk (errors here only lose the head
			// start; the fsync reports real failures).
			unix.SyncFileRange(int(fh.Fd()), off, int64(n), unix.SYNC_FILE_RANGE_WRITE)
			off += int64(n)
			left -= int64(n)
			rep.Advance(int64(n))
		}
		if err == io.EOF && left > 0 {
			// The object's verified content ended early: the manifest and
			// the object disagree.
			return fmt.Errorf("%w: object ended inside %s", envelope.ErrCorrupt, f.Path)
		}
		if err != nil && err != io.EOF {
			return err // the reader's own error: a transport failure is retried
		}
	}
	if got := h.Sum().String(); got != p.XXH64 {
		return fmt.Errorf("%w: %s bytes %d..%d have checksum %s, the manifest says %s", envelope.ErrCorrupt, f.Path, p.FileOffset, p.FileOffset+p.Size, got, p.XXH64)
	}
	return nil
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
		var b strings.Builder
		oids := make([]string, 0, len(tsMap))
		for oid := range tsMap {
			oids = append(oids, oid)
		}
		sort.Strings(oids)
		for _, oid := range oids {
			fmt.Fprintf(&b, "%s %s\n", oid, escapeTablespacePath(tsMap[oid]))
		}
		if err := write("tablespace_map", b.String()); err != nil {
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

// escapeTablespacePath escapes a path for tablespace_map, which treats
// backslash as an escape character (PostgreSQL 15+ reads "\\" and escaped
// newlines; earlier versions read the rest of the line verbatim).
func escapeTablespacePath(p string) string {
	return strings.NewReplacer("\\", "\\\\", "\n", "\\\n", "\r", "\\\r").Replace(p)
}

// syncTree flushes every restored file and directory to disk: an fsync
// of each, many at a time. Writeback already started while the data was
// written (sync_file_range), so most fsyncs only wait for the journal.
// Unlike syncfs(2), it never waits for other programs' dirty data on the
// same file system, which on a busy host can be gigabytes.
func syncTree(pgdata string, tsMap map[string]string) error {
	roots := []string{pgdata}
	for _, loc := range tsMap {
		roots = append(roots, loc)
	}
	paths := make(chan string, 256)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for range syncParallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range paths {
				if err := syncPath(p); err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}
		}()
	}
	var walkErr error
	for _, root := range roots {
		walkErr = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type()&fs.ModeSymlink == 0 {
				paths <- p
			}
			return nil
		})
		if walkErr != nil {
			break
		}
	}
	close(paths)
	wg.Wait()
	if walkErr != nil {
		return fmt.Errorf("syncing restored files: %w", walkErr)
	}
	select {
	case err := <-errc:
		return err
	default:
	}
	return nil
}

// syncParallel is how many fsyncs run at once: the device and the
// journal batch concurrent ones.
const syncParallel = 16

func syncPath(p string) error {
	fh, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("syncing %s: %w", p, err)
	}
	defer fh.Close()
	if err := fh.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", p, err)
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
