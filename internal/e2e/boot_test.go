package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/pgtest"
)

// contribDir is the repository's contrib directory, from this package.
const contribDir = "../../contrib"

// execStarts returns the ExecStart= command lines of a unit file, in
// order.
func execStarts(t *testing.T, unit string) []string {
	t.Helper()
	data, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "ExecStart="); ok {
			lines = append(lines, v)
		}
	}
	if len(lines) == 0 {
		t.Fatalf("%s has no ExecStart=", unit)
	}
	return lines
}

var envWord = regexp.MustCompile(`^\$([A-Za-z_][A-Za-z0-9_]*)$`)

// systemdArgv turns an ExecStart= value into argv as systemd does for the
// forms the units use: words split at blanks, '...' and "..." quoting,
// "$$" for a literal "$", "${NAME}" replaced within its word, and a word
// that is just "$NAME" replaced by the value split at blanks (none if it
// is empty). Prefixes such as "-" are not used by the units.
func systemdArgv(t *testing.T, line string, env map[string]string) []string {
	t.Helper()
	var argv []string
	for _, w := range splitQuoted(t, line) {
		if m := envWord.FindStringSubmatch(w.text); m != nil && !w.quoted {
			argv = append(argv, strings.Fields(env[m[1]])...)
			continue
		}
		var b strings.Builder
		for i := 0; i < len(w.text); i++ {
			switch {
			case strings.HasPrefix(w.text[i:], "$$"):
				b.WriteByte('$')
				i++
			case strings.HasPrefix(w.text[i:], "${"):
				end := strings.IndexByte(w.text[i:], '}')
				if end < 0 {
					t.Fatalf("unterminated ${ in %q", line)
				}
				b.WriteString(env[w.text[i+2:i+end]])
				i += end
			default:
				b.WriteByte(w.text[i])
			}
		}
		argv = append(argv, b.String())
	}
	return argv
}

type word struct {
	text   string
	quoted bool
}

func splitQuoted(t *testing.T, s string) []word {
	var out []word
	var cur strings.Builder
	in, quoted, started := byte(0), false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case in != 0 && c == in:
			in = 0
		case in != 0:
			cur.WriteByte(c)
		case c == '\'' || c == '"':
			in, quoted, started = c, true, true
		case c == ' ' || c == '\t':
			if started {
				out = append(out, word{cur.String(), quoted})
				cur.Reset()
				quoted, started = false, false
			}
		default:
			cur.WriteByte(c)
			started = true
		}
	}
	if in != 0 {
		t.Fatalf("unterminated quote in %q", s)
	}
	if started {
		out = append(out, word{cur.String(), quoted})
	}
	return out
}

// boot is one run of pgkeep-restore.service's commands.
type boot struct {
	code           int
	stdout, stderr string
}

func (b boot) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", b.code, b.stdout, b.stderr)
}

// bootHost runs the restore unit's commands the way systemd would: as
// this test process's user (root), with systemd's PATH and only the
// variables of the unit's environment file (env), one command after the
// other until one fails. The unit's /usr/bin/pgkeep is bin, and its
// /etc/pgkeep/pgkeep.conf is conf; unit is the unit file (default: the
// one in contrib/systemd).
type bootHost struct {
	bin, conf string
	env       map[string]string
	unit      string
}

var restoreUnit = filepath.Join(contribDir, "systemd", "pgkeep-restore.service")

func (h bootHost) run(t *testing.T, pgdata string) boot {
	t.Helper()
	env := map[string]string{"PGDATA": pgdata}
	for k, v := range h.env {
		env[k] = v
	}
	// No instance metadata service here: a test sends nothing off this machine.
	environ := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "AWS_EC2_METADATA_DISABLED=true"}
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	var b boot
	unit := h.unit
	if unit == "" {
		unit = restoreUnit
	}
	for _, line := range execStarts(t, unit) {
		argv := systemdArgv(t, line, env)
		if argv[0] == "/usr/bin/pgkeep" {
			argv[0] = h.bin
		}
		for i, a := range argv {
			if a == "/etc/pgkeep/pgkeep.conf" {
				argv[i] = h.conf
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = environ
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		cancel()
		b.stdout += out.String()
		b.stderr += errb.String()
		if ee, ok := err.(*exec.ExitError); ok {
			b.code = ee.ExitCode()
			return b
		} else if err != nil {
			t.Fatalf("running %v: %v", argv, err)
		}
	}
	return b
}

// runAsMe runs pgkeep as this test process's user (root in CI), where
// run() runs it as the database's user.
func runAsMe(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, pgkeepBin(t), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running pgkeep %v: %v", args, err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// writeConf writes a pgkeep.conf as the package installs it: root:postgres,
// 0640, in a directory everyone can enter.
func writeConf(t *testing.T, dir, name string, gid int, lines ...string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 0, gid); err != nil {
		t.Fatal(err)
	}
	return p
}

// treeState describes every entry under root (path, type and mode, owner,
// size, modification time), to show that nothing changed.
func treeState(t *testing.T, root string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		uid, gid := ownerOf(fi)
		lines = append(lines, fmt.Sprintf("%s %v %d:%d %d %d", strings.TrimPrefix(p, root), fi.Mode(), uid, gid, fi.Size(), fi.ModTime().UnixNano()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// checkOwned fails unless every entry under root (at least atLeast of them)
// belongs to uid:gid, with directories 0700 and files 0600.
func checkOwned(t *testing.T, root string, uid, gid, atLeast int) {
	t.Helper()
	var n int
	var bad []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		n++
		if u, g := ownerOf(fi); u != uid || g != gid {
			bad = append(bad, fmt.Sprintf("%s belongs to %d:%d, want %d:%d", p, u, g, uid, gid))
		}
		switch {
		case fi.IsDir() && fi.Mode().Perm() != 0o700:
			bad = append(bad, fmt.Sprintf("directory %s has mode %04o, want 0700", p, fi.Mode().Perm()))
		case fi.Mode().IsRegular() && fi.Mode().Perm() != 0o600:
			bad = append(bad, fmt.Sprintf("file %s has mode %04o, want 0600", p, fi.Mode().Perm()))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Fatalf("%d of %d entries under %s are wrong, for example:\n%s", len(bad), n, root, strings.Join(bad[:min(len(bad), 5)], "\n"))
	}
	if n < atLeast {
		t.Fatalf("only %d entries under %s, want at least %d", n, root, atLeast)
	}
}

// TestBootRestore runs pgkeep-restore.service's own commands (from
// contrib/systemd) as root, as systemd runs them at boot, on each kind of
// machine the seed's story has: a new deployment (no repository yet, then
// a repository with no backup yet), a machine whose data is there, and a
// new machine with an empty data directory and a backup in the
// repository; then the repositories that cannot be read, and the targets
// and owners that are refused. After each, the outcome is checked: what
// the unit printed and its exit status, what is on disk and who owns it,
// and that PostgreSQL, as postgres, starts with every committed row.
func TestBootRestore(t *testing.T) {
	pgtest.Runner(t) // skips under -short; PostgreSQL is required
	pgtest.Require(t, "root", os.Geteuid() == 0, "the boot sequence runs as root, as systemd runs it: run the tests as root")
	pgUser, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	pgUID, _ := strconv.Atoi(pgUser.Uid)
	pgGID, _ := strconv.Atoi(pgUser.Gid)
	bin := pgkeepBin(t)

	// A machine's file system: root's, as /var/lib and /srv are.
	host, err := os.MkdirTemp("", "pgkeep-boot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(host) })
	os.Chmod(host, 0o755)
	etc := filepath.Join(host, "etc")
	os.Mkdir(etc, 0o755)
	data := func(name string) string { return filepath.Join(host, name, "lib", "data") }
	initdb := filepath.Join(pgtest.BinDir(t), "initdb") + " --auth=trust -U postgres -E UTF8 --locale=C --no-sync"
	// The environment file: PGDATA comes per run; a first boot creates a
	// cluster with PGKEEP_INITDB.
	withInitdb := map[string]string{"PGKEEP_INITDB": initdb}

	repo := fileRepo(t)
	conf := writeConf(t, etc, "pgkeep.conf", pgGID, "repo = "+repo.URL)
	h := bootHost{bin: bin, conf: conf, env: withInitdb}

	t.Run("new deployment, no repository yet", func(t *testing.T) {
		newRepo := filepath.Join(pgtest.TempDir(t, "fresh-"), "repo")
		fresh := bootHost{bin: bin, conf: writeConf(t, etc, "fresh.conf", pgGID, "repo = file://"+newRepo)}
		dir := data("fresh")
		b := fresh.run(t, dir)
		if b.code != 0 || !strings.Contains(b.stdout, "nothing restored (--if-backup-exists): there is no pgkeep repository at file://"+newRepo+" yet") {
			t.Fatalf("want exit 0 saying there is no repository yet, got %s", b)
		}
		if _, err := os.Stat(filepath.Dir(dir)); err == nil {
			t.Fatal("a boot with nothing to restore created directories")
		}
		if _, err := os.Stat(newRepo); err == nil {
			t.Fatal("a boot with nothing to restore created the repository")
		}
	})

	c := archivingCluster(t, repo, nil)
	c.Exec(t, "CREATE TABLE markers (id int PRIMARY KEY)")
	switchAndWait(t, c) // the repository has its identity now, and no backup

	t.Run("new deployment, repository without a backup", func(t *testing.T) {
		dir := data("first")
		b := h.run(t, dir)
		if b.code != 0 || !strings.Contains(b.stdout, "nothing restored (--if-backup-exists): the repository "+repo.URL+" holds no complete backup yet") {
			t.Fatalf("want exit 0 saying there is no backup yet, got %s", b)
		}
		// PGKEEP_INITDB made a new cluster, the postgres user's.
		fi, err := os.Stat(filepath.Join(dir, "PG_VERSION"))
		if err != nil {
			t.Fatalf("PGKEEP_INITDB did not create a cluster: %v\n%s", err, b)
		}
		if uid, _ := ownerOf(fi); uid != pgUID {
			t.Fatalf("the new cluster belongs to uid %d, want postgres (%d)", uid, pgUID)
		}
		n := pgtest.Adopt(t, dir, "")
		n.Start(t)
		if got := n.QueryString(t, "SELECT count(*)::text FROM pg_class WHERE relname = 'markers'"); got != "0" {
			t.Fatalf("the first boot's cluster is not a new one: markers exists (%s)", got)
		}
		n.Stop(t, "fast")
	})

	// A tablespace too: its directory, restored elsewhere, must be the
	// owner's as well.
	c.Exec(t, fmt.Sprintf("CREATE TABLESPACE far LOCATION '%s'", pgtest.TempDir(t, "boot-ts-")))
	c.Exec(t, "CREATE TABLE far_rows TABLESPACE far AS SELECT generate_series(1, 1000) AS id")
	tsOID := c.QueryString(t, "SELECT oid::text FROM pg_tablespace WHERE spcname = 'far'")
	for i := 1; i <= 10; i++ {
		c.Exec(t, fmt.Sprintf("INSERT INTO markers VALUES (%d)", i))
	}
	backup(t, c, repo)
	for i := 11; i <= 20; i++ {
		c.Exec(t, fmt.Sprintf("INSERT INTO markers VALUES (%d)", i))
	}
	switchAndWait(t, c)

	t.Run("data already there, server running", func(t *testing.T) {
		b := h.run(t, c.DataDir)
		want := "nothing restored (--if-not-exists): " + c.DataDir + " already holds a PostgreSQL " + strconv.Itoa(c.Major) + " cluster, and its postmaster.pid says a server may be running there"
		if b.code != 0 || !strings.Contains(b.stdout, want) {
			t.Fatalf("want exit 0 with %q, got %s", want, b)
		}
	})

	// A new machine: the data directory's parents do not exist, below a
	// directory of root's, so the files go to the postgres user.
	restored := data("new")
	tsDir := filepath.Join(host, "new", "tablespaces", "far")
	remap := bootHost{bin: bin, conf: conf, env: map[string]string{"PGKEEP_INITDB": initdb, "PGKEEP_RESTORE_ARGS": "--tablespace-map " + tsOID + "=" + tsDir}}
	t.Run("empty data directory, backup in the repository", func(t *testing.T) {
		b := remap.run(t, restored)
		if b.code != 0 || !strings.Contains(b.stdout, "restored backup ") || !strings.Contains(b.stdout, "owned by postgres:") {
			t.Fatalf("want the restore to run and say who owns the files, got %s", b)
		}
		for _, d := range []string{filepath.Dir(filepath.Dir(restored)), filepath.Dir(restored)} {
			fi, err := os.Stat(d)
			if err != nil {
				t.Fatal(err)
			}
			if uid, gid := ownerOf(fi); uid != pgUID || gid != pgGID {
				t.Errorf("parent %s created for %d:%d, want postgres", d, uid, gid)
			}
		}
		checkOwned(t, restored, pgUID, pgGID, 100)
		checkOwned(t, tsDir, pgUID, pgGID, 3)
		if fi, err := os.Lstat(filepath.Join(restored, "pg_tblspc", tsOID)); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			t.Fatalf("the tablespace link: %v %v", fi, err)
		}
		auto, err := os.ReadFile(filepath.Join(restored, "postgresql.auto.conf"))
		if err != nil {
			t.Fatal(err)
		}
		if want := "restore_command = '" + bin + " wal-fetch --config " + conf + " --repo=" + repo.URL; !strings.Contains(string(auto), want) {
			t.Fatalf("postgresql.auto.conf lacks %q:\n%s", want, auto)
		}
		r := pgtest.Adopt(t, restored, "")
		r.Start(t) // as postgres, which fetches the WAL with the conf above
		r.WaitPromoted(t, 3*time.Minute)
		if got := markers(t, r); got != seq(1, 20) {
			t.Fatalf("markers after the boot-time restore: %q", got)
		}
		if got := r.QueryString(t, "SELECT count(*)::text FROM far_rows"); got != "1000" {
			t.Fatalf("rows in the tablespace: %s", got)
		}
		r.Stop(t, "fast")
	})

	t.Run("data already there, a reboot", func(t *testing.T) {
		before := treeState(t, restored)
		b := h.run(t, restored)
		if b.code != 0 || !strings.Contains(b.stdout, "nothing restored (--if-not-exists): "+restored+" already holds a PostgreSQL") {
			t.Fatalf("want exit 0 saying the cluster is there, got %s", b)
		}
		if treeState(t, restored) != before {
			t.Fatal("a boot over an existing cluster changed its data directory")
		}
		r := pgtest.Adopt(t, restored, "")
		r.Start(t)
		if got := markers(t, r); got != seq(1, 20) {
			t.Fatalf("markers after a reboot: %q", got)
		}
		r.Stop(t, "fast")
	})

	// The repository cannot be read: the boot fails, and PGKEEP_INITDB
	// never makes an empty cluster over it.
	m := pgtest.StartMinIO(t)
	s3 := func(bucket string) []string {
		return []string{"repo = s3://" + bucket + "/cluster-a", "s3-endpoint = " + m.Endpoint, "s3-path-style = true",
			"s3-region = " + m.Region, "retry-timeout = 2s"}
	}
	creds := func(key, secret string) map[string]string {
		return map[string]string{"PGKEEP_INITDB": initdb, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
	}
	unreadable := []struct {
		name, want string
		conf       []string
		env        map[string]string
	}{
		{"file repository on a volume that is not mounted", "none can be created there",
			[]string{"repo = file://" + filepath.Join(host, "mnt", "backups", "repo")}, withInitdb},
		{"store not answering", "gave up after",
			[]string{"repo = s3://bucket/p", "s3-endpoint = http://127.0.0.1:" + strconv.Itoa(pgtest.FreePort(t)), "s3-path-style = true", "s3-region = us-east-1", "retry-timeout = 2s"},
			creds(m.AccessKey, m.SecretKey)},
		{"bucket missing", "does not exist", s3("no-such-bucket"), creds(m.AccessKey, m.SecretKey)},
		{"wrong credentials", "credentials", s3(m.Bucket), creds(m.AccessKey, "wrong-secret")},
		{"no credentials", "no AWS credentials", s3(m.Bucket), withInitdb},
	}
	for i, tc := range unreadable {
		t.Run("unreadable repository: "+tc.name, func(t *testing.T) {
			dir := data(fmt.Sprintf("unreadable%d", i))
			u := bootHost{bin: bin, conf: writeConf(t, etc, fmt.Sprintf("unreadable%d.conf", i), pgGID, tc.conf...), env: tc.env}
			b := u.run(t, dir)
			if b.code == 0 || !strings.Contains(b.stderr, tc.want) {
				t.Fatalf("want a failure with %q, got %s", tc.want, b)
			}
			if _, err := os.Stat(filepath.Dir(dir)); err == nil {
				t.Fatalf("a boot that could not read the repository wrote %s", filepath.Dir(dir))
			}
		})
	}

	t.Run("a directory that is not a cluster", func(t *testing.T) {
		dir := data("other")
		os.MkdirAll(filepath.Join(dir, "lost+found"), 0o700)
		before := treeState(t, dir)
		b := h.run(t, dir)
		if b.code != 3 || !strings.Contains(b.stderr, "is not a PostgreSQL cluster") {
			t.Fatalf("want exit 3 saying it is not a cluster, got %s", b)
		}
		if treeState(t, dir) != before {
			t.Fatal("a refused boot changed the directory")
		}
	})

	t.Run("no such owner", func(t *testing.T) {
		dir := data("noowner")
		o := bootHost{bin: bin, conf: conf, env: map[string]string{"PGKEEP_INITDB": initdb, "PGKEEP_RESTORE_ARGS": "--owner nosuchuser"}}
		b := o.run(t, dir)
		if b.code != 2 || !strings.Contains(b.stderr, `there is no user "nosuchuser"`) {
			t.Fatalf("want exit 2 naming the user, got %s", b)
		}
		if _, err := os.Stat(filepath.Dir(dir)); err == nil {
			t.Fatal("a refused owner wrote something")
		}
	})

	t.Run("config file postgres cannot read", func(t *testing.T) {
		dir := data("noread")
		private := writeConf(t, etc, "private.conf", 0, "repo = "+repo.URL)
		os.Chmod(private, 0o600)
		b := bootHost{bin: bin, conf: private, env: withInitdb}.run(t, dir)
		if b.code != 2 || !strings.Contains(b.stderr, "the config file its restore_command reads "+private) || !strings.Contains(b.stderr, "PostgreSQL will run as postgres") {
			t.Fatalf("want exit 2 naming the config file and the user, got %s", b)
		}
		if _, err := os.Stat(filepath.Dir(dir)); err == nil {
			t.Fatal("a refused restore wrote something")
		}
	})

	t.Run("not root, another owner", func(t *testing.T) {
		dir := filepath.Join(pgtest.TempDir(t, "asuser-"), "data")
		r := run(t, repo.Env, append([]string{"restore", "--pgdata", dir, "--owner", "root"}, repo.Flags()...)...)
		if r.code != 2 || !strings.Contains(r.stderr, "only root can give files to another user") {
			t.Fatalf("want exit 2: only root can chown, got %s", r)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Fatal("a refused restore wrote something")
		}
	})

	t.Run("--json", func(t *testing.T) {
		r := runAsMe(t, nil, "restore", "--config", conf, "--if-not-exists", "--if-backup-exists", "--json", "--pgdata", restored)
		if r.code != 0 || !strings.Contains(r.stdout, `"outcome": "skipped"`) || !strings.Contains(r.stdout, `"skipped": "cluster-exists"`) {
			t.Fatalf("want a skipped outcome in JSON, got %s", r)
		}
	})
}
