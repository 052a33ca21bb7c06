package backup

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/walsum"
)

// srcFile is a file to back up.
type srcFile struct {
	rel    string // path in the manifest
	abs    string // path to read
	size   int64
	mode   fs.FileMode
	mtime  int64
	relSeg uint32         // relation segment number, if isRel
	fork   walsum.RelFork // the relation fork, if isRel
	isRel  bool           // a relation file: its pages carry checksums, its pieces chunk checksums
}

// tree is what a walk of the data directory found.
type tree struct {
	files       []srcFile
	dirs        []catalog.Dir
	tablespaces []catalog.Tablespace
}

// walkPGData lists what a backup of pgdata contains, following the
// tablespace links in pg_tblspc.
func walkPGData(pgdata string) (*tree, error) {
	t := &tree{}
	if err := walkDir(t, pgdata, ""); err != nil {
		return nil, err
	}
	tsDir := filepath.Join(pgdata, "pg_tblspc")
	entries, err := os.ReadDir(tsDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading %s: %w", tsDir, err)
	}
	for _, e := range entries {
		if _, err := strconv.ParseUint(e.Name(), 10, 32); err != nil {
			continue
		}
		link := filepath.Join(tsDir, e.Name())
		target, err := os.Readlink(link)
		if err != nil {
			return nil, fmt.Errorf("tablespace %s: %w (pg_tblspc entries must be symbolic links)", e.Name(), err)
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(tsDir, target)
		}
		t.tablespaces = append(t.tablespaces, catalog.Tablespace{OID: e.Name(), Location: target})
		if err := walkDir(t, target, "pg_tblspc/"+e.Name()); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// walkDir adds the tree at root, whose manifest path is prefix ("" for the
// data directory itself).
func walkDir(t *tree, root, prefix string) error {
	var walk func(abs, rel string) error
	walk = func(abs, rel string) error {
		entries, err := os.ReadDir(abs)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && rel != prefix {
				return nil // dropped while we walked
			}
			return fmt.Errorf("reading directory %s: %w", abs, err)
		}
		var skipUnlogged map[string]bool
		if isRelationDir(rel) {
			names := make([]string, len(entries))
			for i, e := range entries {
				names[i] = e.Name()
			}
			skipUnlogged = unloggedSkip(names)
		}
		for _, e := range entries {
			childAbs := filepath.Join(abs, e.Name())
			childRel := e.Name()
			if rel != "" {
				childRel = rel + "/" + e.Name()
			}
			if prefix == "" && childRel == "pg_tblspc" {
				// Walked separately, through its links.
				t.dirs = append(t.dirs, catalog.Dir{Path: childRel, Mode: 0o700})
				continue
			}
			info, err := os.Stat(childAbs) // follows links (pg_wal may be one)
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					continue // removed while we walked: WAL replay covers it
				}
				return fmt.Errorf("stat %s: %w", childAbs, err)
			}
			switch {
			case info.IsDir():
				switch classify(childRel, true) {
				case skip:
					continue
				case skipContents:
					t.dirs = append(t.dirs, catalog.Dir{Path: childRel, Mode: uint32(info.Mode().Perm())})
					if childRel == "pg_wal" {
						t.dirs = append(t.dirs, catalog.Dir{Path: "pg_wal/archive_status", Mode: uint32(info.Mode().Perm())})
					}
					continue
				}
				t.dirs = append(t.dirs, catalog.Dir{Path: childRel, Mode: uint32(info.Mode().Perm())})
				if err := walk(childAbs, childRel); err != nil {
					return err
				}
			case info.Mode().IsRegular():
				if classify(childRel, false) == skip || skipUnlogged[e.Name()] {
					continue
				}
				f := srcFile{rel: childRel, abs: childAbs, size: info.Size(), mode: info.Mode().Perm(), mtime: info.ModTime().Unix()}
				f.fork, f.relSeg, f.isRel = relationOf(childRel)
				t.files = append(t.files, f)
			default:
				// Sockets, devices and the like have no place in a backup.
			}
		}
		return nil
	}
	return walk(root, prefix)
}

// sortLargestFirst orders files by size, largest first, then by path.
func sortLargestFirst(files []srcFile) {
	sort.Slice(files, func(i, j int) bool {
		if files[i].size != files[j].size {
			return files[i].size > files[j].size
		}
		return files[i].rel < files[j].rel
	})
}
