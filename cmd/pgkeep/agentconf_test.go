package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAgentRefusesBadSettings: every bad schedule, retention or listen
// setting, from a flag, the environment or the config file, stops the
// agent at its start with a message naming it, before it connects to
// anything; so does a port in use.
func TestAgentRefusesBadSettings(t *testing.T) {
	_, url := testRepo(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	conf := filepath.Join(t.TempDir(), "pgkeep.conf")
	if err := os.WriteFile(conf, []byte("backup-schedule = 0 3 * *\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		env   map[string]string
		args  []string
		code  int
		wants []string
	}{
		{"bad cron", nil, []string{"--backup-schedule", "61 * * * *"}, exitUsage, []string{"setting backup-schedule (from flag --backup-schedule)", "neither an interval"}},
		{"bad interval", nil, []string{"--verify-schedule", "10x"}, exitUsage, []string{"verify-schedule", "not an interval"}},
		{"too short", nil, []string{"--backup-schedule", "10ms"}, exitUsage, []string{"shorter than"}},
		{"bad schedule in the file", nil, []string{"--config", conf}, exitUsage, []string{"setting backup-schedule (from config file " + conf + ")"}},
		{"bad schedule in the environment", map[string]string{"PGKEEP_VERIFY_SCHEDULE": "sometimes"}, nil, exitUsage, []string{"(from environment PGKEEP_VERIFY_SCHEDULE)"}},
		{"retention without backups", nil, []string{"--keep", "3"}, exitUsage, []string{"give --backup-schedule too"}},
		{"bad keep", nil, []string{"--backup-schedule", "24h", "--keep", "-1"}, exitUsage, []string{"setting keep", "not a number"}},
		{"bad keep-within", nil, []string{"--backup-schedule", "24h", "--keep-within", "forever"}, exitUsage, []string{"keep-within"}},
		{"bad listen", nil, []string{"--listen", "localhost"}, exitUsage, []string{"setting listen", "not HOST:PORT"}},
		{"bad port", nil, []string{"--listen", "127.0.0.1:99999"}, exitUsage, []string{"port must be a number"}},
		{"bad host", nil, []string{"--listen", "some host:80"}, exitUsage, []string{"IP address or localhost"}},
		{"port in use", nil, []string{"--listen", busy.Addr().String()}, exitFailure, []string{"listening on " + busy.Addr().String(), "address already in use"}},
	} {
		env := map[string]string{"PGKEEP_REPO": url, "PGHOST": "/nonexistent"}
		for k, v := range c.env {
			env[k] = v
		}
		code, _, errs := pgkeep(t, env, append([]string{"agent"}, c.args...)...)
		if code != c.code {
			t.Errorf("%s: exit %d, want %d: %s", c.name, code, c.code, errs)
		}
		for _, w := range c.wants {
			if !strings.Contains(errs, w) {
				t.Errorf("%s: the error does not say %q: %s", c.name, w, errs)
			}
		}
	}
}
