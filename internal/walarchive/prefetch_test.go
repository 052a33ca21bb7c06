package walarchive

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

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
	if err := Prefetch(ctx, r, pgdata, wal.SegmentName(1, 1, seg1M), PrefetchOptions{Count: 8, Workers: 2}); err != nil {
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
	if err := Prefetch(ctx, r, pgdata, wal.SegmentName(1, 3, seg1M), PrefetchOptions{Count: 8, Workers: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(pgdata, PrefetchDir)); err == nil {
		t.Fatal("spool not removed")
	}
}

// A following prefetcher is started once and stays ahead of what
// wal-fetch serves: with 4 segments ahead, serving 1 to 8 leaves 9 to 12
// spooled, and no second prefetcher is started while it runs. When
// recovery ends it removes the spool and exits.
func TestPrefetchFollowsRecovery(t *testing.T) {
	ctx := context.Background()
	r := testRepo(t)
	for no := uint64(1); no <= 12; no++ {
		if _, err := r.PutObject(ctx, repo.WAL(wal.SegmentName(1, no, seg1M)), bytes.Repeat([]byte{byte(no)}, seg1M)); err != nil {
			t.Fatal(err)
		}
	}
	pgdata := t.TempDir()
	os.Mkdir(filepath.Join(pgdata, "pg_wal"), 0o700)
	os.WriteFile(filepath.Join(pgdata, "recovery.signal"), nil, 0o600)
	dest := filepath.Join(pgdata, "pg_wal", "RECOVERYXLOG")

	starts := 0
	done := make(chan error, 1)
	opts := FetchOptions{StartPrefetch: func(dir, served string) {
		starts++
		go func() {
			done <- Prefetch(ctx, r, dir, served, PrefetchOptions{Count: 4, Workers: 2, Follow: 5 * time.Second})
		}()
		for deadline := time.Now().Add(5 * time.Second); !PrefetcherRunning(dir) && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}}
	spooled := func(no uint64) bool {
		_, err := os.Stat(filepath.Join(pgdata, PrefetchDir, wal.SegmentName(1, no, seg1M)))
		return err == nil
	}
	for no := uint64(1); no <= 8; no++ {
		if err := Fetch(ctx, opened(r), wal.SegmentName(1, no, seg1M), dest, opts); err != nil {
			t.Fatalf("segment %d: %v", no, err)
		}
		if got, _ := os.ReadFile(dest); !bytes.Equal(got, bytes.Repeat([]byte{byte(no)}, seg1M)) {
			t.Fatalf("segment %d: wrong content", no)
		}
		// Recovery replays before it asks again: the prefetcher catches up.
		for deadline := time.Now().Add(5 * time.Second); !spooled(min(no+4, 12)) && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	if starts != 1 {
		t.Fatalf("prefetcher started %d times, want once", starts)
	}
	for no := uint64(9); no <= 12; no++ {
		if !spooled(no) {
			t.Fatalf("segment %d is not spooled ahead of recovery", no)
		}
	}
	os.Remove(filepath.Join(pgdata, "recovery.signal"))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the prefetcher did not stop when recovery ended")
	}
	if _, err := os.Stat(filepath.Join(pgdata, PrefetchDir)); err == nil {
		t.Fatal("spool not removed at the end of recovery")
	}
}
