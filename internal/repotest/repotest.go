// Package repotest builds repositories in-process for tests of the code
// above package repo: a local-directory repository behind a fault
// injector and the retry wrapper (as cmd/pgkeep composes the stack), with
// synthetic WAL segments and backups written in pgkeep's own format. It
// exists for tests only; no server is involved.
package repotest

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/storage/faultstore"
	"github.com/pgkeep/pgkeep/internal/storage/local"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// SegSize is the WAL segment size of test repositories (the smallest
// PostgreSQL allows, to keep tests fast).
const SegSize = 1 << 20

// SysID is the system identifier of the test cluster.
const SysID = 7441071349612345678

// Control returns a pg_control of the test cluster (PostgreSQL 15): the
// fixture of package pgcontrol with SysID and a CRC to match.
func Control(t testing.TB) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(moduleRoot(t), "internal", "pgcontrol", "testdata", "pg_control_15"))
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint64(data, SysID)
	const crcAt = 288 // pg_control version 1300
	binary.LittleEndian.PutUint32(data[crcAt:], crc32.Checksum(data[:crcAt], crc32.MakeTable(crc32.Castagnoli)))
	return data
}

// moduleRoot finds the directory of go.mod from the working directory.
func moduleRoot(t testing.TB) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for ; dir != "/"; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
	}
	t.Fatal("go.mod not found")
	return ""
}

// Env is a test repository.
type Env struct {
	Root    string            // the repository directory
	URL     string            // file://Root
	Faults  *faultstore.Store // between the retry wrapper and the backend
	Storage storage.Storage   // the stack: retries around Faults
	Comp    envelope.Compression
}

// New creates an empty repository directory and its storage stack.
func New(t testing.TB) *Env {
	t.Helper()
	root := filepath.Join(t.TempDir(), "repo")
	st, err := local.New(root)
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Root: root, URL: "file://" + root, Faults: faultstore.New(st), Comp: envelope.Compression{Codec: envelope.Zstd}}
	p := storage.DefaultRetryPolicy()
	p.InitialInterval, p.MaxInterval, p.MaxElapsed = time.Millisecond, 5*time.Millisecond, 5*time.Second
	e.Storage = storage.NewRetrying(e.Faults, p)
	return e
}

// Repo opens the repository as a new process would.
func (e *Env) Repo(opts ...func(*repo.Options)) *repo.Repo {
	o := repo.Options{Compression: e.Comp, WALCompression: e.Comp}
	for _, f := range opts {
		f(&o)
	}
	return repo.New(e.Storage, o)
}

// Init writes the identity record of the test cluster (PostgreSQL 15).
func (e *Env) Init(t testing.TB) *repo.Repo {
	t.Helper()
	r := e.Repo()
	if _, err := r.EnsureIdentity(context.Background(), repo.Identity{SystemIdentifier: SysID, PGMajor: 15, WalSegSize: SegSize}); err != nil {
		t.Fatal(err)
	}
	return r
}

// Segment returns a fake WAL segment of the test cluster: a PostgreSQL 15
// long page header, then bytes derived from no.
func Segment(tli wal.TimeLineID, no uint64) []byte {
	b := make([]byte, SegSize)
	le := binary.LittleEndian
	le.PutUint16(b[0:], 0xD110)
	le.PutUint16(b[2:], 0x0002)
	le.PutUint32(b[4:], uint32(tli))
	le.PutUint64(b[8:], no*SegSize)
	le.PutUint64(b[24:], SysID)
	le.PutUint32(b[32:], SegSize)
	le.PutUint32(b[36:], 8192)
	for i := 8192; i < len(b); i += 8 {
		le.PutUint64(b[i:], no*0x9E3779B97F4A7C15+uint64(i))
	}
	return b
}

// WAL stores segments from..to of timeline tli, dated at.
func (e *Env) WAL(t testing.TB, tli wal.TimeLineID, from, to uint64, at time.Time) {
	t.Helper()
	r := e.Repo()
	for no := from; no <= to; no++ {
		name := wal.SegmentName(tli, no, SegSize)
		if _, err := r.PutObject(context.Background(), repo.WAL(name), Segment(tli, no)); err != nil {
			t.Fatal(err)
		}
		e.Date(t, repo.WAL(name), at)
	}
}

// Date sets the modification time of the object under key.
func (e *Env) Date(t testing.TB, key repo.Key, at time.Time) {
	t.Helper()
	if err := os.Chtimes(e.Path(key), at, at); err != nil {
		t.Fatal(err)
	}
}

// Path is where the object under key lies.
func (e *Env) Path(key repo.Key) string {
	return filepath.Join(e.Root, filepath.FromSlash(key.String()))
}

// Backup stores a complete backup of files (path -> content; include
// "global/pg_control" for a restorable one) on timeline 1, started in
// segment startSeg and stopped in stopSeg, finished at stop. Files are
// packed into data objects of objectSize bytes of content.
func (e *Env) Backup(t testing.TB, id string, files map[string][]byte, startSeg, stopSeg uint64, stop time.Time, objectSize int) *catalog.Manifest {
	t.Helper()
	ctx := context.Background()
	r := e.Repo()
	if _, err := r.Identity(ctx); err != nil {
		t.Fatal(err)
	}
	start := wal.SegmentStartLSN(startSeg, SegSize) + 0x28
	stopLSN := wal.SegmentStartLSN(stopSeg, SegSize) + 0x100
	if err := catalog.WriteStarted(ctx, r, catalog.Started{ID: id, StartTime: stop.Add(-time.Minute), StartLSN: start.String(), Timeline: 1}); err != nil {
		t.Fatal(err)
	}
	m := &catalog.Manifest{}
	m.ID, m.SystemIdentifier, m.PGVersionNum, m.PGMajor, m.WalSegSize = id, "7441071349612345678", 150018, 15, SegSize
	m.Timeline, m.StartLSN, m.StopLSN = 1, start.String(), stopLSN.String()
	m.StartWAL, m.StopWAL = wal.SegmentName(1, startSeg, SegSize), wal.SegmentName(1, stopSeg, SegSize)
	m.StartTime, m.StopTime = stop.Add(-time.Minute), stop
	m.Compression = e.Comp.String()
	m.Label = "test " + id
	m.BackupLabel = "START WAL LOCATION: " + start.String() + " (file " + m.StartWAL + ")\nCHECKPOINT LOCATION: " + start.String() + "\nSTART TIMELINE: 1\n"
	dirs := map[string]bool{}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
		for d := filepath.Dir(p); d != "."; d = filepath.Dir(d) {
			dirs[filepath.ToSlash(d)] = true
		}
	}
	sort.Strings(paths)
	for d := range dirs {
		m.Dirs = append(m.Dirs, catalog.Dir{Path: d, Mode: 0o700})
	}
	var content bytes.Buffer
	seq := 0
	flush := func() {
		if content.Len() == 0 {
			return
		}
		var buf bytes.Buffer
		sum, err := envelope.Encode(&buf, content.Bytes(), e.Comp, r.Cipher())
		if err != nil {
			t.Fatal(err)
		}
		put, err := r.PutEncoded(ctx, repo.Data(id, seq), buf.Bytes(), sum)
		if err != nil {
			t.Fatal(err)
		}
		m.Objects = append(m.Objects, catalog.Object{Seq: seq, Size: sum.Size, Stored: put.Stored, XXH64: sum.String()})
		m.Stored += put.Stored
		seq++
		content.Reset()
	}
	for _, p := range paths {
		data := files[p]
		f := catalog.File{Path: p, Size: int64(len(data)), Mode: 0o600, MTime: stop.Unix()}
		for off := 0; off < len(data); {
			if content.Len() >= objectSize {
				flush()
			}
			n := min(len(data)-off, objectSize-content.Len())
			piece := catalog.Piece{Object: seq, Offset: int64(content.Len()), FileOffset: int64(off), Size: int64(n),
				XXH64: sumOf(data[off : off+n]).String()}
			if off%catalog.ChunkSize == 0 && strings.HasPrefix(p, "base/") {
				// As backup does for relation files.
				piece.Chunks = catalog.AppendChunkSums(nil, data[off:off+n])
			}
			f.Pieces = append(f.Pieces, piece)
			content.Write(data[off : off+n])
			off += n
		}
		m.Files = append(m.Files, f)
		m.Size += f.Size
	}
	flush()
	if err := catalog.WriteManifest(ctx, r, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func sumOf(p []byte) envelope.Sum {
	h := envelope.NewHasher()
	h.Write(p)
	return h.Sum()
}
