package walarchive

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/storage/faultstore"
	"github.com/pgkeep/pgkeep/internal/storage/local"
)

// pushEnv is an in-process wal-push setting: a pg_wal directory and a
// repository on the local backend behind a fault injector and the retry
// wrapper, as cmd/pgkeep composes it.
type pushEnv struct {
	walDir string
	faults *faultstore.Store
	st     storage.Storage
}

func newPushEnv(t *testing.T) *pushEnv {
	t.Helper()
	root := t.TempDir()
	st, err := local.New(filepath.Join(root, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	e := &pushEnv{walDir: filepath.Join(root, "data", "pg_wal"), faults: faultstore.New(st)}
	p := storage.DefaultRetryPolicy()
	p.InitialInterval, p.MaxInterval = time.Millisecond, 5*time.Millisecond
	e.st = storage.NewRetrying(e.faults, p)
	os.MkdirAll(e.walDir, 0o700)
	return e
}

// repo opens the repository as a new wal-push process would.
func (e *pushEnv) repo() *repo.Repo {
	return repo.New(e.st, repo.Options{Compression: envelope.Compression{Codec: envelope.Zstd}, WALCompression: envelope.Compression{Codec: envelope.Zstd}})
}

func (e *pushEnv) segment(t *testing.T, name string, seed uint64) string {
	t.Helper()
	p := filepath.Join(e.walDir, name)
	if err := os.WriteFile(p, fakeSegment(42, seed, name), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPushCachesTheIdentity: consecutive wal-push processes fetch the
// identity record once, not once per segment, and fetch it again when the
// cache is stale.
func TestPushCachesTheIdentity(t *testing.T) {
	ctx := context.Background()
	e := newPushEnv(t)
	cache := IdentityCachePath(e.walDir, RepoTag("test"))
	opts := PushOptions{IdentityCache: cache}
	// The first push finds no repository, creates it and caches the
	// record; the next ones use the cache.
	var first int
	for i, name := range []string{"000000010000000000000001", "000000010000000000000002", "000000010000000000000003"} {
		if _, err := Push(ctx, e.repo(), e.segment(t, name, uint64(i)), opts); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = e.faults.Calls(faultstore.Get, "pgkeep.json")
		}
	}
	if n := e.faults.Calls(faultstore.Get, "pgkeep.json"); n != first {
		t.Fatalf("pushes after the first fetched the identity record %d times, want 0", n-first)
	}
	old := time.Now().Add(-time.Hour)
	data, _ := os.ReadFile(cache)
	os.WriteFile(cache, []byte(replaceFetched(t, data, old)), 0o600)
	if _, err := Push(ctx, e.repo(), e.segment(t, "000000010000000000000004", 4), opts); err != nil {
		t.Fatal(err)
	}
	if n := e.faults.Calls(faultstore.Get, "pgkeep.json"); n != first+1 {
		t.Fatalf("a stale cache was used: %d fetches", n-first)
	}
	// The cached record is checked against every segment as the fetched
	// one is: another cluster's segment is refused.
	p := filepath.Join(e.walDir, "000000010000000000000009")
	os.WriteFile(p, fakeSegment(43, 9, filepath.Base(p)), 0o600)
	if _, err := Push(ctx, e.repo(), p, opts); !errors.Is(err, repo.ErrForeignCluster) {
		t.Fatalf("another cluster's segment with the identity cached: %v", err)
	}
}

func replaceFetched(t *testing.T, data []byte, at time.Time) string {
	t.Helper()
	var c cachedRecord
	if err := jsonUnmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	c.Fetched = at
	out, _ := jsonMarshal(c)
	return string(out)
}

// TestPushThroughFaults: a transient failure of the upload is retried; an
// upload whose answer was lost is found in place and accepted as the same
// content; a permanent failure stores nothing and says so; different
// content under an archived name is refused.
func TestPushThroughFaults(t *testing.T) {
	ctx := context.Background()
	e := newPushEnv(t)
	seg := e.segment(t, "000000010000000000000001", 1)
	if _, err := Push(ctx, e.repo(), seg, PushOptions{}); err != nil {
		t.Fatal(err)
	}

	e.faults.Inject(faultstore.OnNth(1, faultstore.Match{Op: faultstore.Put, Prefix: "wal/"}, faultstore.ErrInjected))
	if _, err := Push(ctx, e.repo(), e.segment(t, "000000010000000000000002", 2), PushOptions{}); err != nil {
		t.Fatalf("a transient upload failure must be retried: %v", err)
	}

	e.faults.Inject(faultstore.LostAnswer(1, faultstore.Match{Op: faultstore.Put, Prefix: "wal/00000001/000000010000000000000003"}, faultstore.ErrInjected))
	res, err := Push(ctx, e.repo(), e.segment(t, "000000010000000000000003", 3), PushOptions{})
	if err != nil || !res.Existed {
		t.Fatalf("an upload whose answer was lost: %+v %v", res, err)
	}

	e.faults.Inject(faultstore.Always(faultstore.Match{Op: faultstore.Put, Prefix: "wal/00000001/000000010000000000000004"}, storage.Permanent(errors.New("access denied"))))
	if _, err := Push(ctx, e.repo(), e.segment(t, "000000010000000000000004", 4), PushOptions{}); err == nil {
		t.Fatal("a permanent failure was reported as archived")
	}
	if ok, _ := e.repo().Exists(ctx, repo.WAL("000000010000000000000004")); ok {
		t.Fatal("a failed push stored the segment")
	}

	os.WriteFile(seg, fakeSegment(42, 99, filepath.Base(seg)), 0o600)
	if _, err := Push(ctx, e.repo(), seg, PushOptions{}); !errors.Is(err, repo.ErrConflict) {
		t.Fatalf("different content under an archived name: %v", err)
	}
}

var (
	jsonMarshal   = json.Marshal
	jsonUnmarshal = json.Unmarshal
)
