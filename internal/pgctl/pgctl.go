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
)

// Runner runs PostgreSQL programs from one bin directory as one OS user.
type Runner struct {
	BinDir string
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
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(matches, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(matches[j]))))
		return vi > vj
	})
	if len(matches) > 0 {
		return filepath.Dir(matches[0]), nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("PostgreSQL server programs not found (install postgresql, e.g. apt-get install postgresql-15)")
}

// New returns a Runner. As root it runs programs as the postgres user.
func New() (*Runner, error) {
	bin, err := FindBinDir()
	if err != nil {
		return nil, err
	}
	r := &Runner{BinDir: bin, UID: -1, GID: -1, Home: os.Getenv("HOME")}
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

// AsOther reports whether programs run as another user than pgkeep.
func (r *Runner) AsOther() bool { return r.UID >= 0 }

// Command prepares a program from BinDir (or an absolute path) to run as
// the Runner's user.
func (r *Runner) Command(ctx context.Context, env []string, name string, args ...string) *exec.Cmd {
	path := name
	if !filepath.IsAbs(name) {
		path = filepath.Join(r.BinDir, name)
	}
	cmd := exec.CommandContext(ctx, path, args...)
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

// Tail returns the last n lines of s.
func Tail(s string, n int) string { return tail(s, n) }
