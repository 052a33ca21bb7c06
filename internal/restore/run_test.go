package restore

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/repotest"
	"github.com/pgkeep/pgkeep/internal/storage/faultstore"
)

func testFiles() map[string][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	big := make([]byte, 300<<10)
	for i := range big {
		big[i] = byte(rng.UintN(256))
	}
	control := make([]byte, 8192)
	copy(control, "pg_control of the test cluster")
	return map[string][]byte{
		"PG_VERSION":        []byte("15\n"),
		"base/1/1259":       big,
		"base/1/empty":      nil,
		"global/pg_control": control,
		"postgresql.conf":   []byte("shared_buffers = 64MB\n"),
	}
}

func runRestore(t *testing.T, env *repotest.Env, target Target) (string, error) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	_, err := Run(context.Background(), env.Repo(), Options{PGData: dir, Workers: 2, Target: target,
		RestoreCommand: "pgkeep wal-fetch %f %p"})
	return dir, err
}

// TestRunRestoresEveryByte: a backup in the repository comes back file by
// file, with the recovery settings, and pg_control last.
func TestRunRestoresEveryByte(t *testing.T) {
	env := repotest.New(t)
	env.Init(t)
	t0 := time.Now().Add(-time.Hour)
	env.WAL(t, 1, 2, 5, t0)
	files := testFiles()
	env.Backup(t, "20261201T100000Z", files, 2, 3, t0, 64<<10)
	dir, err := runRestore(t, env, Target{})
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range files {
		got, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v (%d bytes, want %d)", p, err, len(got), len(want))
		}
	}
	auto, _ := os.ReadFile(filepath.Join(dir, "postgresql.auto.conf"))
	label, _ := os.ReadFile(filepath.Join(dir, "backup_label"))
	if !strings.Contains(string(auto), "restore_command = 'pgkeep wal-fetch %f %p'") || !strings.Contains(string(label), "START WAL LOCATION") {
		t.Fatalf("recovery settings:\n%s\nlabel:\n%s", auto, label)
	}
	if _, err := os.Stat(filepath.Join(dir, "recovery.signal")); err != nil {
		t.Fatal("no recovery.signal")
	}
}

// TestRunThroughFaults: a transient read failure is retried; a damaged
// object fails the restore, and the directory can never be started.
func TestRunThroughFaults(t *testing.T) {
	env := repotest.New(t)
	env.Init(t)
	t0 := time.Now().Add(-time.Hour)
	env.WAL(t, 1, 2, 5, t0)
	m := env.Backup(t, "20261201T100000Z", testFiles(), 2, 3, t0, 64<<10)
	env.Faults.Inject(faultstore.OnNth(1, faultstore.Match{Op: faultstore.Get, Prefix: "backups/20261201T100000Z/data/"}, faultstore.ErrInjected))
	if _, err := runRestore(t, env, Target{}); err != nil {
		t.Fatalf("a transient read failure must be retried: %v", err)
	}
	env.Faults.Reset()

	victim := env.Path(repo.Data(m.ID, 2))
	data, _ := os.ReadFile(victim)
	data[len(data)/2] ^= 0x40
	os.WriteFile(victim, data, 0o600)
	dir, err := runRestore(t, env, Target{})
	if !errors.Is(err, envelope.ErrCorrupt) {
		t.Fatalf("restore of a damaged object: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "global", "pg_control")); err == nil {
		t.Fatal("a failed restore left a startable data directory")
	}
}

// TestRunRefusesAGap: with a segment missing between the backup and the
// end of the archive, restore writes nothing.
func TestRunRefusesAGap(t *testing.T) {
	env := repotest.New(t)
	env.Init(t)
	t0 := time.Now().Add(-time.Hour)
	env.WAL(t, 1, 2, 3, t0)
	env.WAL(t, 1, 5, 6, t0) // 4 is missing
	env.Backup(t, "20261201T100000Z", testFiles(), 2, 3, t0, 64<<10)
	dir, err := runRestore(t, env, Target{})
	if !errors.Is(err, ErrGap) {
		t.Fatalf("restore across a gap: %v", err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Fatalf("a refused restore created %s", dir)
	}
}
