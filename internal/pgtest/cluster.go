// Package pgtest starts real PostgreSQL clusters and a real MinIO for
// pgkeep's tests. When the tests run as root, PostgreSQL runs as the
// postgres OS user, and every directory it needs is given to that user.
//
// Clusters run the default PostgreSQL (Debian's 15 on the project's
// machines) unless Options.Major asks for another major; the server
// programs of the others are those scripts/test-deps.sh installs under
// InstallRoot, and the client programs (psql, pgbench, pg_amcheck) stay
// the default's.
//
// Rule: when CI=true, a missing PostgreSQL or MinIO fails the test; else
// it skips it.
package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgkeep/pgkeep/internal/pgcontrol"
	"github.com/pgkeep/pgkeep/internal/pgctl"
)

// Require fails (CI=true) or skips the test when ok is false.
func Require(t testing.TB, what string, ok bool, hint string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing (%s); CI=true, so this fails instead of skipping", what, hint)
	}
	t.Skipf("%s is missing (%s)", what, hint)
}

var (
	runnerOnce sync.Once
	runner     *pgctl.Runner
	runnerErr  error

	majorMu      sync.Mutex
	majorRunners = map[int]*majorRunner{}
)

type majorRunner struct {
	once sync.Once
	r    *pgctl.Runner
	err  error
}

func defaultRunner() (*pgctl.Runner, error) {
	runnerOnce.Do(func() { runner, runnerErr = pgctl.New() })
	return runner, runnerErr
}

// skipShort skips a test that needs a server in -short mode (make unit).
func skipShort(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("-short: not starting %s", what)
	}
}

// Runner returns the runner that executes the default PostgreSQL's
// programs (as postgres when root). In -short mode it skips the test.
func Runner(t testing.TB) *pgctl.Runner {
	t.Helper()
	skipShort(t, "PostgreSQL")
	r, err := defaultRunner()
	Require(t, "PostgreSQL", err == nil, fmt.Sprint(err, "; run scripts/test-deps.sh"))
	return r
}

// InstallRoot is where scripts/test-deps.sh installs the server programs
// of each major (InstallRoot/N/bin), by the same rule: $PGKEEP_PG_ROOT if
// set; as root /var/cache/pgkeep/pg, which the postgres OS user can read
// (it cannot enter /root); else the user's cache, $PGKEEP_CACHE/pg or
// $XDG_CACHE_HOME/pgkeep/pg or ~/.cache/pgkeep/pg.
func InstallRoot() string {
	if dir := os.Getenv("PGKEEP_PG_ROOT"); dir != "" {
		return dir
	}
	if os.Geteuid() == 0 {
		return "/var/cache/pgkeep/pg"
	}
	if dir := os.Getenv("PGKEEP_CACHE"); dir != "" {
		return filepath.Join(dir, "pg")
	}
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, _ := os.UserHomeDir()
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "pgkeep", "pg")
}

// RunnerFor returns the runner for the server programs of one major
// version: the default PostgreSQL's if it is that major, else those under
// InstallRoot (or the places pgctl.FindServer knows). Client programs
// come from the newest Debian PostgreSQL (pgctl.FindClientDir).
func RunnerFor(t testing.TB, major int) *pgctl.Runner {
	t.Helper()
	skipShort(t, "PostgreSQL")
	if major == 0 {
		return Runner(t)
	}
	if r, err := defaultRunner(); err == nil && r.Major == major {
		return r
	}
	majorMu.Lock()
	e := majorRunners[major]
	if e == nil {
		e = &majorRunner{}
		majorRunners[major] = e
	}
	majorMu.Unlock()
	e.once.Do(func() {
		e.r, e.err = pgctl.NewFor(major, filepath.Join(InstallRoot(), strconv.Itoa(major), "bin"))
	})
	Require(t, fmt.Sprintf("PostgreSQL %d", major), e.err == nil, fmt.Sprint(e.err, "; run scripts/test-deps.sh (make test-deps) to install it"))
	return e.r
}

// BinDir returns the default PostgreSQL's server program directory.
func BinDir(t testing.TB) string { return Runner(t).BinDir }

// BinDirFor returns the server program directory of one major version.
func BinDirFor(t testing.TB, major int) string { return RunnerFor(t, major).BinDir }

// Command prepares a program to run as the database OS user, with the
// environment of the test process plus a HOME that user can use.
func Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	r, err := defaultRunner()
	if err != nil {
		// No PostgreSQL: still run the program as ourselves.
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = os.Environ()
		return cmd
	}
	return r.Command(ctx, nil, name, args...)
}

// TempDir makes a temp directory owned by the database OS user, removed at
// cleanup. Its parents are world-traversable so that user can reach it.
func TempDir(t testing.TB, pattern string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	if err := Runner(t).Chown(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// FreePort returns a TCP port free on 127.0.0.1 right now.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Options configures NewCluster.
type Options struct {
	Major        int               // PostgreSQL major version; 0: the default PostgreSQL
	Checksums    *bool             // default true
	WalSegSizeMB int               // 0: PostgreSQL's default (16)
	Conf         map[string]string // appended to postgresql.conf
}

// Cluster is a test cluster.
type Cluster struct {
	DataDir   string
	SocketDir string
	Port      int
	BinDir    string
	Major     int // of the server programs in BinDir
	pg        *pgctl.Cluster
}

// NewCluster runs initdb in a new temp directory; the cluster is not
// started. Cleanup stops it (immediate) and removes everything.
func NewCluster(t testing.TB, opts Options) *Cluster {
	t.Helper()
	r := RunnerFor(t, opts.Major)
	base := TempDir(t, "pgk-")
	c := newCluster(t, r, filepath.Join(base, "data"), base)
	args := []string{"-D", c.DataDir, "--auth=trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync"}
	switch {
	case opts.Checksums == nil || *opts.Checksums:
		args = append(args, "--data-checksums")
	case r.Major >= 18:
		// initdb turns data checksums on by default since PostgreSQL 18
		// (initdb.c, data_checksums = true); --no-data-checksums is new
		// in 18 too.
		args = append(args, "--no-data-checksums")
	}
	if opts.WalSegSizeMB > 0 {
		args = append(args, "--wal-segsize", strconv.Itoa(opts.WalSegSizeMB))
	}
	if _, err := r.Run(context.Background(), nil, "initdb", args...); err != nil {
		t.Fatal(err)
	}
	conf := map[string]string{"shared_buffers": "64MB", "fsync": "on", "max_wal_senders": "10", "wal_level": "replica", "logging_collector": "off"}
	for k, v := range opts.Conf {
		conf[k] = v
	}
	c.SetConf(t, conf)
	return c
}

func newCluster(t testing.TB, r *pgctl.Runner, dataDir, base string) *Cluster {
	sock, err := os.MkdirTemp("", "pgs-") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sock) })
	os.Chmod(sock, 0o755)
	r.Chown(sock)
	port := FreePort(t)
	c := &Cluster{DataDir: dataDir, SocketDir: sock, Port: port, BinDir: r.BinDir, Major: r.Major,
		pg: &pgctl.Cluster{R: r, DataDir: dataDir, Port: port, Socket: sock, LogFile: filepath.Join(base, "server.log")}}
	t.Cleanup(func() {
		if c.Running() {
			c.pg.Stop(context.Background(), "immediate")
		}
	})
	return c
}

// Adopt wraps a data directory made elsewhere (by a restore) so it can be
// started on a new port and socket, without changing its configuration.
// It runs the server programs of the directory's major version (from
// PG_VERSION); binDir, when not empty, must hold that major's.
func Adopt(t testing.TB, dataDir, binDir string) *Cluster {
	t.Helper()
	major, err := pgcontrol.ReadVersionFile(dataDir)
	if err != nil {
		t.Fatalf("adopting %s: %v", dataDir, err)
	}
	r := RunnerFor(t, major)
	if binDir != "" && binDir != r.BinDir {
		if m, err := pgctl.ServerMajor(binDir); err != nil || m != major {
			t.Fatalf("adopting %s (PostgreSQL %d) with the server programs in %s (PostgreSQL %d, %v)", dataDir, major, binDir, m, err)
		}
	}
	base := TempDir(t, "pgk-adopt-")
	return newCluster(t, r, dataDir, base)
}

// Start starts the server and waits for pg_ctl -w.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := c.pg.Start(ctx); err != nil {
		t.Fatal(err)
	}
}

// Stop stops the server: "fast", "immediate" or "smart".
func (c *Cluster) Stop(t testing.TB, mode string) {
	t.Helper()
	if err := c.pg.Stop(context.Background(), mode); err != nil {
		t.Fatal(err)
	}
}

// Running reports whether postmaster.pid exists.
func (c *Cluster) Running() bool {
	_, err := os.Stat(filepath.Join(c.DataDir, "postmaster.pid"))
	return err == nil
}

// SetConf appends settings to postgresql.conf.
func (c *Cluster) SetConf(t testing.TB, settings map[string]string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(c.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for k, v := range settings {
		fmt.Fprintf(f, "%s = '%s'\n", k, strings.ReplaceAll(v, "'", "''"))
	}
}

// Reload makes the server reread its configuration.
func (c *Cluster) Reload(t testing.TB) {
	t.Helper()
	c.Exec(t, "SELECT pg_reload_conf()")
}

// Env returns the libpq environment for the cluster.
func (c *Cluster) Env() []string { return c.pg.Env() }

// Command prepares a PostgreSQL program (a server program of the
// cluster's major, or a client program) to run as the database OS user
// against the cluster.
func (c *Cluster) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return c.pg.R.Command(ctx, c.Env(), name, args...)
}

// ConnString returns a pgx connection string.
func (c *Cluster) ConnString() string { return c.pg.ConnString() }

func (c *Cluster) connect(t testing.TB) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), c.ConnString())
	if err != nil {
		t.Fatalf("connecting to the test cluster: %v\nserver log:\n%s", err, c.Log())
	}
	return conn
}

// Exec runs a statement.
func (c *Cluster) Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	conn := c.connect(t)
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// QueryString returns the first column of the first row; the query must
// produce text (cast with ::text).
func (c *Cluster) QueryString(t testing.TB, sql string, args ...any) string {
	t.Helper()
	conn := c.connect(t)
	defer conn.Close(context.Background())
	var s *string
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if s == nil {
		return ""
	}
	return *s
}

// Log returns the server log.
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(c.pg.LogFile)
	return string(b)
}

// WaitPromoted waits until the server accepts connections and is out of
// recovery.
func (c *Cluster) WaitPromoted(t testing.TB, timeout time.Duration) {
	t.Helper()
	if err := c.pg.WaitRecovered(context.Background(), timeout, c.Major, false); err != nil {
		t.Fatal(err)
	}
}

// Pgbench runs pgbench against c and returns its output.
func Pgbench(t testing.TB, c *Cluster, args ...string) string {
	t.Helper()
	out, err := c.pg.R.Run(context.Background(), c.Env(), "pgbench", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TryStart starts the server like Start, but returns pg_ctl's error instead
// of failing the test: for a server that is expected not to come up.
func (c *Cluster) TryStart(ctx context.Context) error { return c.pg.Start(ctx) }
