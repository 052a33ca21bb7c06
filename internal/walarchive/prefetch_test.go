package walarchive

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage/local"
	"github.com/pgkeep/pgkeep/internal/wal"
)

const seg1M = 1 << 20

func testRepo(t *testing.T) *repo.Repo {
	st, err := local.New(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	r := repo.New(st, repo.Options{Compression: envelope.Compression{Codec: envelope.Zstd}, WALCompression: envelope.Compression{Codec: envelope.Zstd}})
	if _, err := r.EnsureIdentity(context.Background(), repo.Identity{SystemIdentifier: 42, PGMajor: 15, WalSegSize: seg1M}); err != nil {
		t.Fatal(err)
	}
	return r
}

// opened returns an open function for Fetch that gives r.
func opened(r *repo.Repo) func() (*repo.Repo, error) {
	return func() (*repo.Repo, error) { return r, nil }
}

func TestPrefetchFeedsFetch(t *testing.T) {
	ctx := context.Background()
	r := testRepo(t)
	for no := uint64(1); no <= 5; no++ {
		data := bytes.Repeat([]byte{byte(no)}, seg1M)
		if _, err := r.PutObject(ctx, repo.WAL(wal.SegmentName(1, no, seg1M)), data); err != nil {
			t.Fatal(err)
		}
	}
	pgdata := t.TempDir()
	os.Mkdir(filepath.Join(pgdata, "pg_wal"), 0o700)
	os.WriteFile(filepath.Join(pgdata, "recovery.signal"), nil, 0o600)
	dest := filepath.Join(pgdata, "pg_wal", "RECOVERYXLOG")

	started := ""
	opts := FetchOptions{StartPrefetch: func(dir, served string) { started = served }}
	if err := Fetch(ctx, opened(r), wal.SegmentName(1, 1, seg1M), dest, opts); err != nil {
		t.Fatal(err)
	}
	if started != wal.SegmentName(1, 1, seg1M) {
		t.Fatalf("prefetch not started after a served segment: %q", started)
	}
	// The prefetcher fills the spool, stopping at the end of the archive.
	if err := Prefetch(ctx, r, pgdata, wal.SegmentName(1, 1, seg1M), 8, 2); err != nil {
		t.Fatal(err)
	}
	spooled, _ := filepath.Glob(filepath.Join(pgdata, PrefetchDir, "0*"))
	if len(spooled) != 4 {
		t.Fatalf("spool holds %v", spooled)
	}
	// Segment 3 is served from the spool even with the repository gone.
	for no := uint64(2); no <= 5; no++ {
		r.Delete(ctx, repo.WAL(wal.SegmentName(1, no, seg1M)))
	}
	noRepo := func() (*repo.Repo, error) { t.Fatal("a spooled segment opened the repository"); return nil, nil }
	if err := Fetch(ctx, noRepo, wal.SegmentName(1, 3, seg1M), dest, FetchOptions{}); err != nil {
		t.Fatalf("fetch from the spool: %v", err)
	}
	got, _ := os.ReadFile(dest)
	if !bytes.Equal(got, bytes.Repeat([]byte{3}, seg1M)) {
		t.Fatal("spooled segment content differs")
	}
	// Segment 2 was passed over: pruned.
	if _, err := os.Stat(filepath.Join(pgdata, PrefetchDir, wal.SegmentName(1, 2, seg1M))); err == nil {
		t.Fatal("a segment recovery went past is still spooled")
	}
	// Not found means not found, with nothing spooled and nothing archived.
	if err := Fetch(ctx, opened(r), wal.SegmentName(1, 9, seg1M), dest, FetchOptions{}); err == nil {
		t.Fatal("a missing segment was served")
	}
	// Once recovery has ended, a prefetcher leaves nothing behind.
	os.Remove(filepath.Join(pgdata, "recovery.signal"))
	if err := Prefetch(ctx, r, pgdata, wal.SegmentName(1, 3, seg1M), 8, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pgdata, PrefetchDir)); err == nil {
		t.Fatal("spool not removed")
	}
}
