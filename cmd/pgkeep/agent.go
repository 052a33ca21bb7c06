package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgkeep/pgkeep/internal/agent"
	"github.com/pgkeep/pgkeep/internal/backup"
	"github.com/pgkeep/pgkeep/internal/config"
	"github.com/pgkeep/pgkeep/internal/observe"
)

func (a *app) newAgentCmd() *cobra.Command {
	var (
		slot        string
		interval    time.Duration
		synchronous bool
		warnSize    string
		acceptGap   bool
		slotCheck   time.Duration
		metricsAge  time.Duration
		retryFirst  time.Duration
		own         = map[string]*string{}
		backupType  string
		fullEvery   string
		maxChain    int
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Stream WAL, take scheduled backups, serve metrics and a status page (long-running)",
		Long: `Run in the foreground on the database host (or any host with a replication
connection to it), streaming WAL into the repository as PostgreSQL writes
it, for an RPO of seconds, or zero with --synchronous.

The agent connects with the libpq environment (PGHOST, PGPORT, PGUSER...)
over the replication protocol, on a physical replication slot it creates
if missing (--slot). It stores what arrived at least every --stream-interval
while WAL arrives (nothing while the database is idle), as write-once
streamed pieces, and each completed segment whole under its normal name,
exactly as wal-push does: archive_command and the agent can both run.

The position it reports to the server is the end of the WAL durably in the
repository, so the slot keeps every segment that is not stored. With
--synchronous and synchronous_standby_names = 'pgkeep', a commit returns
only once its WAL is in the repository (RPO 0; each commit then waits
about one upload, and commits wait while the store is unreachable: set
synchronous_standby_names = '' and reload to fall back to asynchronous).

It reconnects with backoff when the server restarts or the network drops,
follows a promotion to a new timeline (storing its history file), and
resumes from what the repository holds. If the server no longer has WAL
the repository lacks, it stops and names the missing range. SIGTERM or
SIGINT stop it after the upload in flight and what was received are stored.

The role needs the REPLICATION attribute (or superuser), and pg_hba.conf a
'replication' line for it.

Schedules. --backup-schedule takes base backups in this process (as pgkeep
backup does; --backup-type, --max-chain and --full-every as its --type,
--max-chain and --full-every), on an interval (24h, 7d: one interval after the
newest backup in the repository, so at once if there is none or it is
older) or a cron expression in local time ("0 3 * * *", @daily; prefix
CRON_TZ=UTC for another zone). --keep and --keep-within apply retention
after each successful backup, with expire's policy. --verify-schedule
re-reads every backup and the WAL chain, as pgkeep verify does. Runs never
overlap: one that falls due while another runs waits for it, then runs
once. A failed backup is retried with backoff (30s doubling to 30m) until
one succeeds. Every run is one log line: kind, duration, result.

Metrics and status page. --listen (default ` + config.DefaultListen + `, loopback only)
serves Prometheus metrics at /metrics and a status page at /: the
recoverable window, the RPO, the backups, the WAL per timeline with any
gap, the stream's position and the schedules' last runs. They read the
repository at most every --metrics-max-age. --listen off serves nothing.

Signals. SIGTERM or SIGINT: a backup in progress is abandoned (its
completion record is never written, so it is never listed as restorable;
expire removes what it left), the streamed WAL received is stored, and the
agent exits 0. SIGHUP reads the config file and the environment again
(flags still win) and applies the schedules, the retention and --listen;
a configuration with an error is refused, the running one stays, and the
log says why. The repository, streaming and backup-type settings need a
restart.

The schedule, retention and listen settings may also be set in the config
file or the environment (PGKEEP_BACKUP_SCHEDULE, PGKEEP_KEEP, ...).`,
		Example: `  PGHOST=/var/run/postgresql pgkeep agent --repo s3://bucket/prod
  pgkeep agent --synchronous      # with synchronous_standby_names = 'pgkeep'
  pgkeep agent --backup-schedule '0 3 * * *' --keep 7 --keep-within 14d --verify-schedule 7d
  curl -s http://` + config.DefaultListen + `/metrics | grep pgkeep_rpo_seconds
  systemctl reload pgkeep-agent   # SIGHUP: re-read /etc/pgkeep/pgkeep.conf`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if interval <= 0 || interval > time.Hour {
				return &usageError{fmt.Errorf("--stream-interval %s: give a duration from 1ms to 1h", interval)}
			}
			if strings.ContainsAny(slot, " \t'\"") || slot == "" {
				return &usageError{fmt.Errorf("--slot %q: give a replication slot name (lower-case letters, digits, underscores)", slot)}
			}
			warn, err := parseSize(warnSize)
			if err != nil {
				return &usageError{fmt.Errorf("--slot-warn-size: %w", err)}
			}
			ctx := cmd.Context()
			src := a.sources(cmd, own)
			cfg, err := config.Load(src)
			if err != nil {
				return &usageError{err}
			}
			set, err := parseAgentSettings(cfg)
			if err != nil {
				return &usageError{err}
			}
			chain, err := parseChainFlags("--backup-type", backupType, maxChain, fullEvery)
			if err != nil {
				return err
			}
			meter := observe.NewMeter()
			r, err := openRepository(ctx, cfg, meter, a.stderr)
			if err != nil {
				return err
			}
			ln, err := listen(ctx, set.listen)
			if err != nil {
				return err
			}
			log := &lineLog{w: a.stderr}
			bopts := backup.Options{PGData: a.env("PGDATA"), Workers: cfg.Workers, Type: chain.Type, MaxChain: chain.MaxChain, FullEvery: chain.FullEvery}
			sched := agent.NewScheduler(set.plan(r, bopts, cfg.Workers))
			sched.RetryInitial = retryFirst
			source := &observe.Source{Repo: r, Scheduler: sched, PGData: a.env("PGDATA"), MaxAge: metricsAge}
			sched.OnRun = func(agent.RunRecord) { source.Invalidate() }
			web := observe.NewServer(source, meter, ln)
			log.Logf("%s", set.describe())
			if ln != nil {
				log.Logf("metrics at http://%s/metrics, status page at http://%s/", ln.Addr(), ln.Addr())
			}
			ag := agent.New(agent.Config{
				Repo: r, Slot: slot, Interval: interval, Synchronous: synchronous, Log: log, AcceptGap: acceptGap,
				Components: []agent.Component{&agent.SlotMonitor{WarnBytes: warn, Every: slotCheck}, sched, web},
			})
			stopReload := a.reloadOnHUP(ctx, reloader{src: src, cfg: cfg, set: set, repo: r, bopts: bopts, sched: sched, web: web, log: log})
			defer stopReload()
			err = ag.Run(ctx)
			if errors.Is(err, agent.ErrMissingWAL) {
				return &exitError{code: exitFailure, err: err}
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&slot, "slot", "pgkeep", "physical replication slot to stream from (created if missing)")
	f.DurationVar(&interval, "stream-interval", time.Second, "store the WAL received at least this often while WAL arrives")
	f.BoolVar(&synchronous, "synchronous", false, "store WAL as soon as it arrives, for synchronous_standby_names = 'pgkeep' (RPO 0)")
	f.StringVar(&warnSize, "slot-warn-size", "1GB", "warn when the slot makes the server keep more WAL than this (0: never)")
	f.DurationVar(&slotCheck, "slot-check-interval", 30*time.Second, "how often to check the slot's retention")
	f.MarkHidden("slot-check-interval")
	for _, st := range config.AgentSettings() {
		v := new(string)
		own[st.Name] = v
		f.StringVar(v, st.Name, st.Default, st.Help+" ["+config.EnvName(st.Name)+"]")
	}
	f.StringVar(&backupType, "backup-type", backup.TypeAuto, "scheduled backups: full, incremental or auto (as pgkeep backup --type)")
	f.IntVar(&maxChain, "max-chain", backup.DefaultMaxChain, "scheduled backups with --backup-type auto: at most this many incremental backups on a full one (0: always full)")
	f.StringVar(&fullEvery, "full-every", "7d", "scheduled backups with --backup-type auto: a full backup once the newest full one is this old")
	f.DurationVar(&metricsAge, "metrics-max-age", 10*time.Second, "read the repository and the server for /metrics and / at most this often")
	f.DurationVar(&retryFirst, "backup-retry", 30*time.Second, "wait this long before retrying a failed scheduled backup (doubling up to 30m)")
	f.MarkHidden("backup-retry")
	f.BoolVar(&acceptGap, "accept-gap", false, "when the server no longer has the WAL the repository needs next, stream from its oldest WAL, leaving a gap (after taking a new backup)")
	return cmd
}

// lineLog writes one timestamped line per event.
type lineLog struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineLog) Logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "%s pgkeep agent: %s\n", time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), fmt.Sprintf(format, args...))
}

// parseSize reads a byte size: a number with an optional unit B, kB, MB,
// GB or TB (powers of 1024, as PostgreSQL's memory units).
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"kB", 1 << 10}, {"KB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size like 512MB or 1GB", s)
	}
	return n * mult, nil
}
