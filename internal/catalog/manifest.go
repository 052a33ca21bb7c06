// Package catalog knows what a repository holds: the backups (their ids,
// the manifest that is each one's completion record, and its schema),
// which backups are complete, in progress or garbage, and the archived WAL
// (per timeline, with gaps, and the timeline histories recovery follows).
// Load reads it all in one listing; object keys are package repo's.
//
// A backup is listed as restorable if and only if its manifest exists
// (invariant 2). The objects of an id without one belong to a backup in
// progress or to one that was interrupted.
package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// ManifestFormat is the manifest schema version this pgkeep writes and the
// newest it reads. Format 1 held every field at the top level; format 2
// splits the manifest into its Summary (readable without the key) and its
// Contents (sealed, in an encrypted repository).
const ManifestFormat = 2

// IDLayout formats backup ids: UTC time, so ids sort by time.
const IDLayout = "20060102T150405Z"

// NewID returns the id for a backup starting at t.
func NewID(t time.Time) string { return t.UTC().Format(IDLayout) }

// ValidID reports whether id has the form NewID produces.
func ValidID(id string) bool {
	_, err := time.Parse(IDLayout, id)
	return err == nil
}

// Started is the marker written when a backup begins. It is stored in the
// clear, also in an encrypted repository (retention reads it without the
// key), so it holds nothing but the backup's position.
type Started struct {
	ID        string    `json:"id"`
	StartTime time.Time `json:"start_time"`
	StartLSN  string    `json:"start_lsn"`
	Timeline  uint32    `json:"timeline"`
}

// Piece is a run of bytes of one file stored inside a data object.
type Piece struct {
	Object     int    `json:"object"`      // data object sequence number
	Offset     int64  `json:"offset"`      // offset in the object's content
	FileOffset int64  `json:"file_offset"` // offset in the file
	Size       int64  `json:"size"`
	XXH64      string `json:"xxh64"` // checksum of these bytes, 16 hex digits
}

// File is a regular file of the backup. Path is relative to the data
// directory, with "/" separators; files of tablespaces live under
// pg_tblspc/OID/.
type File struct {
	Path   string  `json:"path"`
	Size   int64   `json:"size"`
	Mode   uint32  `json:"mode"` // permission bits
	MTime  int64   `json:"mtime"`
	Pieces []Piece `json:"pieces,omitempty"`
}

// Dir is a directory to create (mode bits only).
type Dir struct {
	Path string `json:"path"`
	Mode uint32 `json:"mode"`
}

// Tablespace is a user tablespace: pg_tblspc/OID links to Location.
type Tablespace struct {
	OID      string `json:"oid"`
	Location string `json:"location"`
}

// Object describes one data object.
type Object struct {
	Seq    int    `json:"seq"`
	Size   int64  `json:"size"`   // content bytes
	Stored int64  `json:"stored"` // bytes in the repository
	XXH64  string `json:"xxh64"`
}

// Manifest is the completion record of a backup (backups/ID/backup.json).
//
// It has two parts. The Summary is what list, status, expire and a writer
// need: times, LSNs, sizes, the data objects. It is readable without the
// encryption key. The Contents say what the backup holds (file and
// directory names, the backup label, tablespaces); in an encrypted
// repository they are sealed (encrypted to the repository key) inside the
// manifest, and a reader without the key gets the Summary alone, with
// Sealed set.
type Manifest struct {
	Summary
	Contents
	// Sealed means the Contents are encrypted and this process has no
	// key: only the Summary is filled in.
	Sealed bool `json:"-"`
}

// Summary is the part of a manifest anyone with access to the repository
// may read.
type Summary struct {
	Format           int       `json:"format"`
	ID               string    `json:"id"`
	SystemIdentifier string    `json:"system_identifier"`
	PGVersionNum     int       `json:"pg_version_num"`
	PGMajor          int       `json:"pg_major"`
	WalSegSize       uint64    `json:"wal_segment_size"`
	Timeline         uint32    `json:"timeline"`
	StartLSN         string    `json:"start_lsn"`
	StopLSN          string    `json:"stop_lsn"`
	StartWAL         string    `json:"start_wal"`
	StopWAL          string    `json:"stop_wal"`
	StartTime        time.Time `json:"start_time"`
	StopTime         time.Time `json:"stop_time"`
	DataChecksums    bool      `json:"data_checksums"`
	Compression      string    `json:"compression"`
	Size             int64     `json:"size"`   // bytes of the files
	Stored           int64     `json:"stored"` // bytes of the data objects in the repository
	FileCount        int       `json:"file_count"`
	Objects          []Object  `json:"objects"`
}

// Contents is the part of a manifest that says what the backup holds.
type Contents struct {
	Label         string       `json:"label"`
	BackupLabel   string       `json:"backup_label"`
	TablespaceMap string       `json:"tablespace_map,omitempty"`
	Host          string       `json:"host,omitempty"`
	Tablespaces   []Tablespace `json:"tablespaces,omitempty"`
	Dirs          []Dir        `json:"dirs"`
	Files         []File       `json:"files"`
}

// ErrSealed means an operation needs a backup's Contents, which are
// encrypted, and no identity was given.
var ErrSealed = errors.New("the backup's contents are encrypted: give the identity file with --age-identity or PGKEEP_AGE_IDENTITY")

// NeedContents returns an error wrapping ErrSealed when the Contents are
// not available.
func (m *Manifest) NeedContents() error {
	if m.Sealed {
		return fmt.Errorf("backup %s: %w", m.ID, ErrSealed)
	}
	return nil
}

// Duration is how long the backup took.
func (m *Manifest) Duration() time.Duration { return m.StopTime.Sub(m.StartTime) }

// Start returns the start LSN.
func (m *Manifest) Start() wal.LSN { l, _ := wal.ParseLSN(m.StartLSN); return l }

// Stop returns the stop LSN.
func (m *Manifest) Stop() wal.LSN { l, _ := wal.ParseLSN(m.StopLSN); return l }

// Validate checks the manifest's internal consistency and that every path
// stays inside the data directory. Restore refuses a manifest that fails.
func (m *Manifest) Validate() error {
	if m.Format > ManifestFormat {
		return fmt.Errorf("backup %s has manifest format %d, newer than this pgkeep understands (%d); upgrade pgkeep", m.ID, m.Format, ManifestFormat)
	}
	if m.Format < 1 || !ValidID(m.ID) {
		return fmt.Errorf("%w: manifest has no format or a bad id %q", envelope.ErrCorrupt, m.ID)
	}
	for _, s := range []string{m.StartLSN, m.StopLSN} {
		if _, err := wal.ParseLSN(s); err != nil {
			return fmt.Errorf("%w: manifest of %s has a bad LSN %q", envelope.ErrCorrupt, m.ID, s)
		}
	}
	objects := map[int]Object{}
	for _, o := range m.Objects {
		objects[o.Seq] = o
	}
	if m.Sealed {
		return nil
	}
	for _, d := range m.Dirs {
		if err := SafePath(d.Path); err != nil {
			return fmt.Errorf("manifest of %s: directory %w", m.ID, err)
		}
	}
	for _, ts := range m.Tablespaces {
		if _, err := strconv.ParseUint(ts.OID, 10, 32); err != nil || !strings.HasPrefix(ts.Location, "/") {
			return fmt.Errorf("manifest of %s: bad tablespace %q -> %q", m.ID, ts.OID, ts.Location)
		}
	}
	for _, f := range m.Files {
		if err := SafePath(f.Path); err != nil {
			return fmt.Errorf("manifest of %s: file %w", m.ID, err)
		}
		var end int64
		for _, p := range f.Pieces {
			o, ok := objects[p.Object]
			if !ok || p.Offset < 0 || p.Size < 0 || p.FileOffset < 0 || p.Offset+p.Size > o.Size {
				return fmt.Errorf("%w: manifest of %s: piece of %s points outside object %d", envelope.ErrCorrupt, m.ID, f.Path, p.Object)
			}
			end = max(end, p.FileOffset+p.Size)
		}
		if end != f.Size {
			return fmt.Errorf("%w: manifest of %s: pieces of %s end at %d bytes, not %d", envelope.ErrCorrupt, m.ID, f.Path, end, f.Size)
		}
	}
	return nil
}

// SafePath refuses paths that could escape the directory they are joined
// to: absolute paths, "..", empty or "." elements, and backslashes or NULs.
func SafePath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\\\x00") {
		return fmt.Errorf("%q is not a safe relative path", p)
	}
	if path.Clean(p) != p {
		return fmt.Errorf("%q is not a clean relative path", p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." || el == "." || el == "" {
			return fmt.Errorf("%q leaves the data directory", p)
		}
	}
	return nil
}

// storedManifest is the JSON of a format 2 manifest: the Summary at the
// top level, and the Contents either inline (a plaintext repository) or
// sealed: an envelope, encrypted to the repository key, of sealedContents.
type storedManifest struct {
	Summary
	Contents *Contents `json:"contents,omitempty"`
	Sealed   []byte    `json:"sealed,omitempty"`
}

// sealedContents binds sealed Contents to their backup, so that sealed
// bytes moved from another manifest are refused.
type sealedContents struct {
	ID string `json:"id"`
	Contents
}

// EncodeManifest renders m as the JSON stored in backup.json, sealing the
// Contents with ci (nil: a plaintext repository, Contents inline).
func EncodeManifest(m *Manifest, comp envelope.Compression, ci envelope.Cipher) ([]byte, error) {
	if m.Sealed {
		return nil, fmt.Errorf("backup %s: cannot write a manifest whose contents are unknown", m.ID)
	}
	out := storedManifest{Summary: m.Summary}
	out.Format = ManifestFormat
	out.FileCount = len(m.Files)
	if ci == nil {
		c := m.Contents
		out.Contents = &c
	} else {
		inner, err := json.Marshal(sealedContents{ID: m.ID, Contents: m.Contents})
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		if _, err := envelope.Encode(&buf, inner, comp, ci); err != nil {
			return nil, fmt.Errorf("sealing the manifest of %s: %w", m.ID, err)
		}
		out.Sealed = buf.Bytes()
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", " ")
	if err := enc.Encode(out); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ParseManifest decodes and validates a manifest. Sealed Contents are
// opened with ci; without a key to open them the manifest comes back with
// its Summary only and Sealed set.
func ParseManifest(data []byte, ci envelope.Cipher) (*Manifest, error) {
	var head struct {
		Format int `json:"format"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return nil, fmt.Errorf("%w: manifest is not valid JSON: %v", envelope.ErrCorrupt, err)
	}
	var m Manifest
	if head.Format <= 1 {
		// Format 1: every field at the top level.
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("%w: manifest is not valid JSON: %v", envelope.ErrCorrupt, err)
		}
		m.FileCount = len(m.Files)
	} else {
		var st storedManifest
		if err := json.Unmarshal(data, &st); err != nil {
			return nil, fmt.Errorf("%w: manifest is not valid JSON: %v", envelope.ErrCorrupt, err)
		}
		m.Summary = st.Summary
		switch {
		case st.Contents != nil:
			m.Contents = *st.Contents
		case len(st.Sealed) > 0:
			inner, _, err := envelope.Decode(bytes.NewReader(st.Sealed), ci)
			if errors.Is(err, envelope.ErrEncrypted) {
				m.Sealed = true
				break
			}
			if err != nil {
				return nil, fmt.Errorf("opening the sealed contents of backup %s: %w", m.ID, err)
			}
			var sc sealedContents
			if err := json.Unmarshal(inner, &sc); err != nil {
				return nil, fmt.Errorf("%w: sealed contents of backup %s are not valid JSON: %v", envelope.ErrCorrupt, m.ID, err)
			}
			if sc.ID != m.ID {
				return nil, fmt.Errorf("%w: the sealed contents in the manifest of %s belong to backup %s", envelope.ErrCorrupt, m.ID, sc.ID)
			}
			m.Contents = sc.Contents
		default:
			return nil, fmt.Errorf("%w: manifest of %s has neither contents nor sealed contents", envelope.ErrCorrupt, m.ID)
		}
		if !m.Sealed && m.FileCount != len(m.Files) {
			return nil, fmt.Errorf("%w: manifest of %s counts %d files but lists %d", envelope.ErrCorrupt, m.ID, m.FileCount, len(m.Files))
		}
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// WriteManifest stores m as backup id's completion record, write-once. The
// record itself is never encrypted; its Contents are sealed in an
// encrypted repository.
func WriteManifest(ctx context.Context, r *repo.Repo, m *Manifest) error {
	m.Format = ManifestFormat
	m.FileCount = len(m.Files)
	data, err := EncodeManifest(m, r.Compression(), r.Cipher())
	if err != nil {
		return err
	}
	_, err = r.PutPlainObject(ctx, repo.Manifest(m.ID), data)
	return err
}

// WriteStarted stores the marker of a backup that began, in the clear.
func WriteStarted(ctx context.Context, r *repo.Repo, s Started) error {
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = r.PutPlainObject(ctx, repo.Started(s.ID), data)
	return err
}

// ReadStarted reads the marker of backup id.
func ReadStarted(ctx context.Context, r *repo.Repo, id string) (*Started, error) {
	data, _, err := r.GetObject(ctx, repo.Started(id))
	if err != nil {
		return nil, err
	}
	var s Started
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%w: %s is not valid JSON: %v", envelope.ErrCorrupt, repo.Started(id), err)
	}
	return &s, nil
}

// ReadManifest reads and validates the manifest of backup id. Without the
// key of an encrypted repository it returns the Summary alone (Sealed);
// a format 1 manifest of an encrypted repository is encrypted as a whole
// and cannot be read at all without the key.
func ReadManifest(ctx context.Context, r *repo.Repo, id string) (*Manifest, error) {
	data, _, err := r.GetObject(ctx, repo.Manifest(id))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("backup %s: %w", id, ErrNoSuchBackup)
	}
	if errors.Is(err, envelope.ErrEncrypted) {
		return nil, fmt.Errorf("reading manifest of backup %s (written by an older pgkeep, encrypted as a whole): %w", id, err)
	}
	if err != nil {
		return nil, fmt.Errorf("reading manifest of backup %s: %w", id, err)
	}
	m, err := ParseManifest(data, r.Cipher())
	if err != nil {
		return nil, err
	}
	if m.ID != id {
		return nil, fmt.Errorf("%w: backups/%s/backup.json describes backup %s", envelope.ErrCorrupt, id, m.ID)
	}
	return m, nil
}

// ErrNoSuchBackup means no complete backup has the id.
var ErrNoSuchBackup = errors.New("no complete backup with that id")
