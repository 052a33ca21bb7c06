package e2e

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgkeep/pgkeep/internal/config"
	"github.com/pgkeep/pgkeep/internal/pgtest"
)

const repoRoot = "../.."

// unitFile is a systemd unit file's settings: section, then key, then
// every value given (in order).
type unitFile map[string]map[string][]string

func readUnit(t *testing.T, path string) unitFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: bad line %q", path, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// has reports whether any value of section/key, split at blanks, is want.
func (u unitFile) has(section, key, want string) bool {
	for _, v := range u[section][key] {
		if slices.Contains(strings.Fields(v), want) {
			return true
		}
	}
	return false
}

// The units that contrib/systemd ships and the package installs, with the
// decisions each must keep.
var shippedUnits = []struct {
	file   string
	checks [][3]string // section, key, a value it must include
}{
	{"pgkeep-restore.service", [][3]string{
		{"Service", "Type", "oneshot"}, {"Service", "RemainAfterExit", "yes"}, {"Service", "TimeoutStartSec", "infinity"},
		{"Unit", "Before", "postgresql.service"}, {"Unit", "After", "network-online.target"}, {"Unit", "Wants", "network-online.target"},
		{"Install", "RequiredBy", "postgresql.service"}, {"Service", "EnvironmentFile", "/etc/pgkeep/pgkeep.env"},
		{"Service", "ExecStart", "--if-not-exists"}, {"Service", "ExecStart", "--if-backup-exists"}}},
	{"pgkeep-agent.service", [][3]string{
		{"Service", "User", "postgres"}, {"Service", "Restart", "on-failure"}, {"Unit", "After", "postgresql.service"},
		{"Service", "ExecStart", "agent"}, {"Service", "ExecStart", "/etc/pgkeep/pgkeep.conf"}, {"Install", "WantedBy", "multi-user.target"},
		{"Service", "ExecReload", "/bin/kill"}, {"Service", "ExecReload", "-HUP"}, {"Service", "ExecReload", "$MAINPID"}}},
	{"pgkeep-backup.service", [][3]string{{"Service", "User", "postgres"}, {"Service", "Type", "oneshot"}, {"Service", "ExecStart", "backup"}}},
	{"pgkeep-backup.timer", [][3]string{{"Timer", "Persistent", "true"}, {"Install", "WantedBy", "timers.target"}}},
	{"postgresql@.service.d/pgkeep-restore.conf", [][3]string{{"Unit", "After", "pgkeep-restore.service"}}},
}

// TestShippedFiles checks the units, pgkeep.conf and pgkeep.env as they
// are in the source tree (no server, no install; it runs under -short):
// each unit keeps its ordering and user, the commented pgkeep.conf parses
// to nothing as shipped and names every setting there is, and every
// variable the units read is described in pgkeep.env.
func TestShippedFiles(t *testing.T) {
	for _, su := range shippedUnits {
		u := readUnit(t, filepath.Join(contribDir, "systemd", su.file))
		for _, c := range su.checks {
			if !u.has(c[0], c[1], c[2]) {
				t.Errorf("%s: [%s] %s= does not include %s", su.file, c[0], c[1], c[2])
			}
		}
	}

	data, err := os.ReadFile(filepath.Join(repoRoot, "packaging", "pgkeep.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if vals, err := config.ParseFile(data); err != nil || len(vals) != 0 {
		t.Fatalf("the shipped pgkeep.conf must parse and set nothing: %v %v", vals, err)
	}
	example := regexp.MustCompile(`(?m)^#([a-z0-9-]+ = .*)$`)
	vals, err := config.ParseFile([]byte(example.ReplaceAllString(string(data), "$1")))
	if err != nil {
		t.Fatalf("pgkeep.conf's examples, uncommented: %v", err)
	}
	var names []string
	for _, s := range append(config.Settings(), config.AgentSettings()...) {
		names = append(names, s.Name)
		if _, ok := vals[s.Name]; !ok {
			t.Errorf("pgkeep.conf has no example of setting %s", s.Name)
		}
	}
	for k := range vals {
		if !slices.Contains(names, k) {
			t.Errorf("pgkeep.conf's example %q is not a setting", k)
		}
	}

	env, err := os.ReadFile(filepath.Join(repoRoot, "packaging", "pgkeep.env"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#?([A-Z][A-Z0-9_]*)=`).FindAllStringSubmatch(string(env), -1) {
		documented[m[1]] = true
	}
	used := regexp.MustCompile(`\$\$?\{?([A-Z][A-Z0-9_]*)`)
	for _, su := range shippedUnits {
		if !strings.HasSuffix(su.file, ".service") {
			continue
		}
		for _, line := range execStarts(t, filepath.Join(contribDir, "systemd", su.file)) {
			for _, m := range used.FindAllStringSubmatch(line, -1) {
				if !documented[m[1]] {
					t.Errorf("%s uses %s, which pgkeep.env does not describe", su.file, m[1])
				}
			}
		}
	}
}

// nfpmBinary is where scripts/nfpm.sh (run by scripts/test-deps.sh) puts
// nfpm: the tool cache, as for MinIO.
func nfpmBinary() string {
	cache := os.Getenv("PGKEEP_CACHE")
	if cache == "" {
		base := os.Getenv("XDG_CACHE_HOME")
		if base == "" {
			home, _ := os.UserHomeDir()
			base = filepath.Join(home, ".cache")
		}
		cache = filepath.Join(base, "pgkeep")
	}
	return filepath.Join(cache, "tools", "nfpm-v2.45.2", "nfpm")
}

// TestPackage builds the .deb with make package, installs it on this
// machine with dpkg -i (as root) and checks what an operator gets: the
// files and their permissions, pgkeep --version, systemd-analyze verify on
// every unit (no running systemd here: it checks each unit's syntax and
// keys, that its programs exist, and that what it requires can be
// loaded; with the Debian cluster's unit, that the drop-in loads), the
// config file readable by postgres, and the boot-time restore run from
// the installed unit: /usr/bin/pgkeep as root, restoring for a server that
// runs as postgres and fetches its WAL through the installed binary and
// config file. The package is purged afterwards.
func TestPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: not building or installing the package")
	}
	pgtest.Runner(t)
	pgtest.Require(t, "root", os.Geteuid() == 0, "dpkg -i needs root: run the tests as root")
	for _, tool := range []string{"dpkg", "dpkg-deb", "dpkg-query", "systemd-analyze", "make"} {
		_, err := exec.LookPath(tool)
		pgtest.Require(t, tool, err == nil, "run scripts/test-deps.sh (make test-deps)")
	}
	nfpm := nfpmBinary()
	_, err := os.Stat(nfpm)
	pgtest.Require(t, "nfpm", err == nil, "run scripts/test-deps.sh (make test-deps) to build it into "+filepath.Dir(nfpm))

	// One package test at a time on this machine.
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "pgkeep-package-test.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	sh := func(name string, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// dpkg, waiting while another dpkg or apt holds its lock (engineers
	// share these machines).
	dpkg := func(args ...string) ([]byte, error) {
		deadline := time.Now().Add(5 * time.Minute)
		for {
			out, err := exec.Command("dpkg", args...).CombinedOutput()
			if err == nil || !bytes.Contains(out, []byte("lock")) || time.Now().After(deadline) {
				return out, err
			}
			time.Sleep(2 * time.Second)
		}
	}
	if out, _ := exec.Command("dpkg-query", "-W", "-f", "${Status}", "pgkeep").Output(); strings.Contains(string(out), "installed") {
		t.Fatalf("a pgkeep package is already installed on this machine (%s): the test would replace it, so it stops here", out)
	}

	// make package, with the version the Makefile derives.
	dist := t.TempDir()
	began := time.Now()
	sh("make", "-C", repoRoot, "package", "DIST="+dist, "NFPM="+nfpm)
	debs, _ := filepath.Glob(filepath.Join(dist, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make package made %v in %s", debs, dist)
	}
	deb := debs[0]
	t.Logf("built %s in %s", filepath.Base(deb), time.Since(began).Round(time.Millisecond))
	version := strings.TrimSpace(sh("dpkg-deb", "-f", deb, "Version"))
	sh("dpkg", "--validate-version", version)
	arch := strings.TrimSpace(sh("dpkg", "--print-architecture"))
	if want := "pgkeep_" + version + "_" + arch + ".deb"; filepath.Base(deb) != want {
		t.Fatalf("package file %s, want %s", filepath.Base(deb), want)
	}
	if got := strings.TrimSpace(sh("dpkg-deb", "-f", deb, "Package")); got != "pgkeep" {
		t.Fatalf("package name %q", got)
	}
	conffiles := sh("dpkg-deb", "-I", deb, "conffiles")
	for _, f := range []string{"/etc/pgkeep/pgkeep.conf", "/etc/pgkeep/pgkeep.env"} {
		if !strings.Contains(conffiles, f) {
			t.Fatalf("%s is not a conffile: %s", f, conffiles)
		}
	}

	out, err := dpkg("-i", deb)
	t.Cleanup(func() {
		if out, err := dpkg("--purge", "pgkeep"); err != nil {
			t.Errorf("dpkg --purge pgkeep: %v\n%s", err, out)
		}
		for _, p := range []string{"/usr/bin/pgkeep", "/etc/pgkeep", "/lib/systemd/system/pgkeep-restore.service"} {
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s is still there after dpkg --purge", p)
			}
		}
	})
	if err != nil {
		t.Fatalf("dpkg -i %s: %v\n%s", deb, err, out)
	}

	if got, want := strings.TrimSpace(sh("/usr/bin/pgkeep", "--version")), "pgkeep version "+version; got != want {
		t.Fatalf("pgkeep --version says %q, want %q", got, want)
	}

	pg, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	pgGID, _ := strconv.Atoi(pg.Gid)
	units := "/lib/systemd/system"
	files := []struct {
		path     string
		mode     os.FileMode
		uid, gid int
		source   string // what it must be a copy of, "" to skip
	}{
		{"/usr/bin/pgkeep", 0o755, 0, 0, ""},
		{"/etc/pgkeep", os.ModeDir | 0o755, 0, 0, ""},
		// PostgreSQL's restore_command reads it as postgres.
		{"/etc/pgkeep/pgkeep.conf", 0o640, 0, pgGID, "packaging/pgkeep.conf"},
		// Read by systemd, as root.
		{"/etc/pgkeep/pgkeep.env", 0o640, 0, 0, "packaging/pgkeep.env"},
		{"/usr/share/doc/pgkeep/examples/cloud-init-user-data.yaml", 0o644, 0, 0, "contrib/cloud-init/user-data.yaml"},
	}
	for _, su := range shippedUnits {
		files = append(files, struct {
			path     string
			mode     os.FileMode
			uid, gid int
			source   string
		}{filepath.Join(units, su.file), 0o644, 0, 0, "contrib/systemd/" + su.file})
	}
	for _, f := range files {
		fi, err := os.Lstat(f.path)
		if err != nil {
			t.Errorf("the package did not install %s: %v", f.path, err)
			continue
		}
		uid, gid := ownerOf(fi)
		if fi.Mode() != f.mode || uid != f.uid || gid != f.gid {
			t.Errorf("%s: %v %d:%d, want %v %d:%d", f.path, fi.Mode(), uid, gid, f.mode, f.uid, f.gid)
		}
		if f.source != "" {
			got, _ := os.ReadFile(f.path)
			want, _ := os.ReadFile(filepath.Join(repoRoot, f.source))
			if !bytes.Equal(got, want) {
				t.Errorf("%s is not %s", f.path, f.source)
			}
		}
	}
	if got := sh("dpkg-query", "-W", "-f", "${Conffiles}", "pgkeep"); !strings.Contains(got, "/etc/pgkeep/pgkeep.conf") {
		t.Errorf("dpkg does not list pgkeep.conf as a conffile: %s", got)
	}

	// systemd-analyze verify: a warning (an unknown key, say) leaves its
	// exit status 0, so any output fails too.
	verify := []string{}
	for _, su := range shippedUnits {
		if !strings.Contains(su.file, "/") {
			verify = append(verify, filepath.Join(units, su.file))
		}
	}
	// Debian's cluster unit, with the drop-in.
	if _, err := os.Stat(filepath.Join(units, "postgresql@.service")); err == nil {
		verify = append(verify, "postgresql@"+strconv.Itoa(pgtest.Runner(t).Major)+"-main.service")
	}
	sort.Strings(verify)
	for _, u := range verify {
		out, err := exec.Command("systemd-analyze", "verify", u).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", u, err, out)
		}
	}

	// The installed config file, as postgres: the default config is read
	// (it would be a permission error otherwise).
	newRepo := filepath.Join(pgtest.TempDir(t, "pkg-new-"), "repo")
	asPG := pgtest.Command(context.Background(), "/usr/bin/pgkeep", "restore", "--if-not-exists", "--if-backup-exists",
		"--repo", "file://"+newRepo, "--pgdata", filepath.Join(pgtest.TempDir(t, "pkg-data-"), "data"))
	if out, err := asPG.CombinedOutput(); err != nil || !strings.Contains(string(out), "there is no pgkeep repository") {
		t.Fatalf("the installed pgkeep as postgres, with the installed config file: %v\n%s", err, out)
	}

	// The boot-time restore from the installed unit, as systemd would run
	// it: /usr/bin/pgkeep as root; the repository is given as a flag, as
	// the shipped pgkeep.conf sets nothing.
	repo := fileRepo(t)
	c := archivingCluster(t, repo, nil)
	c.Exec(t, "CREATE TABLE markers (id int PRIMARY KEY)")
	c.Exec(t, "INSERT INTO markers SELECT generate_series(1, 5)")
	backup(t, c, repo)
	c.Exec(t, "INSERT INTO markers SELECT generate_series(6, 10)")
	switchAndWait(t, c)
	pgdata := filepath.Join(pgtest.TempDir(t, "pkg-boot-"), "main")
	b := bootHost{bin: "/usr/bin/pgkeep", conf: config.DefaultFile, unit: filepath.Join(units, "pgkeep-restore.service"),
		env: map[string]string{"PGKEEP_RESTORE_ARGS": "--repo " + repo.URL}}.run(t, pgdata)
	if b.code != 0 || !strings.Contains(b.stdout, "owned by postgres:") {
		t.Fatalf("the installed unit's restore: %s", b)
	}
	auto, err := os.ReadFile(filepath.Join(pgdata, "postgresql.auto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "restore_command = '/usr/bin/pgkeep wal-fetch --config /etc/pgkeep/pgkeep.conf --repo=" + repo.URL + " %f %p'"; !strings.Contains(string(auto), want) {
		t.Fatalf("postgresql.auto.conf lacks %q:\n%s", want, auto)
	}
	r := pgtest.Adopt(t, pgdata, "")
	r.Start(t)
	r.WaitPromoted(t, 3*time.Minute)
	if got := markers(t, r); got != seq(1, 10) {
		t.Fatalf("markers after a restore by the installed package: %q", got)
	}
	r.Stop(t, "fast")
	c.Stop(t, "fast")
}
