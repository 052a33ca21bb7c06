package pgstat

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// What the look-ahead pusher needs to know before it marks a segment
// archived itself (renames archive_status/NAME.ready to NAME.done, as
// PostgreSQL's archiver does after a successful archive_command): that
// doing so only skips a call that would have been pgkeep wal-push alone.
// A command such as "pgkeep wal-push %p && cp %p /standby/%f" must still
// run for every segment, and a pusher started by hand for another
// repository must never vouch for the server's own.

// SoleWalPush reports whether command, an archive_command as PostgreSQL
// holds it (%p not yet substituted), is one simple command that runs
// pgkeep wal-push: optionally after "exec", "env" or variable
// assignments, with no lists, pipes, redirections, substitutions or
// subshells. exe is the base name this binary runs under (besides
// "pgkeep"). Anything it cannot parse with certainty is not sole.
func SoleWalPush(command, exe string) bool {
	_, _, ok := parseWalPush(command, exe)
	return ok
}

// RunsAs reports whether command (one SoleWalPush accepts) is the command
// that ran the wal-push call whose arguments were callArgs (os.Args) in an
// environment env: the same words once PostgreSQL has put the file's path
// in for %p (and its name for %f), and the same values for the variables
// the command assigns. A pusher started by that call marks segments only
// while the server's command is that one: another command, even another
// sole wal-push, may name another repository.
func RunsAs(command, exe string, callArgs []string, env func(string) string) bool {
	assign, argv, ok := parseWalPush(command, exe)
	if !ok || len(argv) != len(callArgs) || filepath.Base(argv[0]) != filepath.Base(callArgs[0]) {
		return false
	}
	for _, a := range assign {
		name, value, _ := strings.Cut(a, "=")
		if env(name) != value {
			return false
		}
	}
	path := ""
	for i, w := range argv {
		if pre, post, ok := strings.Cut(w, "%p"); ok && !strings.ContainsAny(pre+post, "%") {
			arg := callArgs[i]
			if len(arg) < len(pre)+len(post) || !strings.HasPrefix(arg, pre) || !strings.HasSuffix(arg, post) {
				return false
			}
			path = arg[len(pre) : len(arg)-len(post)]
			break
		}
	}
	if path == "" {
		return false
	}
	for i := 1; i < len(argv); i++ {
		if substitute(argv[i], path) != callArgs[i] {
			return false
		}
	}
	return true
}

// substitute does what PostgreSQL does to archive_command: %p becomes the
// path, %f the file name, %% a percent sign, left to right.
func substitute(w, path string) string {
	var b strings.Builder
	for i := 0; i < len(w); i++ {
		if w[i] == '%' && i+1 < len(w) {
			switch w[i+1] {
			case 'p':
				b.WriteString(path)
				i++
				continue
			case 'f':
				b.WriteString(filepath.Base(path))
				i++
				continue
			case '%':
				b.WriteByte('%')
				i++
				continue
			}
		}
		b.WriteByte(w[i])
	}
	return b.String()
}

// parseWalPush splits a sole wal-push command into its variable
// assignments and its words from the program on.
func parseWalPush(command, exe string) (assign, argv []string, ok bool) {
	if strings.ContainsAny(command, ";&|<>()`$\\\n\r{}") {
		return nil, nil, false
	}
	words, ok := shellWords(command)
	if !ok {
		return nil, nil, false
	}
	i := 0
	if i < len(words) && words[i] == "exec" {
		i++
	}
	if i < len(words) && filepath.Base(words[i]) == "env" {
		i++
		if i < len(words) && strings.HasPrefix(words[i], "-") {
			return nil, nil, false // env's options change more than the environment
		}
	}
	for i < len(words) && isAssignment(words[i]) {
		assign = append(assign, words[i])
		i++
	}
	if i+1 >= len(words) {
		return nil, nil, false
	}
	if prog := filepath.Base(words[i]); prog != "pgkeep" && prog != exe {
		return nil, nil, false
	}
	if words[i+1] != "wal-push" {
		return nil, nil, false
	}
	for _, w := range words[i+2:] {
		if strings.Contains(w, "%p") {
			return assign, words[i:], true
		}
	}
	return nil, nil, false
}

// shellWords splits s into words at blanks, honouring single and double
// quotes (s holds no backslashes or dollars by then, so quotes only group).
func shellWords(s string) ([]string, bool) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, false
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, true
}

// isAssignment: NAME=value, as a shell reads it before a command.
func isAssignment(w string) bool {
	name, _, ok := strings.Cut(w, "=")
	if !ok || name == "" {
		return false
	}
	for i, r := range name {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// ArchiverParent returns the pid of PostgreSQL's archiver when it started
// this process as its archive_command: the process's parent, or its
// parent's parent (the shell PostgreSQL runs the command in), has a title
// that names the archiver ("postgres: archiver ..."). It returns 0
// otherwise, and where /proc does not tell.
func ArchiverParent() int {
	pid := os.Getppid()
	for range 2 {
		if pid <= 1 {
			return 0
		}
		title, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			return 0
		}
		if t := string(title); strings.HasPrefix(t, "postgres:") && strings.Contains(t, "archiver") {
			return pid
		}
		if pid, err = parentOf(pid); err != nil {
			return 0
		}
	}
	return 0
}

// parentOf reads a process's parent from /proc/PID/stat (the field after
// the parenthesised command name, which may itself hold spaces).
func parentOf(pid int) (int, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("unexpected /proc stat format")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, errors.New("unexpected /proc stat format")
	}
	return strconv.Atoi(f[1])
}

// CommandWatch holds a connection to the local server and the
// archive_command it had when the watch began.
type CommandWatch struct {
	conn *pgx.Conn
	want string
	ok   bool
}

// WatchArchiveCommand connects to the server running on pgdata through
// the Unix socket its postmaster.pid names (as this OS user, with the
// libpq environment's password settings), and succeeds only when the
// server's archive_command is one that SoleWalPush accepts, no
// archive_library is set, and the command is the one that ran the call
// with callArgs (see RunsAs; this process's environment is the call's).
func WatchArchiveCommand(ctx context.Context, pgdata, exe string, callArgs []string) (*CommandWatch, error) {
	sock, port, err := socketOf(pgdata)
	if err != nil {
		return nil, err
	}
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d dbname=postgres application_name=pgkeep-wal-push-ahead", sock, port))
	if err != nil {
		return nil, fmt.Errorf("connection settings: %w", err)
	}
	if d := os.Getenv("PGDATABASE"); d != "" {
		cfg.Database = d
	}
	cfg.ConnectTimeout = 3 * time.Second
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, cfg)
	if err != nil && os.Getenv("PGUSER") == "" && cfg.User != "postgres" {
		// The OS user's name is the usual superuser's, but a cluster made
		// with initdb -U postgres by another OS user has only postgres.
		cfg.User = "postgres"
		conn, err = pgx.ConnectConfig(cctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("connecting to the server on %s: %w", pgdata, err)
	}
	w := &CommandWatch{conn: conn}
	cmd, err := w.read(ctx)
	if err != nil {
		w.Close()
		return nil, err
	}
	if !SoleWalPush(cmd, exe) {
		w.Close()
		return nil, fmt.Errorf("archive_command %q is not pgkeep wal-push alone", cmd)
	}
	if !RunsAs(cmd, exe, callArgs, os.Getenv) {
		w.Close()
		return nil, fmt.Errorf("archive_command %q is not the command of the call that started this pusher", cmd)
	}
	w.want, w.ok = cmd, true
	return w, nil
}

func (w *CommandWatch) read(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var cmd, lib string
	if err := w.conn.QueryRow(ctx, `SELECT current_setting('archive_command'), coalesce(current_setting('archive_library', true), '')`).Scan(&cmd, &lib); err != nil {
		return "", fmt.Errorf("reading archive_command: %w", err)
	}
	if lib != "" {
		return "", fmt.Errorf("archive_library %q is set", lib)
	}
	return cmd, nil
}

// Unchanged reports whether the server still has the archive_command the
// watch began with. Once it reports false (a change, a lost connection)
// it always does.
func (w *CommandWatch) Unchanged(ctx context.Context) bool {
	if w == nil || !w.ok {
		return false
	}
	if cmd, err := w.read(ctx); err != nil || cmd != w.want {
		w.ok = false
	}
	return w.ok
}

// Close closes the connection.
func (w *CommandWatch) Close() {
	if w != nil && w.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		w.conn.Close(ctx)
	}
}

// socketOf reads the Unix socket directory and port of the server running
// on pgdata from its postmaster.pid (lines 4 and 5).
func socketOf(pgdata string) (string, int, error) {
	f, err := os.Open(filepath.Join(pgdata, "postmaster.pid"))
	if err != nil {
		return "", 0, fmt.Errorf("no running server found: %w", err)
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() && len(lines) < 5 {
		lines = append(lines, strings.TrimSpace(sc.Text()))
	}
	if len(lines) < 5 || lines[4] == "" {
		return "", 0, errors.New("postmaster.pid names no Unix socket")
	}
	port, err := strconv.Atoi(lines[3])
	if err != nil {
		return "", 0, fmt.Errorf("postmaster.pid: port %q: %w", lines[3], err)
	}
	return lines[4], port, nil
}
