package pgtest

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/pgkeep/pgkeep/internal/pgversion"
)

var regen = flag.Bool("regen-fixtures", false, "write the parser fixtures of every supported major into the testdata of pgcontrol, pgpage and wal")

// TestGenerateFixtures writes the per-major parser fixtures, each made by
// that major's own server, when run with
//
//	go test ./internal/pgtest -run TestGenerateFixtures -args -regen-fixtures
//
// It never runs otherwise. For each major N it runs initdb --data-checksums,
// starts the server, creates a table of 500 rows with a primary key and
// checkpoints, then writes:
//
//	pgcontrol/testdata/majors/N/pg_control       global/pg_control of the running server
//	pgcontrol/testdata/majors/N/pg_control.json  what the server's pg_control_system(),
//	                                             pg_control_checkpoint(), pg_control_init() and
//	                                             pg_control_recovery() say of that same file
//	pgcontrol/testdata/majors/N/backup_label     the labelfile of a non-exclusive backup's stop
//	pgcontrol/testdata/majors/N/backup_history   the backup history file the stop wrote in pg_wal
//	pgcontrol/testdata/majors/N/backup.json      the start and stop LSNs the server returned
//	pgpage/testdata/majors/N/heap, btree         segment 0 of the table and of its index
//	wal/testdata/majors/N/wal_page               the first 8 KiB (one page) of the current WAL segment
//	wal/testdata/majors/N/wal_page.json          its segment name and the system identifier
func TestGenerateFixtures(t *testing.T) {
	if !*regen {
		t.Skip("writes fixtures only with -regen-fixtures")
	}
	for _, major := range pgversion.Majors() {
		t.Run(strconv.Itoa(major), func(t *testing.T) {
			t.Parallel()
			generateFixtures(t, major)
		})
	}
}

func generateFixtures(t *testing.T, major int) {
	ctx := context.Background()
	// With archiving off, pg_backup_stop removes the backup history file
	// at once (CleanupBackupHistory: nothing is waiting to archive it).
	c := NewCluster(t, Options{Major: major, Conf: map[string]string{"archive_mode": "on", "archive_command": "true"}})
	c.Start(t)
	if c.Major != major {
		t.Fatalf("asked for PostgreSQL %d, got %d", major, c.Major)
	}
	c.Exec(t, "CREATE TABLE fixture (id int PRIMARY KEY, pad text)")
	c.Exec(t, "INSERT INTO fixture SELECT g, md5(g::text) FROM generate_series(1, 500) g")
	c.Exec(t, "CHECKPOINT")

	dirs := map[string]string{}
	for _, pkg := range []string{"pgcontrol", "pgpage", "wal"} {
		dirs[pkg] = filepath.Join("..", pkg, "testdata", "majors", strconv.Itoa(major))
		if err := os.MkdirAll(dirs[pkg], 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(pkg, name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dirs[pkg], name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeJSON := func(pkg, name string, v any) {
		t.Helper()
		data, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		write(pkg, name, append(data, '\n'))
	}
	read := func(rel string) []byte {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(c.DataDir, rel))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}

	// Relation files, and the first page of the current WAL segment.
	write("pgpage", "heap", read(c.QueryString(t, "SELECT pg_relation_filepath('fixture')")))
	write("pgpage", "btree", read(c.QueryString(t, "SELECT pg_relation_filepath('fixture_pkey')")))
	seg := c.QueryString(t, "SELECT pg_walfile_name(pg_current_wal_lsn())")
	write("wal", "wal_page", read(filepath.Join("pg_wal", seg))[:8192])
	writeJSON("wal", "wal_page.json", map[string]string{
		"segment":           seg,
		"system_identifier": c.QueryString(t, "SELECT system_identifier::text FROM pg_control_system()"),
	})

	// pg_control, with what the server reads in the same file; the file
	// must not change while the functions read it.
	before := read("global/pg_control")
	conn := c.connect(t)
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SET TimeZone = 'UTC'"); err != nil {
		t.Fatal(err)
	}
	golden := map[string]any{"server_version_num": c.QueryString(t, "SELECT current_setting('server_version_num')")}
	for _, fn := range []string{"pg_control_system", "pg_control_checkpoint", "pg_control_init", "pg_control_recovery"} {
		var text string
		if err := conn.QueryRow(ctx, fmt.Sprintf("SELECT row_to_json(f)::text FROM %s() f", fn)).Scan(&text); err != nil {
			t.Fatal(err)
		}
		golden[fn] = json.RawMessage(text)
	}
	if after := read("global/pg_control"); string(after) != string(before) {
		t.Fatal("pg_control changed while it was read; run again")
	}
	write("pgcontrol", "pg_control", before)
	writeJSON("pgcontrol", "pg_control.json", golden)

	// A non-exclusive backup: start and stop in one session.
	start, stop := "SELECT pg_backup_start('fixture label', true)::text", "SELECT lsn::text, labelfile FROM pg_backup_stop(false)"
	if major < 15 {
		start, stop = "SELECT pg_start_backup('fixture label', true, false)::text", "SELECT lsn::text, labelfile FROM pg_stop_backup(false, false)"
	}
	var startLSN, stopLSN, label string
	if err := conn.QueryRow(ctx, start).Scan(&startLSN); err != nil {
		t.Fatal(err)
	}
	c.Exec(t, "INSERT INTO fixture VALUES (501, 'during the backup')")
	if err := conn.QueryRow(ctx, stop).Scan(&stopLSN, &label); err != nil {
		t.Fatal(err)
	}
	var history string
	if err := conn.QueryRow(ctx, "SELECT pg_walfile_name($1::pg_lsn) || '.' || lpad(upper(to_hex((($1::pg_lsn - '0/0'::pg_lsn) % 16777216)::bigint)), 8, '0') || '.backup'", startLSN).Scan(&history); err != nil {
		t.Fatal(err)
	}
	write("pgcontrol", "backup_label", []byte(label))
	write("pgcontrol", "backup_history", read(filepath.Join("pg_wal", history)))
	writeJSON("pgcontrol", "backup.json", map[string]string{"start_lsn": startLSN, "stop_lsn": stopLSN, "history_file": history})
}
