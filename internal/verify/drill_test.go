package verify

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/pgctl"
	"github.com/pgkeep/pgkeep/internal/pgversion"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage/local"
)

func repoOfMajor(t *testing.T, major int) *repo.Repo {
	t.Helper()
	st, err := local.New(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	comp, _ := envelope.ParseCompression("zstd")
	r := repo.New(st, repo.Options{Compression: comp, WALCompression: comp})
	if _, err := r.EnsureIdentity(context.Background(), repo.Identity{SystemIdentifier: 42, PGMajor: major, WalSegSize: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	return r
}

// The drill needs the server of the backup's major: it says so, before
// restoring anything, when it cannot have it.
func TestDrillNeedsTheBackupsMajor(t *testing.T) {
	ctx := context.Background()
	_, err := Drill(ctx, repoOfMajor(t, 19), DrillOptions{})
	if !errors.Is(err, pgversion.ErrUnsupported) || !strings.Contains(err.Error(), "PostgreSQL 19 is not supported by this pgkeep (supported: 12 to 18): upgrade pgkeep") {
		t.Errorf("repository of PostgreSQL 19: %v", err)
	}
	// A supported major with no server programs where the drill looks.
	for _, major := range pgversion.Majors() {
		if _, err := pgctl.FindServer(major); err == nil {
			continue
		}
		empty := t.TempDir()
		_, err := Drill(ctx, repoOfMajor(t, major), DrillOptions{BinDir: empty})
		if !errors.Is(err, pgctl.ErrNoServer) || !strings.Contains(err.Error(), empty) || !strings.Contains(err.Error(), "--pg-bindir") {
			t.Errorf("PostgreSQL %d without its server: %v", major, err)
		}
		return
	}
	t.Log("every supported major is installed where the drill looks; the missing-server case is not exercised")
}

func TestDrillChecksPerMajor(t *testing.T) {
	for _, major := range pgversion.Majors() {
		c := checkFor(major)
		if (major >= 14) != (c.program == "pg_amcheck") {
			t.Errorf("PostgreSQL %d: %s", major, c.name)
		}
	}
}
