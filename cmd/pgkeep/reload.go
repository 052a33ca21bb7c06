package main

import (
	"context"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/pgkeep/pgkeep/internal/agent"
	"github.com/pgkeep/pgkeep/internal/backup"
	"github.com/pgkeep/pgkeep/internal/config"
	"github.com/pgkeep/pgkeep/internal/observe"
	"github.com/pgkeep/pgkeep/internal/repo"
)

// reloader is what SIGHUP changes, and what it started from.
type reloader struct {
	src   config.Sources
	cfg   *config.Config // the configuration the agent started with
	set   agentSettings  // the settings in force
	repo  *repo.Repo
	bopts backup.Options
	sched *agent.Scheduler
	web   *observe.Server
	log   *lineLog
}

// reloadOnHUP re-reads the configuration on each SIGHUP until ctx ends or
// the returned function is called.
func (a *app) reloadOnHUP(ctx context.Context, r reloader) func() {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				r.reload(ctx)
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		cancel()
		<-done
	}
}

// reload reads the config file and the environment again (the flags
// given at start still win) and applies the schedules, the retention and
// the listener; with any error the settings in force stay.
func (r *reloader) reload(ctx context.Context) {
	keep := "; keeping the configuration in force (" + r.set.describe() + ")"
	cfg, err := config.Load(r.src)
	if err != nil {
		r.log.Logf("SIGHUP: the configuration has an error: %v%s", err, keep)
		return
	}
	set, err := parseAgentSettings(cfg)
	if err != nil {
		r.log.Logf("SIGHUP: the configuration has an error: %v%s", err, keep)
		return
	}
	var ln net.Listener
	if set.listen != r.set.listen {
		if ln, err = listen(ctx, set.listen); err != nil {
			r.log.Logf("SIGHUP: %v%s", err, keep)
			return
		}
	}
	if cfg.Repo != r.cfg.Repo || cfg.S3 != r.cfg.S3 || cfg.AgeRecipients != r.cfg.AgeRecipients {
		r.log.Logf("SIGHUP: the repository settings changed; they take effect when the agent restarts (it keeps %s)", r.cfg.Repo)
	}
	r.sched.SetPlan(set.plan(r.repo, r.bopts, r.cfg.Workers))
	if set.listen != r.set.listen {
		r.web.Listen(ln)
	}
	r.set = set
	file := "no config file"
	if cfg.File != "" {
		file = cfg.File
	}
	r.log.Logf("SIGHUP: configuration reloaded (%s, and the environment): %s", file, set.describe())
}
