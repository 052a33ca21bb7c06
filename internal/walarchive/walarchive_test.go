package walarchive

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/pgcontrol"
	"github.com/pgkeep/pgkeep/internal/pgversion"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage/local"
)

// segmentHeader is the long page header of a PostgreSQL 15 segment
// (XLOG_PAGE_MAGIC 0xD110) of cluster sysid, at the start of a page.
func segmentHeader(sysid uint64, segSize uint32) []byte {
	b := make([]byte, 8192)
	binary.LittleEndian.PutUint16(b[0:], 0xD110)
	binary.LittleEndian.PutUint16(b[2:], 0x0002) // XLP_LONG_HEADER
	binary.LittleEndian.PutUint32(b[4:], 1)
	binary.LittleEndian.PutUint64(b[24:], sysid)
	binary.LittleEndian.PutUint32(b[32:], segSize)
	binary.LittleEndian.PutUint32(b[36:], 8192)
	return b
}

// Push refuses a segment whose page magic is no supported major's, and one
// whose major is not the repository's, before it writes anything.
func TestPushChecksTheSegmentsMajor(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	st, err := local.New(filepath.Join(root, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	comp, _ := envelope.ParseCompression("zstd")
	r := repo.New(st, repo.Options{Compression: comp, WALCompression: comp})
	if _, err := r.EnsureIdentity(ctx, repo.Identity{SystemIdentifier: 42, PGMajor: 15, WalSegSize: testSegSize}); err != nil {
		t.Fatal(err)
	}
	walDir := filepath.Join(root, "pg_wal")
	os.MkdirAll(walDir, 0o700)
	push := func(name string, magic uint16) error {
		seg := fakeSegment(42, 1, name)
		binary.LittleEndian.PutUint16(seg, magic)
		p := filepath.Join(walDir, name)
		if err := os.WriteFile(p, seg, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Push(ctx, r, p, PushOptions{PGData: filepath.Join(root, "nowhere")})
		return err
	}
	if err := push("000000010000000000000001", 0xD110); err != nil {
		t.Fatalf("PostgreSQL 15 segment into a PostgreSQL 15 repository: %v", err)
	}
	err = push("000000010000000000000002", 0xD118) // PostgreSQL 18's
	if !errors.Is(err, repo.ErrForeignCluster) || !strings.Contains(err.Error(), "PostgreSQL 15 WAL but this cluster runs PostgreSQL 18") {
		t.Errorf("PostgreSQL 18 segment into a PostgreSQL 15 repository: %v", err)
	}
	var ue *pgversion.UnsupportedError
	err = push("000000010000000000000003", 0xD11A) // after 18's
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "not supported by this pgkeep (supported: 12 to 18): upgrade pgkeep") {
		t.Errorf("segment of a later PostgreSQL: %v", err)
	}
	for _, n := range []string{"000000010000000000000002", "000000010000000000000003"} {
		if _, err := st.Stat(ctx, repo.WAL(n).String()); err == nil {
			t.Errorf("%s was stored", n)
		}
	}
}

// History files are identified with pg_control: PostgreSQL 18's is
// archived; one of a PostgreSQL pgkeep does not know (a PostgreSQL 18
// control file patched to version 1900, its CRC recomputed) is refused as
// unsupported, naming the major, never as a damaged pg_control.
func TestPushHistoryFileChecksPgControl(t *testing.T) {
	ctx := context.Background()
	control, err := os.ReadFile("../pgcontrol/testdata/majors/18/pg_control")
	if err != nil {
		t.Fatal(err)
	}
	sysID := binary.LittleEndian.Uint64(control)
	history := []byte("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTOP WAL LOCATION: 0/2000100 (file 000000010000000000000002)\n" +
		"CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-12-01 21:00:17 UTC\nLABEL: x\n" +
		"START TIMELINE: 1\nSTOP TIME: 2026-12-01 21:00:17 UTC\nSTOP TIMELINE: 1\n")
	setup := func(control []byte) (*repo.Repo, string) {
		root := t.TempDir()
		pgdata := filepath.Join(root, "data")
		os.MkdirAll(filepath.Join(pgdata, "global"), 0o700)
		os.MkdirAll(filepath.Join(pgdata, "pg_wal"), 0o700)
		if err := os.WriteFile(filepath.Join(pgdata, "global", "pg_control"), control, 0o600); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(pgdata, "pg_wal", "000000010000000000000002.00000028.backup")
		if err := os.WriteFile(p, history, 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := local.New(filepath.Join(root, "repo"))
		if err != nil {
			t.Fatal(err)
		}
		comp, _ := envelope.ParseCompression("zstd")
		return repo.New(st, repo.Options{Compression: comp, WALCompression: comp}), p
	}

	r, p := setup(control)
	if _, err := Push(ctx, r, p, PushOptions{}); err != nil {
		t.Fatalf("PostgreSQL 18 backup history file: %v", err)
	}
	if id, err := r.Identity(ctx); err != nil || id.PGMajor != 18 || id.SystemIdentifier != sysID {
		t.Errorf("repository identity after the first push: %+v, %v", id, err)
	}

	next := append([]byte(nil), control...)
	binary.LittleEndian.PutUint32(next[8:], 1900)
	binary.LittleEndian.PutUint32(next[292:], crc32.Checksum(next[:292], crc32.MakeTable(crc32.Castagnoli)))
	r, p = setup(next)
	_, err = Push(ctx, r, p, PushOptions{})
	var ue *pgversion.UnsupportedError
	if !errors.As(err, &ue) || ue.Major != 19 || errors.Is(err, pgcontrol.ErrCorrupt) || strings.Contains(err.Error(), "damaged") ||
		!strings.Contains(err.Error(), "PostgreSQL 19 is not supported by this pgkeep (supported: 12 to 18): upgrade pgkeep") {
		t.Errorf("history file of a PostgreSQL 19 cluster: %v", err)
	}
	if _, err := r.Identity(ctx); !errors.Is(err, repo.ErrNoRepository) {
		t.Errorf("a repository was created for PostgreSQL 19: %v", err)
	}
}

// A recycled segment file (PostgreSQL renames old segments to future
// names, content and all) is refused: stored under its new name it would
// stand in for the real segment, whose push would then conflict with it.
func TestPushRefusesARecycledSegment(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	st, err := local.New(filepath.Join(root, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	r := repo.New(st, repo.Options{})
	if _, err := r.EnsureIdentity(ctx, repo.Identity{SystemIdentifier: 42, PGMajor: 15, WalSegSize: testSegSize}); err != nil {
		t.Fatal(err)
	}
	walDir := filepath.Join(root, "pg_wal")
	os.MkdirAll(walDir, 0o700)
	p := filepath.Join(walDir, "000000010000000000000005")
	os.WriteFile(p, fakeSegment(42, 1, "000000010000000000000001"), 0o600)
	if _, err := Push(ctx, r, p, PushOptions{}); err == nil || !strings.Contains(err.Error(), "recycled") {
		t.Fatalf("a recycled segment: %v", err)
	}
	if ok, _ := r.Exists(ctx, repo.WAL("000000010000000000000005")); ok {
		t.Fatal("the recycled segment was stored")
	}
	os.WriteFile(p, fakeSegment(42, 1, "000000010000000000000005"), 0o600)
	if _, err := Push(ctx, r, p, PushOptions{}); err != nil {
		t.Fatalf("the real segment 5: %v", err)
	}
}
