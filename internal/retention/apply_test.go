package retention

import (
	"context"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/repotest"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/storage/faultstore"
)

func files() map[string][]byte {
	return map[string][]byte{"PG_VERSION": []byte("15\n"), "global/pg_control": make([]byte, 8192)}
}

// TestApplyInterrupted: an expire that fails midway leaves the repository
// consistent (the expired backup is no longer complete before any of its
// data goes), and a rerun finishes the job; nothing a kept backup needs is
// touched.
func TestApplyInterrupted(t *testing.T) {
	ctx := context.Background()
	env := repotest.New(t)
	env.Init(t)
	now := time.Now()
	env.WAL(t, 1, 1, 12, now.Add(-time.Hour))
	env.Backup(t, "20261201T080000Z", files(), 2, 3, now.Add(-3*time.Hour), 4096)
	env.Backup(t, "20261201T090000Z", files(), 6, 7, now.Add(-2*time.Hour), 4096)
	env.Backup(t, "20261201T100000Z", files(), 10, 11, now.Add(-time.Hour), 4096)
	plan := func() *Plan {
		r := env.Repo()
		cat, err := catalog.Load(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		in, err := Gather(ctx, r, cat, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		p, err := MakePlan(in, Policy{KeepCount: 1, GarbageAge: 0})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := plan()
	if len(p.Expire) != 2 || len(p.DeleteWAL) != 9 {
		t.Fatalf("plan: expire %v, %d WAL files", p.Expire, len(p.DeleteWAL))
	}
	// The third delete fails for good: the newest expired backup's record
	// and one data object are gone.
	env.Faults.Inject(faultstore.OnNth(3, faultstore.Match{Op: faultstore.Delete}, storage.Permanent(faultstore.ErrInjected)))
	if err := Apply(ctx, env.Repo(), p, func(string, ...any) {}); err == nil {
		t.Fatal("an interrupted expire reported success")
	}
	env.Faults.Reset()
	r := env.Repo()
	cat, err := catalog.Load(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(cat.Backups) != 2 || len(cat.Incomplete()) != 1 || cat.Incomplete()[0].ID != "20261201T090000Z" {
		t.Fatalf("after the interruption: %d complete, incomplete %+v", len(cat.Backups), cat.Incomplete())
	}
	// The rerun removes the leftovers and what is still due.
	if err := Apply(ctx, r, plan(), func(string, ...any) {}); err != nil {
		t.Fatal(err)
	}
	cat, _ = catalog.Load(ctx, env.Repo())
	if len(cat.Entries) != 1 || cat.Entries[0].ID != "20261201T100000Z" {
		t.Fatalf("after the rerun: %+v", cat.Entries)
	}
	if ok, _ := env.Repo().Exists(ctx, repo.WAL("00000001000000000000000A")); !ok {
		t.Fatal("WAL the kept backup needs was removed")
	}
	if ok, _ := env.Repo().Exists(ctx, repo.WAL("000000010000000000000009")); ok {
		t.Fatal("WAL nothing needs is still there")
	}
}
