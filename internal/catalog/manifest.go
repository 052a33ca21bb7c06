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
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"

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

// IDTime is when backup id started (ids are UTC start times).
func IDTime(id string) (time.Time, bool) {
	t, err := time.Parse(IDLayout, id)
	return t, err == nil
}

// FullOf is the full backup the chain of s starts from (s itself for a
// full backup).
func (s *Summary) FullOf() string {
	if s.Incremental() {
		return s.Full
	}
	return s.ID
}

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
	// Parent is the backup an incremental one builds on: expire keeps it
	// while this one may still complete.
	Parent string `json:"parent,omitempty"`
}

// Piece is a run of bytes of one file stored inside a data object.
type Piece struct {
	Object     int   `json:"object"`      // data object sequence number
	Offset     int64 `json:"offset"`      // offset in the object's content
	FileOffset int64 `json:"file_offset"` // offset in the file
	Size       int64 `json:"size"`
	// XXH64 is the checksum of these bytes, 16 hex digits; "" for a piece
	// an incremental backup took over from part of an earlier one's
	// piece, whose chunks carry the checksums.
	XXH64 string `json:"xxh64"`
	// Backup is the backup whose data object holds the piece: "" for the
	// backup itself, an earlier backup's id for the unchanged parts an
	// incremental backup refers to.
	Backup string `json:"backup,omitempty"`
	// Chunks are the xxh64 checksums (8 bytes each, little-endian) of the
	// piece's ChunkSize-byte chunks, the last one shorter, for the pieces
	// of relation files: what incremental backups refer to and delta
	// restores compare. FileOffset is then a multiple of ChunkSize.
	Chunks []byte `json:"chunks,omitempty"`
}

// ChunkSize is the granularity at which incremental backups take over
// unchanged parts of relation files, and at which delta restores compare
// them: 16 pages of 8 KiB.
const ChunkSize = 128 << 10

// ChunkCount is how many chunks a piece of size bytes has.
func ChunkCount(size int64) int { return int((size + ChunkSize - 1) / ChunkSize) }

// AppendChunkSums appends the chunk checksums of data, which starts at a
// chunk boundary of its file (the last chunk may be short).
func AppendChunkSums(dst, data []byte) []byte {
	for i := 0; i < len(data); i += ChunkSize {
		dst = binary.LittleEndian.AppendUint64(dst, xxhash.Sum64(data[i:min(i+ChunkSize, len(data))]))
	}
	return dst
}

// PieceCheck verifies bytes of a piece as they stream by: each chunk's
// checksum when it has chunk checksums for all its bytes, else its whole
// checksum. A piece with both is checked by its chunks only: they cover
// every byte (and the size is checked), so a second pass over the same
// bytes for the whole checksum would add nothing but CPU (a tenth of a
// restore's).
type PieceCheck struct {
	p     Piece
	whole *xxhash.Digest
	chunk *xxhash.Digest
	in    int64 // bytes of the current chunk seen
	idx   int   // the current chunk
	n     int64
	bad   int // the first chunk that did not match, -1: none
}

// NewPieceCheck returns a check of p's bytes.
func NewPieceCheck(p Piece) *PieceCheck {
	c := &PieceCheck{p: p, bad: -1}
	if p.Chunks != nil {
		c.chunk = xxhash.New()
	}
	if p.XXH64 != "" && (p.Chunks == nil || len(p.Chunks) != 8*ChunkCount(p.Size)) {
		c.whole = xxhash.New()
	}
	return c
}

// Write adds the next bytes of the piece.
func (c *PieceCheck) Write(b []byte) {
	c.n += int64(len(b))
	if c.whole != nil {
		c.whole.Write(b)
	}
	for c.chunk != nil && len(b) > 0 {
		take := min(int64(len(b)), ChunkSize-c.in)
		c.chunk.Write(b[:take])
		b, c.in = b[take:], c.in+take
		if c.in == ChunkSize {
			c.endChunk()
		}
	}
}

func (c *PieceCheck) endChunk() {
	if c.bad < 0 && (8*c.idx+8 > len(c.p.Chunks) || c.chunk.Sum64() != c.p.Chunk(c.idx)) {
		c.bad = c.idx
	}
	c.idx++
	c.in = 0
	c.chunk.Reset()
}

// Verify reports, once every byte was written, whether they are the
// piece's.
func (c *PieceCheck) Verify() error {
	if c.chunk != nil && c.in > 0 {
		c.endChunk()
	}
	switch {
	case c.n != c.p.Size:
		return fmt.Errorf("%w: %d bytes where the manifest has %d", envelope.ErrCorrupt, c.n, c.p.Size)
	case c.whole != nil && fmt.Sprintf("%016x", c.whole.Sum64()) != c.p.XXH64:
		return fmt.Errorf("%w: checksum %016x, the manifest says %s", envelope.ErrCorrupt, c.whole.Sum64(), c.p.XXH64)
	case c.bad >= 0:
		return fmt.Errorf("%w: chunk %d does not match its checksum", envelope.ErrCorrupt, c.bad)
	}
	return nil
}

// Chunk returns the checksum of chunk i of the piece.
func (p Piece) Chunk(i int) uint64 { return binary.LittleEndian.Uint64(p.Chunks[8*i:]) }

// ObjectOf names the backup whose object holds p, for the manifest of
// backup id.
func (p Piece) ObjectOf(id string) string {
	if p.Backup != "" {
		return p.Backup
	}
	return id
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

// Object describes one data object: one of the backup's own, or (Backup
// set) one of an earlier backup that an incremental backup refers to.
type Object struct {
	Seq    int    `json:"seq"`
	Size   int64  `json:"size"`   // content bytes
	Stored int64  `json:"stored"` // bytes in the repository
	XXH64  string `json:"xxh64"`
	Backup string `json:"backup,omitempty"` // "" : this backup's own
}

// ObjectRef names a data object in a chain of backups.
type ObjectRef struct {
	Backup string
	Seq    int
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
	Size             int64     `json:"size"` // bytes of the files
	// Stored is what the backup's own data objects take in the repository
	// (an incremental one's, without the objects it refers to).
	Stored    int64    `json:"stored"`
	FileCount int      `json:"file_count"`
	Objects   []Object `json:"objects"`
	// Type is "full" or "incremental" ("" in manifests of pgkeep before
	// incremental backups: full).
	Type string `json:"type,omitempty"`
	// Parent is the backup an incremental one builds on; Chain is how
	// many incremental backups lead back to the full one (0 for a full),
	// and Full is that full backup.
	Parent string `json:"parent,omitempty"`
	Chain  int    `json:"chain"`
	Full   string `json:"full,omitempty"`
}

// Incremental reports whether the backup builds on another.
func (s *Summary) Incremental() bool { return s.Type == "incremental" }

// DependsOn lists the backups an incremental backup needs, in id order:
// its parent, and every backup whose data objects it refers to (nil for
// a full backup). It needs only the summary, so it is known without the
// key of an encrypted repository.
func (s *Summary) DependsOn() []string {
	if s.Parent == "" {
		return nil
	}
	seen := map[string]bool{s.Parent: true}
	for _, o := range s.Objects {
		if o.Backup != "" {
			seen[o.Backup] = true
		}
	}
	out := make([]string, 0, len(seen))
	for id := range seen {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
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
	objects := map[ObjectRef]Object{}
	for _, o := range m.Objects {
		if o.Backup != "" && (!ValidID(o.Backup) || o.Backup >= m.ID) {
			return fmt.Errorf("%w: manifest of %s refers to an object of backup %q", envelope.ErrCorrupt, m.ID, o.Backup)
		}
		objects[ObjectRef{o.Backup, o.Seq}] = o
	}
	switch m.Type {
	case "", "full":
		if m.Parent != "" || m.Chain != 0 || m.Full != "" {
			return fmt.Errorf("%w: manifest of full backup %s names a parent", envelope.ErrCorrupt, m.ID)
		}
	case "incremental":
		if !ValidID(m.Parent) || m.Parent >= m.ID || m.Chain < 1 || !ValidID(m.Full) || m.Full > m.Parent {
			return fmt.Errorf("%w: manifest of incremental backup %s has parent %q, chain %d, full %q", envelope.ErrCorrupt, m.ID, m.Parent, m.Chain, m.Full)
		}
	default:
		return fmt.Errorf("backup %s is of type %q, which this pgkeep does not know; upgrade pgkeep", m.ID, m.Type)
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
			o, ok := objects[ObjectRef{p.Backup, p.Object}]
			if !ok || p.Offset < 0 || p.Size < 0 || p.FileOffset < 0 || p.Offset+p.Size > o.Size {
				return fmt.Errorf("%w: manifest of %s: piece of %s points outside object %d of %q", envelope.ErrCorrupt, m.ID, f.Path, p.Object, p.ObjectOf(m.ID))
			}
			if p.Chunks != nil && (len(p.Chunks) != 8*ChunkCount(p.Size) || p.FileOffset%ChunkSize != 0) {
				return fmt.Errorf("%w: manifest of %s: piece of %s at %d has %d bytes of chunk checksums", envelope.ErrCorrupt, m.ID, f.Path, p.FileOffset, len(p.Chunks))
			}
			if p.XXH64 == "" && p.Chunks == nil && p.Size > 0 {
				return fmt.Errorf("%w: manifest of %s: piece of %s at %d has no checksum", envelope.ErrCorrupt, m.ID, f.Path, p.FileOffset)
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
