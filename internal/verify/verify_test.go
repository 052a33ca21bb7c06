package verify

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/repotest"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// TestRunFindsDamage: verify reads everything back: a damaged data
// object, a damaged WAL segment, a missing one and a stray are each named;
// an intact repository is OK.
func TestRunFindsDamage(t *testing.T) {
	ctx := context.Background()
	env := repotest.New(t)
	env.Init(t)
	now := time.Now()
	env.WAL(t, 1, 2, 8, now.Add(-time.Hour))
	m := env.Backup(t, "20261201T090000Z", map[string][]byte{"PG_VERSION": []byte("15\n"), "base/1/1": make([]byte, 50000)}, 2, 3, now, 16384)
	rep, err := Run(ctx, env.Repo(), Options{Workers: 2})
	if err != nil || !rep.OK || rep.WALChecked != 7 || rep.Backups[0].Objects != len(m.Objects) || !rep.ContentChecked {
		t.Fatalf("an intact repository: %+v %v", rep, err)
	}

	flip := func(key repo.Key) {
		data, _ := os.ReadFile(env.Path(key))
		data[len(data)/2] ^= 1
		os.WriteFile(env.Path(key), data, 0o600)
	}
	flip(repo.Data(m.ID, 1))
	flip(repo.WAL(wal.SegmentName(1, 4, repotest.SegSize)))
	os.Remove(env.Path(repo.WAL(wal.SegmentName(1, 6, repotest.SegSize))))
	os.WriteFile(env.Root+"/wal/00000001/not-a-wal-file", []byte("x"), 0o600)
	rep, err = Run(ctx, env.Repo(), Options{Workers: 2})
	if err != nil || rep.OK {
		t.Fatalf("a damaged repository passed: %+v %v", rep, err)
	}
	kinds := map[string]string{}
	for _, p := range rep.Problems() {
		kinds[p.Object] = p.Kind
	}
	for key, kind := range map[string]string{
		repo.Data(m.ID, 1).String():                                "corrupt",
		repo.WAL(wal.SegmentName(1, 4, repotest.SegSize)).String(): "corrupt",
		repo.WAL(wal.SegmentName(1, 6, repotest.SegSize)).String(): "gap",
		"wal/00000001/not-a-wal-file":                              "foreign",
	} {
		if kinds[key] != kind {
			t.Errorf("%s: %q, want %q (all: %v)", key, kinds[key], kind, kinds)
		}
	}
}
