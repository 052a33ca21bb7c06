package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/pgtest"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage/local"
)

// TestGapStopsRecovery: a segment lost in the middle of the archive must
// never end recovery silently. restore refuses to restore to the end
// across it, naming the gap and the way out; the way out (a target before
// the gap) restores up to it on purpose; and with the restore already
// written when the segment disappears, recovery stops at the hole and the
// server does not promote.
func TestGapStopsRecovery(t *testing.T) {
	repo := fileRepo(t)
	root := strings.TrimPrefix(repo.URL, "file://")
	c := archivingCluster(t, repo, nil)
	c.Exec(t, "CREATE TABLE markers (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
	backup(t, c, repo)
	var segs []string
	for i := 1; i <= 6; i++ {
		c.Exec(t, "INSERT INTO markers (id) VALUES ($1)", i)
		segs = append(segs, switchAndWait(t, c))
	}
	// The time between the commits of markers 1 and 2, for a time target.
	between := c.QueryString(t, "SELECT to_char(((SELECT at FROM markers WHERE id = 1) + ((SELECT at FROM markers WHERE id = 2) - (SELECT at FROM markers WHERE id = 1)) / 2) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
	c.Stop(t, "immediate")

	lost := segs[2] // holds marker 3
	obj := filepath.Join(root, "wal", lost[:8], lost)
	saved, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(obj)

	// restore refuses to the end of the archive, and writes nothing.
	dir := filepath.Join(pgtest.TempDir(t, "restore-"), "data")
	r := run(t, nil, append([]string{"restore", "--pgdata", dir}, repo.Flags()...)...)
	if r.code == 0 || !strings.Contains(r.stderr, lost) || !strings.Contains(r.stderr, "--target-lsn") || !strings.Contains(r.stderr, segs[3]) {
		t.Fatalf("restore across a gap must refuse, naming %s, the later WAL and the way out: %s", lost, r)
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Fatalf("a refused restore wrote %d entries into %s", len(entries), dir)
	}

	// The way out it names restores up to the gap on purpose.
	m := regexp.MustCompile(`--target-lsn ([0-9A-F]+/[0-9A-F]+)`).FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("no LSN offered: %s", r.stderr)
	}
	upto := restoreAndStart(t, repo, "--target-lsn", m[1], "--archive-off")
	if got := markers(t, upto); got != seq(1, 2) {
		t.Fatalf("restore up to the gap: markers %q, want 1,2", got)
	}
	upto.Stop(t, "fast")
	if r := run(t, nil, append([]string{"restore", "--pgdata", filepath.Join(pgtest.TempDir(t, "restore-"), "data"), "--target-lsn", "0/FF000000"}, repo.Flags()...)...); r.code == 0 || !strings.Contains(r.stderr, "gap") {
		t.Fatalf("a target beyond the gap must be refused: %s", r)
	}
	byTime := restoreAndStart(t, repo, "--target-time", between, "--archive-off")
	if got := markers(t, byTime); got != "1" {
		t.Fatalf("restore to a time before the gap: markers %q, want 1", got)
	}
	byTime.Stop(t, "fast")

	// A restore written while the archive was whole; then a segment goes
	// missing: recovery stops at it instead of promoting.
	if err := os.WriteFile(obj, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(pgtest.TempDir(t, "restore-"), "data")
	mustRun(t, nil, append([]string{"restore", "--pgdata", dir}, repo.Flags()...)...)
	os.Remove(obj)
	ageWAL(t, root)
	rc := pgtest.Adopt(t, dir, pgtest.BinDir(t))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	startErr := rc.TryStart(ctx)
	deadline := time.Now().Add(time.Minute)
	for rc.Running() && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	log := rc.Log()
	if rc.Running() {
		t.Fatalf("the server still runs with a segment missing mid-archive (start: %v)\n%s", startErr, log)
	}
	if !strings.Contains(log, "gap in the WAL archive") || strings.Contains(log, "selected new timeline ID") {
		t.Fatalf("recovery must stop at the gap without promoting:\n%s", log)
	}
	if _, err := os.Stat(filepath.Join(root, "wal", "00000002", "00000002.history")); err == nil {
		t.Fatal("the server promoted onto timeline 2")
	}
}

// ageWAL dates every archived WAL object an hour back, so that wal-fetch
// does not wait for a segment overtaken by a just-stored successor.
func ageWAL(t *testing.T, root string) {
	old := time.Now().Add(-time.Hour)
	filepath.WalkDir(filepath.Join(root, "wal"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			os.Chtimes(p, old, old)
		}
		return nil
	})
}

// TestArchiverFailureReported: a failing archive_command is reported by
// status (exit 1) and refused by backup before it writes anything, with
// the file and wal-push's own error; an archive_timeout that leaves the RPO
// unbounded is a warning, and status explains its RPO estimate.
func TestArchiverFailureReported(t *testing.T) {
	good := fileRepo(t)
	c := archivingCluster(t, good, nil)
	backup(t, c, good)
	env := append(c.Env(), good.Env...)

	st := mustRun(t, env, append([]string{"status", "--json"}, good.Flags()...)...)
	var s struct {
		RPOBasis string   `json:"rpo_basis"`
		Warnings []string `json:"warnings"`
		Server   struct {
			Checked bool `json:"checked"`
		} `json:"server"`
	}
	if err := json.Unmarshal([]byte(st.stdout), &s); err != nil {
		t.Fatal(err)
	}
	if !s.Server.Checked || !strings.Contains(strings.Join(s.Warnings, " "), "archive_timeout is 0") || !strings.Contains(s.RPOBasis, "archive_timeout is 0") {
		t.Fatalf("status must check the server and warn about archive_timeout = 0: %s", st.stdout)
	}
	c.SetConf(t, map[string]string{"archive_timeout": "600"})
	c.Reload(t)
	st = mustRun(t, env, append([]string{"status", "--max-rpo", "5m"}, good.Flags()...)...)
	if !strings.Contains(st.stdout, "longer than --max-rpo") || !strings.Contains(st.stdout, "RPO basis") {
		t.Fatalf("status must warn about an archive_timeout above --max-rpo: %s", st.stdout)
	}

	// Archiving into a repository of another cluster fails for every
	// segment.
	foreign := fileRepo(t)
	st2, err := local.New(strings.TrimPrefix(foreign.URL, "file://"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.New(st2, repo.Options{Compression: envelope.Compression{}}).EnsureIdentity(context.Background(), repo.Identity{SystemIdentifier: 1, PGMajor: 15, WalSegSize: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	pgtest.Runner(t).ChownTree(strings.TrimPrefix(foreign.URL, "file://"))
	c.SetConf(t, map[string]string{"archive_command": foreign.Shell(pgkeepBin(t), "wal-push") + " %p"})
	c.Reload(t)
	c.Exec(t, "SELECT pg_logical_emit_message(false, 'pgkeep-test', 'x')")
	failing := c.QueryString(t, "SELECT pg_walfile_name(pg_switch_wal())")
	deadline := time.Now().Add(time.Minute)
	for c.QueryString(t, "SELECT failed_count::text FROM pg_stat_archiver") == "0" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	r := run(t, env, append([]string{"status"}, good.Flags()...)...)
	if r.code != 1 || !strings.Contains(r.stdout, "archiver is failing") || !strings.Contains(r.stdout, failing) || !strings.Contains(r.stdout, "another cluster") {
		t.Fatalf("status must report the failing archiver, its file and wal-push's error, and exit 1: %s", r)
	}
	before := snapshot(t, good.URL)
	r = run(t, env, append([]string{"backup"}, good.Flags()...)...)
	if r.code == 0 || !strings.Contains(r.stderr, "archiver is failing") || !strings.Contains(r.stderr, failing) {
		t.Fatalf("backup must refuse while the archiver fails: %s", r)
	}
	if snapshot(t, good.URL) != before {
		t.Fatal("a refused backup wrote to the repository")
	}
}

// TestRecipientsOnlyHost: on the database host of an encrypted repository,
// which has only the recipients, list, status and expire work, backup
// verifies the stored bytes of every segment it needs (so damaged
// ciphertext fails it), and verify without the identity checks every
// object's stored bytes and names the damaged one.
func TestRecipientsOnlyHost(t *testing.T) {
	keys := pgtest.TempDir(t, "keys-")
	ident := filepath.Join(keys, "id")
	mustRun(t, nil, "key", "generate", "--output", ident)
	base := fileRepo(t)
	root := strings.TrimPrefix(base.URL, "file://")
	writer := base
	writer.Args = append(append([]string(nil), base.Args...), "--age-recipients", ident+".pub")
	reader := base
	reader.Args = append(append([]string(nil), base.Args...), "--age-identity", ident)

	// While a flag file exists, archive_command stores each segment in a
	// copy of the repository, and moves a damaged copy of the object into
	// place: the repository then holds damaged ciphertext from the moment
	// the segment appears in it.
	flag := filepath.Join(keys, "damage")
	staging := filepath.Join(keys, "staging")
	hook := filepath.Join(keys, "damage.sh")
	stage := writer
	stage.URL = "file://" + staging
	script := "#!/bin/sh\nset -e\nn=$(basename \"$1\"); tl=$(echo \"$n\" | cut -c1-8)\n" +
		"if [ ! -e " + flag + " ]; then exec " + writer.Shell(pgkeepBin(t), "wal-push") + " \"$1\"; fi\n" +
		stage.Shell(pgkeepBin(t), "wal-push") + " \"$1\"\n" +
		"mkdir -p " + root + "/wal/$tl; tmp=" + root + "/wal/$tl/.tmp-damaged-$n\n" +
		"cp " + staging + "/wal/$tl/$n \"$tmp\"; chmod u+w \"$tmp\"\n" +
		"printf 'X' | dd of=\"$tmp\" bs=1 seek=5000 conv=notrunc 2>/dev/null\n" +
		"mv \"$tmp\" " + root + "/wal/$tl/$n\n"
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	c := archivingCluster(t, writer, map[string]string{"archive_command": hook + " %p"})
	c.Exec(t, "CREATE TABLE secrets (s text)")
	c.Exec(t, "INSERT INTO secrets SELECT 'PGKEEP-CANARY-' || g FROM generate_series(1, 1000) g")
	first := backup(t, c, writer)
	switchAndWait(t, c)

	for _, args := range [][]string{{"list"}, {"list", "--json"}, {"status", "--no-server"}, {"verify"}} {
		r := mustRun(t, nil, append(args, writer.Flags()...)...)
		if strings.Contains(r.stdout, "base/") || strings.Contains(r.stdout, "PGKEEP-CANARY") {
			t.Fatalf("pgkeep %v without the identity shows the backup's contents: %s", args, r.stdout)
		}
		if args[0] == "list" && !strings.Contains(r.stdout, first) {
			t.Fatalf("list without the identity does not show %s: %s", first, r.stdout)
		}
		if args[0] == "verify" && !strings.Contains(r.stdout, "stored bytes") {
			t.Fatalf("verify without the identity must say what it checked: %s", r.stdout)
		}
	}

	// Damage every segment archived from now on: the backup's own WAL.
	if out, err := pgtest.Command(context.Background(), "/bin/cp", "-a", root, staging).CombinedOutput(); err != nil {
		t.Fatalf("copying the repository: %v %s", err, out)
	}
	os.WriteFile(flag, nil, 0o644)
	r := run(t, c.Env(), append([]string{"backup", "--wal-timeout", "1m"}, writer.Flags()...)...)
	if r.code == 0 || !strings.Contains(r.stderr, "corrupt") {
		t.Fatalf("backup on a recipients-only host must catch damaged ciphertext: %s", r)
	}
	os.Remove(flag)
	r = run(t, nil, append([]string{"verify", "--json"}, writer.Flags()...)...)
	var rep struct {
		ContentChecked bool `json:"content_checked"`
		WALProblems    []struct {
			Object, Kind string
		} `json:"wal_problems"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || r.code != 4 || rep.ContentChecked || len(rep.WALProblems) == 0 || rep.WALProblems[0].Kind != "corrupt" {
		t.Fatalf("verify without the identity must find the damaged WAL and exit 4: %v %s", err, r)
	}
	if r := run(t, nil, append([]string{"verify"}, reader.Flags()...)...); r.code != 4 || !strings.Contains(r.stdout, rep.WALProblems[0].Object) {
		t.Fatalf("verify with the identity must find it too: %s", r)
	}
	// expire runs on the recipients-only host, and only ever deletes.
	r = mustRun(t, nil, append([]string{"expire", "--keep", "1", "--garbage-age", "0s"}, writer.Flags()...)...)
	if l := list(t, writer); len(l.Backups) != 1 || len(l.Incomplete) != 0 {
		t.Fatalf("after expire on the recipients-only host: %+v\n%s", l, r.stdout)
	}
	// History files and metadata are readable without the key; data never.
	for _, needle := range []string{"PGKEEP-CANARY", "base/1/", "START WAL LOCATION"} {
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if data, _ := os.ReadFile(p); bytes.Contains(data, []byte(needle)) {
					t.Errorf("plaintext %q in %s", needle, p)
				}
			}
			return nil
		})
	}
}

// TestIdentityOnlyFromFacts: a push that cannot establish the cluster's
// facts never creates the identity record, and a record an older pgkeep
// poisoned (pg_major 0) is repaired by the documented command.
func TestIdentityOnlyFromFacts(t *testing.T) {
	spec := fileRepo(t)
	root := strings.TrimPrefix(spec.URL, "file://")
	c := archivingCluster(t, fileRepo(t), map[string]string{"wal_keep_size": "1GB"})
	seg := switchAndWait(t, c) // complete, and kept in pg_wal
	loose := pgtest.TempDir(t, "loose-")
	data, err := os.ReadFile(filepath.Join(c.DataDir, "pg_wal", seg))
	if err != nil {
		t.Fatal(err)
	}
	// A history file outside pg_wal, without PGDATA: nothing says which
	// cluster it is.
	hist := filepath.Join(loose, "00000002.history")
	os.WriteFile(hist, []byte("1\t0/3000000\tno recovery target specified\n"), 0o644)
	r := run(t, []string{"PGDATA="}, append([]string{"wal-push"}, append(spec.Flags(), hist)...)...)
	if r.code == 0 || !strings.Contains(r.stderr, "PGDATA") {
		t.Fatalf("a push that cannot tell the cluster must be refused, saying what to set: %s", r)
	}
	if _, err := os.Stat(filepath.Join(root, "pgkeep.json")); err == nil {
		t.Fatal("an identity record was written from unknown values")
	}
	// A segment outside pg_wal: its header names the cluster; whatever
	// the repository records must be facts.
	loose = filepath.Join(loose, seg)
	os.WriteFile(loose, data, 0o644)
	r = run(t, []string{"PGDATA="}, append([]string{"wal-push"}, append(spec.Flags(), loose)...)...)
	if r.code == 0 {
		id := readIdentity(t, root)
		if id.PGMajor != 15 || id.WalSegSize != 16<<20 {
			t.Fatalf("identity record from a loose segment: %+v", id)
		}
		os.RemoveAll(root)
	} else if !strings.Contains(r.stderr, "PGDATA") {
		t.Fatalf("refusal of a loose segment must say what to set: %s", r)
	}

	// A poisoned record, as an older pgkeep wrote it.
	sys := c.QueryString(t, "SELECT system_identifier::text FROM pg_control_system()")
	os.MkdirAll(root, 0o755)
	var buf bytes.Buffer
	envelope.Encode(&buf, []byte(`{"format": 1, "system_identifier": "`+sys+`", "pg_major": 0, "wal_segment_size": 16777216}`), envelope.Compression{}, nil)
	os.WriteFile(filepath.Join(root, "pgkeep.json"), buf.Bytes(), 0o644)
	pgtest.Runner(t).ChownTree(root)
	real := filepath.Join(c.DataDir, "pg_wal", seg)
	r = run(t, c.Env(), append([]string{"wal-push"}, append(spec.Flags(), real)...)...)
	if r.code == 0 || !strings.Contains(r.stderr, "identity --repair") {
		t.Fatalf("a push against a poisoned record must name the repair: %s", r)
	}
	mustRun(t, c.Env(), append([]string{"identity", "--repair"}, spec.Flags()...)...)
	if id := readIdentity(t, root); id.PGMajor != 15 {
		t.Fatalf("after the repair: %+v", id)
	}
	mustRun(t, c.Env(), append([]string{"wal-push"}, append(spec.Flags(), real)...)...)
}

func readIdentity(t *testing.T, root string) repo.Identity {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "pgkeep.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, _, err := envelope.Decode(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	var id repo.Identity
	if err := json.Unmarshal(data, &id); err != nil {
		t.Fatal(err)
	}
	return id
}
