package pgctl

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseServerVersion(t *testing.T) {
	for out, want := range map[string]int{
		"postgres (PostgreSQL) 18.4\n":                           18,
		"postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)\n": 15,
		"postgres (PostgreSQL) 19beta1\n":                        19,
		"postgres (PostgreSQL) 12.22\n":                          12,
		"postgres (PostgreSQL) 9.6.24\n":                         9,
	} {
		if got, err := parseServerVersion(out); err != nil || got != want {
			t.Errorf("%q: %d, %v; want %d", out, got, err, want)
		}
	}
	for _, bad := range []string{"", "postgres 18.4", "postgres (PostgreSQL) beta", "mysqld (MySQL) 8.0"} {
		if got, err := parseServerVersion(bad); err == nil {
			t.Errorf("%q read as %d", bad, got)
		}
	}
}

// A directory without a server, or with another major's, is passed over;
// the error names every place looked at.
func TestFindServerNamesWhereItLooked(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "bin")
	os.Mkdir(fake, 0o755)
	for _, name := range []string{"postgres", "pg_ctl"} {
		if err := os.WriteFile(filepath.Join(fake, name), []byte("#!/bin/sh\necho 'postgres (PostgreSQL) 99.1'\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, err := FindServer(99, filepath.Join(dir, "empty"))
	if err == nil {
		t.Skip("a PostgreSQL 99 is installed here")
	}
	if !errors.Is(err, ErrNoServer) || !strings.Contains(err.Error(), filepath.Join(dir, "empty")) || !strings.Contains(err.Error(), "/usr/lib/postgresql/99/bin") {
		t.Errorf("%v", err)
	}
	got, err := FindServer(99, filepath.Join(dir, "empty"), fake)
	if err != nil || got != fake {
		t.Errorf("FindServer with a PostgreSQL 99 in %s: %q, %v", fake, got, err)
	}
	if _, err := FindServer(98, fake); !errors.Is(err, ErrNoServer) {
		t.Errorf("a PostgreSQL 99 taken for 98: %v", err)
	}
}

func TestRecoveryStateQueryPerMajor(t *testing.T) {
	for major := 12; major <= 18; major++ {
		q := recoveryStateQuery(major)
		if (major >= 14) != strings.Contains(q, "pg_get_wal_replay_pause_state") || (major < 14) != strings.Contains(q, "pg_is_wal_replay_paused") {
			t.Errorf("PostgreSQL %d: %s", major, q)
		}
	}
}
