package pgstat

import "testing"

func TestSoleWalPush(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		sole bool
	}{
		{"pgkeep wal-push %p", true},
		{"/usr/bin/pgkeep wal-push --repo s3://b/p %p", true},
		{`pgkeep wal-push "%p"`, true},
		{"exec pgkeep wal-push %p", true},
		{"env PGKEEP_REPO=file:///r /tmp/x/pgkeep wal-push --look-ahead 4 %p", true},
		{"PGKEEP_REPO=file:///r pgkeep wal-push %p", true},
		{"pk-test wal-push %p", true}, // the binary's own name
		{"pgkeep wal-push %p && cp %p /standby/%f", false},
		{"cp %p /standby/%f && pgkeep wal-push %p", false},
		{"pgkeep wal-push %p; true", false},
		{"pgkeep wal-push %p || true", false},
		{"pgkeep wal-push %p | tee log", false},
		{"pgkeep wal-push %p > /tmp/log", false},
		{"pgkeep wal-push $(echo %p)", false},
		{"pgkeep wal-push `echo %p`", false},
		{"(pgkeep wal-push %p)", false},
		{"pgkeep wal-push", false},
		{"pgkeep wal-fetch %f %p", false},
		{"pgbackrest archive-push %p", false},
		{"env -i pgkeep wal-push %p", false},
		{`pgkeep wal-push "%p`, false},
		{"pgkeep wal-push %p\ncp %p /x", false},
		{"", false},
	} {
		if got := SoleWalPush(tc.cmd, "pk-test"); got != tc.sole {
			t.Errorf("SoleWalPush(%q) = %v, want %v", tc.cmd, got, tc.sole)
		}
	}
}

func TestShellWords(t *testing.T) {
	got, ok := shellWords(`a 'b c'  "d"e f`)
	want := []string{"a", "b c", "de", "f"}
	if !ok || len(got) != len(want) {
		t.Fatalf("shellWords = %q, %v", got, ok)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("shellWords = %q, want %q", got, want)
		}
	}
}

func TestRunsAs(t *testing.T) {
	env := map[string]string{"PGKEEP_REPO": "file:///r"}
	getenv := func(k string) string { return env[k] }
	call := []string{"/usr/bin/pgkeep", "wal-push", "--repo", "s3://b/p", "pg_wal/000000010000000000000003"}
	for _, tc := range []struct {
		cmd  string
		call []string
		want bool
	}{
		{"pgkeep wal-push --repo s3://b/p %p", call, true},
		{`/usr/bin/pgkeep wal-push --repo s3://b/p "%p"`, call, true},
		{"pgkeep wal-push --repo s3://b/other %p", call, false},            // another repository
		{"pgkeep wal-push --repo s3://b/p --look-ahead 8 %p", call, false}, // other words
		{"pgkeep wal-push %p", call, false},
		{"PGKEEP_REPO=file:///r pgkeep wal-push %p", []string{"pgkeep", "wal-push", "pg_wal/X"}, true},
		{"PGKEEP_REPO=file:///other pgkeep wal-push %p", []string{"pgkeep", "wal-push", "pg_wal/X"}, false},
		{"pgkeep wal-push --verbose %p", []string{"pgkeep", "wal-push", "--verbose", "pg_wal/X"}, true},
		{"pgkeep wal-push --pgdata=/d%% %p", []string{"pgkeep", "wal-push", "--pgdata=/d%", "pg_wal/X"}, true},
		{"pgkeep wal-push --pgdata=/d%% %p", []string{"pgkeep", "wal-push", "--pgdata=/d%%", "pg_wal/X"}, false},
		{"pgkeep wal-push %p && true", []string{"pgkeep", "wal-push", "pg_wal/X"}, false},
	} {
		if got := RunsAs(tc.cmd, "pgkeep", tc.call, getenv); got != tc.want {
			t.Errorf("RunsAs(%q, %q) = %v, want %v", tc.cmd, tc.call, got, tc.want)
		}
	}
}
