package restore

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/repotest"
)

func randomBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.UintN(256))
	}
	return b
}

// TestDeltaRestore: a delta restore onto a restore of an older backup
// writes exactly the chunks and files that differ, trusts the record of
// files untouched since the restore, sees through a file changed behind
// its back (its modification time put back), removes what the backup does
// not have, and leaves every byte equal to the backup.
func TestDeltaRestore(t *testing.T) {
	env := repotest.New(t)
	env.Init(t)
	t0 := time.Now().Add(-2 * time.Hour)
	env.WAL(t, 1, 2, 7, t0)
	old := map[string][]byte{
		"PG_VERSION":        []byte("15\n"),
		"global/pg_control": repotest.Control(t),
		"base/1/1259":       randomBytes(1, 5*catalog.ChunkSize+8192),
		"base/1/1249":       randomBytes(2, 3*catalog.ChunkSize),
		"base/1/2600":       randomBytes(3, 40000),
		"postgresql.conf":   []byte("shared_buffers = 64MB\n"),
	}
	m1 := env.Backup(t, "20261201T100000Z", old, 2, 3, t0, 4<<20)
	now := maps.Clone(old)
	now["base/1/1259"] = bytes.Clone(old["base/1/1259"])
	now["base/1/1259"][2*catalog.ChunkSize+5] ^= 1
	delete(now, "base/1/2600")
	now["base/1/3000"] = randomBytes(4, 50000)
	m2 := env.Backup(t, "20261201T110000Z", now, 4, 5, t0.Add(time.Hour), 4<<20)

	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	opts := Options{PGData: dir, Workers: 2, BackupID: m1.ID, RestoreCommand: "pgkeep wal-fetch %f %p"}
	if _, err := Run(ctx, env.Repo(), opts); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, RestoredRecord)); err != nil {
		t.Fatalf("no %s after a restore: %v", RestoredRecord, err)
	}
	// Changed behind the record's back, its times put back: the change
	// time still tells.
	victim := filepath.Join(dir, "base/1/1249")
	st, _ := os.Stat(victim)
	data, _ := os.ReadFile(victim)
	data[catalog.ChunkSize+9] ^= 0xff
	os.WriteFile(victim, data, 0o600)
	os.Chtimes(victim, st.ModTime(), st.ModTime())
	os.MkdirAll(filepath.Join(dir, "pg_wal"), 0o700)
	os.WriteFile(filepath.Join(dir, "pg_wal", "000000020000000000000009"), []byte("diverged"), 0o600)
	os.WriteFile(filepath.Join(dir, "base/1/junk"), []byte("x"), 0o600)

	opts.BackupID, opts.Delta = m2.ID, true
	res, err := Run(ctx, env.Repo(), opts)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range now {
		if got, err := os.ReadFile(filepath.Join(dir, p)); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v, %d bytes, differs from the backup", p, err, len(got))
		}
	}
	for _, gone := range []string{"base/1/2600", "base/1/junk", "pg_wal/000000020000000000000009", "global/pg_control.pgkeep-restoring"} {
		if _, err := os.Stat(filepath.Join(dir, gone)); err == nil {
			t.Errorf("%s is still there", gone)
		}
	}
	d := res.Delta
	wantWritten := int64(2*catalog.ChunkSize) + int64(len(now["base/1/3000"])) + int64(len(now["global/pg_control"]))
	if d == nil || d.Written != wantWritten {
		t.Fatalf("delta wrote %+v, want %d bytes (one chunk of each changed file, the new file, pg_control)", d, wantWritten)
	}
	// Read to compare: the file changed behind the record's back and the
	// files without chunk checksums; not 1259, untouched since.
	wantRead := int64(len(old["base/1/1249"]) + len("15\n") + len(old["postgresql.conf"]))
	if d.Compared != wantRead {
		t.Errorf("delta read %d bytes to compare, want %d", d.Compared, wantRead)
	}
	if d.Removed < 3 || d.Fetched != 1 {
		t.Errorf("delta removed %d entries and fetched %d objects", d.Removed, d.Fetched)
	}

	// Refused: a live postmaster.pid; another cluster's pg_control.
	os.WriteFile(filepath.Join(dir, "postmaster.pid"), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
	if _, err := Run(ctx, env.Repo(), opts); !errors.Is(err, ErrDeltaTarget) {
		t.Errorf("delta restore with a server running: %v", err)
	}
	os.Remove(filepath.Join(dir, "postmaster.pid"))
	other, _ := os.ReadFile("../pgcontrol/testdata/pg_control_15")
	os.WriteFile(filepath.Join(dir, "global", "pg_control"), other, 0o600)
	if _, err := Run(ctx, env.Repo(), opts); !errors.Is(err, ErrDeltaTarget) {
		t.Errorf("delta restore onto another cluster: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "global", "pg_control")); !bytes.Equal(got, other) {
		t.Error("a refused delta restore changed pg_control")
	}
}
