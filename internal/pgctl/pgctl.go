// Package pgctl runs PostgreSQL's own programs (initdb, pg_ctl, psql,
// pgbench) for pgkeep's demo and drills. PostgreSQL refuses to run as root,
// so when pgkeep runs as root these programs run as the postgres OS user.
package pgctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Runner runs PostgreSQL programs as one OS user: the server programs
// (initdb, pg_ctl, postgres) from BinDir, and client programs (psql,
// pgbench, pg_amcheck) from BinDir when it has them, else from ClientDir.
// Server builds without clients (such as those scripts/test-deps.sh
// installs) are paired with another release's clients that way; the
// clients of a newer release work against every older server.
type Runner struct {
	BinDir string
	// ClientDir holds client programs BinDir lacks; "" for none.
	ClientDir string
	// Major is the major version of the server programs in BinDir, 0 if
	// it could not be told.
	Major int
	// UID and GID to run as; -1 means the current user.
	UID, GID int
	// Home is HOME for the programs (psql wants one).
	Home string
}

// FindBinDir returns the directory of PostgreSQL's server programs:
// `pg_config --bindir` if it has initdb, else the newest
// /usr/lib/postgresql/N/bin.
func FindBinDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dir := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(dir, "initdb")); err == nil {
			return dir, nil
		}
	}
	if dirs := debianBinDirs("initdb"); len(dirs) > 0 {
		return dirs[0], nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("PostgreSQL server programs not found (install postgresql, e.g. apt-get install postgresql-15)")
}

// debianBinDirs returns the /usr/lib/postgresql/N/bin directories that
// hold program, newest major first.
func debianBinDirs(program string) []string {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + program)
	major := func(p string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
		return v
	}
	sort.Slice(matches, func(i, j int) bool { return major(matches[i]) > major(matches[j]) })
	dirs := make([]string, len(matches))
	for i, m := range matches {
		dirs[i] = filepath.Dir(m)
	}
	return dirs
}

// ServerMajor returns the major version of the postgres program in binDir
// ("postgres (PostgreSQL) 18.4" is 18).
func ServerMajor(binDir string) (int, error) {
	out, err := exec.Command(filepath.Join(binDir, "postgres"), "--version").Output()
	if err != nil {
		return 0, fmt.Errorf("running %s --version: %w", filepath.Join(binDir, "postgres"), err)
	}
	major, err := parseServerVersion(string(out))
	if err != nil {
		return 0, fmt.Errorf("%s --version: %w", filepath.Join(binDir, "postgres"), err)
	}
	return major, nil
}

// parseServerVersion reads the major version from `postgres --version`:
// "postgres (PostgreSQL) 18.4", "postgres (PostgreSQL) 15.14 (Debian
// 15.14-0+deb12u1)", "postgres (PostgreSQL) 19beta1". "9.6.24" reads as 9:
// before 10 the major had two numbers, but 9 is enough to tell that it is
// too old.
func parseServerVersion(out string) (int, error) {
	fields := strings.Fields(out)
	if len(fields) < 3 || fields[1] != "(PostgreSQL)" {
		return 0, fmt.Errorf("printed %q, not a PostgreSQL version", strings.TrimSpace(out))
	}
	v := fields[2]
	n := 0
	for n < len(v) && v[n] >= '0' && v[n] <= '9' {
		n++
	}
	major, err := strconv.Atoi(v[:n])
	if err != nil || major == 0 {
		return 0, fmt.Errorf("printed %q, not a PostgreSQL version", strings.TrimSpace(out))
	}
	return major, nil
}

// ErrNoServer is wrapped when no server programs of the wanted major
// version are found.
var ErrNoServer = errors.New("PostgreSQL server programs not found")

// FindServer returns the directory of the server programs (postgres,
// pg_ctl) of one major version: the first of dirs, then the places
// packages install them (/usr/lib/postgresql/N/bin on Debian and Ubuntu,
// /usr/pgsql-N/bin from the PGDG RPMs), then `pg_config --bindir` and
// PATH, that holds them with that major. Its error wraps ErrNoServer and
// names every place it looked.
func FindServer(major int, dirs ...string) (string, error) {
	candidates := append([]string(nil), dirs...)
	candidates = append(candidates, fmt.Sprintf("/usr/lib/postgresql/%d/bin", major), fmt.Sprintf("/usr/pgsql-%d/bin", major))
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		candidates = append(candidates, strings.TrimSpace(string(out)))
	}
	if p, err := exec.LookPath("postgres"); err == nil {
		candidates = append(candidates, filepath.Dir(p))
	}
	var looked []string
	seen := map[string]bool{}
	for _, dir := range candidates {
		if dir == "" || seen[dir] {
			continue
		}
		seen[dir] = true
		looked = append(looked, dir)
		if !isFile(filepath.Join(dir, "postgres")) || !isFile(filepath.Join(dir, "pg_ctl")) {
			continue
		}
		if m, err := ServerMajor(dir); err == nil && m == major {
			return dir, nil
		}
	}
	return "", fmt.Errorf("%w: no PostgreSQL %d server (postgres and pg_ctl) in %s", ErrNoServer, major, strings.Join(looked, ", "))
}

// FindClientDir returns a directory with PostgreSQL's client programs
// (psql, pgbench, pg_amcheck), for server builds that lack them: prefer if
// it has them, else the newest /usr/lib/postgresql/N/bin that does, else
// the directory of psql in PATH; "" if there is none.
func FindClientDir(prefer string) string {
	if prefer != "" && isFile(filepath.Join(prefer, "psql")) {
		return prefer
	}
	if dirs := debianBinDirs("psql"); len(dirs) > 0 {
		return dirs[0]
	}
	if p, err := exec.LookPath("psql"); err == nil {
		return filepath.Dir(p)
	}
	return ""
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// New returns a Runner for the default PostgreSQL (FindBinDir). As root it
// runs programs as the postgres user.
func New() (*Runner, error) {
	bin, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	return newRunner(bin)
}

// NewFor returns a Runner for the server programs of one major version
// (FindServer with dirs), with client programs from FindClientDir.
func NewFor(major int, dirs ...string) (*Runner, error) {
	bin, err := FindServer(major, dirs...)
	if err != nil {
		return nil, err
	}
	return newRunner(bin)
}

func newRunner(bin string) (*Runner, error) {
	r := &Runner{BinDir: bin, ClientDir: FindClientDir(bin), UID: -1, GID: -1, Home: os.Getenv("HOME")}
	r.Major, _ = ServerMajor(bin)
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, errors.New("running as root, and there is no postgres user to run PostgreSQL as")
		}
		r.UID, _ = strconv.Atoi(u.Uid)
		r.GID, _ = strconv.Atoi(u.Gid)
		r.Home = u.HomeDir
	}
	return r, nil
}

// Path returns where a program runs from: name itself when absolute, else
// BinDir, or ClientDir when only it has the program.
func (r *Runner) Path(name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	p := filepath.Join(r.BinDir, name)
	if r.ClientDir != "" && r.ClientDir != r.BinDir && !isFile(p) {
		if q := filepath.Join(r.ClientDir, name); isFile(q) {
			return q
		}
	}
	return p
}

// Command prepares a program (see Path) to run as the Runner's user.
func (r *Runner) Command(ctx context.Context, env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, r.Path(name), args...)
	cmd.Env = append(append(os.Environ(), "HOME="+r.Home), env...)
	if r.UID >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(r.UID), Gid: uint32(r.GID)}}
	}
	return cmd
}

// Run runs a program and returns its combined output; the error includes
// the output.
func (r *Runner) Run(ctx context.Context, env []string, name string, args ...string) (string, error) {
	cmd := r.Command(ctx, env, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// Chown gives path to the Runner's user (no-op when running as oneself).
func (r *Runner) Chown(path string) error {
	if r.UID < 0 {
		return nil
	}
	return os.Chown(path, r.UID, r.GID)
}

// ChownTree gives a whole tree to the Runner's user.
func (r *Runner) ChownTree(root string) error {
	if r.UID < 0 {
		return nil
	}
	return filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, r.UID, r.GID)
	})
}

// Cluster is a data directory managed with pg_ctl.
type Cluster struct {
	R       *Runner
	DataDir string
	Port    int
	Socket  string
	LogFile string
}

// Env returns the libpq environment for connecting to the cluster.
func (c *Cluster) Env() []string {
	return []string{"PGHOST=" + c.Socket, "PGPORT=" + strconv.Itoa(c.Port), "PGUSER=postgres",
		"PGDATABASE=postgres", "PGDATA=" + c.DataDir, "PGSSLMODE=disable"}
}

// ConnString returns a connection string for pgx.
func (c *Cluster) ConnString() string {
	return fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", c.Socket, c.Port)
}

// Start starts the server and waits until it accepts connections (or,
// during recovery, until pg_ctl -w returns).
func (c *Cluster) Start(ctx context.Context) error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=''", c.Port, c.Socket)
	_, err := c.R.Run(ctx, nil, "pg_ctl", "start", "-w", "-t", "300", "-D", c.DataDir, "-l", c.LogFile, "-o", opts)
	if err != nil {
		log, _ := os.ReadFile(c.LogFile)
		return fmt.Errorf("%w\nserver log:\n%s", err, tail(string(log), 30))
	}
	return nil
}

// Stop stops the server with mode fast or immediate.
func (c *Cluster) Stop(ctx context.Context, mode string) error {
	_, err := c.R.Run(ctx, nil, "pg_ctl", "stop", "-w", "-D", c.DataDir, "-m", mode)
	return err
}

// SQL runs one statement with psql and returns its unaligned output.
func (c *Cluster) SQL(ctx context.Context, sql string) (string, error) {
	out, err := c.R.Run(ctx, c.Env(), "psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql)
	return strings.TrimSpace(out), err
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// FreePort returns a TCP port that is free on 127.0.0.1 right now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitRecovered waits until the server accepts connections and is out of
// recovery, or, with pausedOK, has paused replay at a recovery target
// (recovery_target_action = pause). major picks how to ask: PostgreSQL 14
// added pg_get_wal_replay_pause_state(), whose 'paused' means paused
// indeed; before it, pg_is_wal_replay_paused() is all there is. The error
// after timeout carries the end of the server log.
func (c *Cluster) WaitRecovered(ctx context.Context, timeout time.Duration, major int, pausedOK bool) error {
	q := recoveryStateQuery(major)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		conn, err := pgx.Connect(ctx, c.ConnString())
		if err == nil {
			var rec, paused bool
			err = conn.QueryRow(ctx, q).Scan(&rec, &paused)
			conn.Close(ctx)
			if err == nil && (!rec || pausedOK && paused) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	log, _ := os.ReadFile(c.LogFile)
	return fmt.Errorf("the cluster did not finish recovery within %s; server log:\n%s", timeout, tail(string(log), 40))
}

// recoveryStateQuery asks whether the server is in recovery and whether
// replay is paused, as major can say it.
func recoveryStateQuery(major int) string {
	if major < 14 {
		return `SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END`
	}
	return `SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_get_wal_replay_pause_state() = 'paused' ELSE false END`
}
