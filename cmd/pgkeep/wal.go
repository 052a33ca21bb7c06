package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgkeep/pgkeep/internal/config"
	"github.com/pgkeep/pgkeep/internal/pgstat"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/walarchive"
)

// shortLived tunes the runtime for a process that handles one file and
// exits (wal-push, wal-fetch): no garbage collection, whose cycles and
// goroutine preemptions cost more than the few tens of MiB it would
// reclaim, unless the heap nears 256 MiB.
func shortLived() {
	debug.SetGCPercent(-1)
	debug.SetMemoryLimit(256 << 20)
}

func (a *app) newWalPushCmd() *cobra.Command {
	var pgdata string
	var verbose bool
	var lookAhead int
	var markDone bool
	cmd := &cobra.Command{
		Use:   "wal-push PATH",
		Short: "Archive one WAL segment or history file (for archive_command)",
		Long: `Archive one WAL file into the repository. Set it up in postgresql.conf:

  archive_mode = on
  archive_command = 'pgkeep wal-push %p'

with the repository in PGKEEP_REPO (in the server's environment) or in the
config file. wal-push returns success only once the file is durably stored.

Pushing a file that is already archived with identical content succeeds, so
PostgreSQL can safely retry. A different file under an archived name is
refused and nothing is overwritten; so is a file from another cluster than
the one the repository belongs to. Segments, .partial segments, .backup and
.history files are all accepted.

When PostgreSQL has a backlog, wal-push uploads the ready segments after
its own in the background (--look-ahead). When archive_command is this
wal-push alone, that background upload also marks the segments it stored
archived (archive_status/NAME.done, as PostgreSQL does after a successful
call), so PostgreSQL starts no call for them; with anything else in the
command (say "... && cp %p /standby/%f"), every segment still gets its call.
--mark-done=false turns the marking off.`,
		Example: `  pgkeep wal-push --repo s3://bucket/prod pg_wal/000000010000000000000001`,
		Args:    exactArgs(1, "the path of one WAL file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			shortLived()
			cfg, err := a.loadConfig(cmd)
			if err != nil {
				return err
			}
			walDir := ""
			if d := filepath.Dir(absPath(args[0])); filepath.Base(d) == "pg_wal" {
				walDir = d
			}
			if lookAhead > 0 && walarchive.WaitPushed(args[0], repoTag(cfg), 5*time.Second) {
				// A look-ahead upload stored this very file in this
				// repository already.
				if walDir != "" {
					pgstat.ClearPushFailure(walDir)
				}
				return nil
			}
			r, err := a.openRepoWith(cmd, cfg)
			if err != nil {
				return err
			}
			if pgdata == "" {
				pgdata = a.env("PGDATA")
			}
			opts := walarchive.PushOptions{PGData: pgdata}
			if walDir != "" {
				opts.IdentityCache = walarchive.IdentityCachePath(walDir, repoTag(cfg))
			}
			if lookAhead > 0 {
				opts.StartAhead = func(walDir, after string) {
					// Only a call PostgreSQL's archiver made lets the pusher
					// mark segments archived (which it then does only while
					// archive_command is wal-push alone): one run by hand may
					// name another repository than the server archives to.
					archiver := 0
					if markDone {
						archiver = pgstat.ArchiverParent()
					}
					startPushAhead(cfg, walDir, after, lookAhead, archiver)
				}
			}
			res, err := walarchive.Push(cmd.Context(), r, args[0], opts)
			if walDir != "" {
				// For backup and status: why archiving stalls, without the
				// server log.
				if err != nil {
					pgstat.RecordPushFailure(walDir, filepath.Base(args[0]), err)
				} else {
					pgstat.ClearPushFailure(walDir)
				}
			}
			if err != nil {
				return err
			}
			if res.SummaryErr != nil {
				// The segment is archived; only the next incremental
				// backup reads more (it says so too).
				fmt.Fprintf(a.stderr, "pgkeep: WARNING: %s archived, but %v; the next incremental backup will compare files instead\n", res.Name, res.SummaryErr)
			}
			if verbose {
				state := "archived"
				if res.Existed {
					state = "already archived (identical)"
				}
				fmt.Fprintf(a.stderr, "pgkeep: %s %s: %d bytes stored as %d\n", res.Name, state, res.Size, res.Stored)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&pgdata, "pgdata", "", "data directory, to read pg_control (default $PGDATA, else the directory above pg_wal)")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "report what was archived")
	cmd.Flags().IntVar(&lookAhead, "look-ahead", 4, "when PostgreSQL has a backlog, upload that many further ready segments at a time in the background, so the next calls return at once (0: off)")
	cmd.Flags().BoolVar(&markDone, "mark-done", true, "when archive_command is this wal-push alone, let the background upload mark the segments it stored archived (archive_status .done), so PostgreSQL starts no call for them; false: every segment waits for PostgreSQL's own call")
	return cmd
}

func (a *app) newWalFetchCmd() *cobra.Command {
	var prefetch int
	cmd := &cobra.Command{
		Use:   "wal-fetch NAME DEST",
		Short: "Fetch one WAL file from the repository (for restore_command)",
		Long: `Fetch one archived WAL file, verify its checksum and write it to DEST.
pgkeep restore writes the restore_command for you; by hand it is:

  restore_command = 'pgkeep wal-fetch %f %p'

Exit status: 0 fetched; 1 the file is not in the repository (PostgreSQL takes
this as the end of the archive; nothing is printed); 126 anything else (the
repository is unreachable, missing, or holds a corrupt copy): PostgreSQL
stops recovery rather than promoting with data missing. Transient storage
errors are retried with backoff first.`,
		Example: `  pgkeep wal-fetch --repo s3://bucket/prod 000000010000000000000001 pg_wal/RECOVERYXLOG`,
		Args:    exactArgs(2, "a WAL file name and a destination path"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := a.loadConfig(cmd)
			if err != nil {
				return &exitError{code: exitFetchFailed, err: err}
			}
			opts := walarchive.FetchOptions{}
			if prefetch > 0 {
				opts.StartPrefetch = func(pgdata, served string) { startPrefetch(cfg, pgdata, served, prefetch) }
			}
			err = walarchive.Fetch(cmd.Context(), func() (*repo.Repo, error) {
				r, err := a.openRepoWith(cmd, cfg)
				if err != nil {
					return nil, &exitError{code: exitFetchFailed, err: err}
				}
				return r, nil
			}, args[0], args[1], opts)
			switch {
			case err == nil:
				return nil
			case errors.Is(err, walarchive.ErrNotArchived):
				return &exitError{code: exitFailure, err: err, quiet: true}
			default:
				return &exitError{code: exitFetchFailed, err: err}
			}
		},
	}
	cmd.Flags().IntVar(&prefetch, "prefetch", 8, "download up to this many following segments in the background, so recovery does not wait on the network (0: off)")
	return cmd
}

// repoTag names the configured repository in look-ahead records.
func repoTag(cfg *config.Config) string {
	return walarchive.RepoTag(cfg.Repo.String() + " " + cfg.S3.Endpoint)
}

// startPushAhead launches a detached pgkeep wal-push-ahead for the ready
// segments after the one being pushed. It outlives this wal-push.
// With archiver, the pid of PostgreSQL's archiver that ran this call (0:
// none), the pusher may mark segments archived; it is given this call's
// arguments, to check that the server's archive_command is the one that
// ran it.
func startPushAhead(cfg *config.Config, walDir, after string, uploads int, archiver int) {
	args := []string{"--wal-dir", walDir, "--after", after, "--workers=" + strconv.Itoa(uploads)}
	if archiver > 0 {
		args = append(args, "--mark-done-for="+strconv.Itoa(archiver), "--mark-done-call="+strings.Join(os.Args, argSep))
	}
	args = append(args, "--wal-compression="+cfg.WALCompression.String())
	if cfg.AgeRecipients != "" {
		args = append(args, "--age-recipients="+cfg.AgeRecipients)
	}
	spawnDetached(cfg, "wal-push-ahead", args...)
}

// spawnDetached starts this binary with a subcommand, the repository
// settings of cfg and args, in its own session, and does not wait for it.
// Failures are silent: the work it would do is an optimisation.
func spawnDetached(cfg *config.Config, sub string, args ...string) {
	self, err := os.Executable()
	if err != nil {
		return
	}
	all := append([]string{sub}, args...)
	if cfg.File != "" {
		all = append(all, "--config", cfg.File)
	}
	all = append(all, cfg.Args()...)
	c := exec.Command(self, all...)
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if c.Start() == nil {
		c.Process.Release()
	}
}

func (a *app) newWalPushAheadCmd() *cobra.Command {
	var walDir, after, call string
	var archiver int
	cmd := &cobra.Command{
		Use:    "wal-push-ahead",
		Short:  "Upload ready WAL segments ahead of PostgreSQL's archive_command calls (started by wal-push)",
		Hidden: true,
		Args:   exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, cfg, err := a.openRepo(cmd)
			if err != nil {
				return err
			}
			var mark *walarchive.Marking
			if archiver > 0 {
				mark = &walarchive.Marking{Allowed: a.markArchivedCheck(cmd.Context(), cfg, walDir, strings.Split(call, argSep)), ArchiverPID: archiver}
			}
			return walarchive.PushAhead(cmd.Context(), r, repoTag(cfg), walDir, after, cfg.Workers, mark)
		},
	}
	cmd.Flags().IntVar(&archiver, "mark-done-for", 0, "pid of the PostgreSQL archiver whose call started this pusher: mark the segments stored archived while archive_command is wal-push alone")
	cmd.Flags().StringVar(&call, "mark-done-call", "", "the arguments of that call, separated by \\x1f")
	cmd.Flags().StringVar(&walDir, "wal-dir", "", "the pg_wal directory")
	cmd.Flags().StringVar(&after, "after", "", "the segment being pushed by PostgreSQL's call")
	return cmd
}

// startPrefetch launches a detached pgkeep wal-prefetch for the segments
// after served. It outlives this wal-fetch; failures are silent (the next
// wal-fetch fetches on demand).
func startPrefetch(cfg *config.Config, pgdata, served string, count int) {
	spawnDetached(cfg, "wal-prefetch", "--pgdata", pgdata, "--after", served, "--count", strconv.Itoa(count), "--workers="+strconv.Itoa(cfg.Workers))
}

func (a *app) newWalPrefetchCmd() *cobra.Command {
	var pgdata, after string
	var count int
	var clean bool
	var follow time.Duration
	cmd := &cobra.Command{
		Use:    "wal-prefetch",
		Short:  "Download upcoming WAL segments into the recovery spool (started by wal-fetch)",
		Hidden: true,
		Args:   exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pgdata == "" {
				pgdata = "."
			}
			if clean {
				return walarchive.CleanSpool(pgdata)
			}
			r, cfg, err := a.openRepo(cmd)
			if err != nil {
				return err
			}
			return walarchive.Prefetch(cmd.Context(), r, pgdata, after, walarchive.PrefetchOptions{Count: count, Workers: cfg.Workers, Follow: follow})
		},
	}
	cmd.Flags().StringVar(&pgdata, "pgdata", "", "data directory (default: the current directory)")
	cmd.Flags().StringVar(&after, "after", "", "the segment just served")
	cmd.Flags().IntVar(&count, "count", 8, "segments to keep ahead of the one served last")
	cmd.Flags().DurationVar(&follow, "follow", 5*time.Second, "keep prefetching as recovery asks for more, until it has asked for nothing for this long (0: one batch)")
	cmd.Flags().BoolVar(&clean, "clean", false, "remove the spool (recovery_end_command)")
	return cmd
}

// markArchivedCheck is what lets the look-ahead pusher mark a segment
// archived (walarchive.Marking.Allowed): the server still has the
// archive_command it had when the pusher began, one that is pgkeep
// wal-push alone and ran the call that started the pusher, read over a
// connection held for the pusher's life (a lost connection, a server
// restart that may bring another environment, ends the marking); and the
// config file the calls read has not changed since. Until the server has answered (or when it cannot be asked) it
// reports false.
func (a *app) markArchivedCheck(ctx context.Context, cfg *config.Config, walDir string, callArgs []string) func(context.Context) bool {
	exe := "pgkeep"
	if self, err := os.Executable(); err == nil {
		exe = filepath.Base(self)
	}
	stamp := a.configStamp(cfg)
	// Connecting takes a while; uploads start meanwhile, and segments
	// stored before the watch is in place are left to PostgreSQL's calls.
	var mu sync.Mutex
	var w *pgstat.CommandWatch
	go func() {
		cw, err := pgstat.WatchArchiveCommand(ctx, filepath.Dir(walDir), exe, callArgs)
		if err != nil {
			return
		}
		context.AfterFunc(ctx, cw.Close)
		mu.Lock()
		w = cw
		mu.Unlock()
	}()
	return func(ctx context.Context) bool {
		mu.Lock()
		defer mu.Unlock()
		return w != nil && a.configStamp(cfg) == stamp && w.Unchanged(ctx)
	}
}

// argSep separates a wal-push call's arguments in --mark-done-call.
const argSep = "\x1f"

// configStamp identifies the config file wal-push calls read: the one
// config.Load read, else the default, which calls would read once it
// appears (with no file read, neither --config nor PGKEEP_CONFIG named one).
func (a *app) configStamp(cfg *config.Config) string {
	path := cfg.File
	if path == "" {
		path = config.DefaultFile
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "absent"
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	var ino uint64
	if st != nil {
		ino = st.Ino
	}
	return fmt.Sprintf("%d %d %d", fi.ModTime().UnixNano(), fi.Size(), ino)
}
