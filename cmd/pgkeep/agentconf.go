package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgkeep/pgkeep/internal/agent"
	"github.com/pgkeep/pgkeep/internal/backup"
	"github.com/pgkeep/pgkeep/internal/config"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/retention"
	"github.com/pgkeep/pgkeep/internal/schedule"
)

// agentSettings are the agent's reloadable settings, parsed.
type agentSettings struct {
	backup, verify schedule.Schedule
	policy         retention.Policy // KeepCount and KeepWithin 0: no retention
	listen         string           // "" : serve nothing
}

// sources returns where the configuration comes from: the global setting
// flags and the agent's own (extra) that were given, the environment and
// the config file. It is kept for SIGHUP, which reads the file and the
// environment again while the flags still win.
func (a *app) sources(cmd *cobra.Command, extra map[string]*string) config.Sources {
	flags := map[string]string{}
	for _, set := range []map[string]*string{a.settings, extra} {
		for name, v := range set {
			if f := cmd.Flags().Lookup(name); f != nil && f.Changed {
				flags[name] = *v
			}
		}
	}
	return config.Sources{Flags: flags, Getenv: a.lookupEnv, ConfigFile: a.configFile}
}

// parseAgentSettings turns the raw agent settings of cfg into typed ones;
// an error names the setting and where its value came from.
func parseAgentSettings(cfg *config.Config) (agentSettings, error) {
	var s agentSettings
	bad := func(name string, err error) error {
		from := cfg.Sources[name]
		if from == "" {
			from = "default"
		}
		return fmt.Errorf("setting %s (from %s): %w", name, from, err)
	}
	raw := cfg.Agent
	var err error
	if v := raw["backup-schedule"]; v != "" {
		if s.backup, err = schedule.Parse(v); err != nil {
			return s, bad("backup-schedule", err)
		}
	}
	if v := raw["verify-schedule"]; v != "" {
		if s.verify, err = schedule.Parse(v); err != nil {
			return s, bad("verify-schedule", err)
		}
	}
	if v := strings.TrimSpace(raw["keep"]); v != "" {
		if s.policy.KeepCount, err = strconv.Atoi(v); err != nil || s.policy.KeepCount < 0 {
			return s, bad("keep", fmt.Errorf("%q is not a number of backups (0: no count)", v))
		}
	}
	if v := raw["keep-within"]; v != "" {
		if s.policy.KeepWithin, err = parseDays(v); err != nil {
			return s, bad("keep-within", err)
		}
	}
	if s.retains() && s.backup == nil {
		return s, bad("keep", errors.New("retention runs after each scheduled backup: give --backup-schedule too (or run pgkeep expire from a timer)"))
	}
	s.policy.GarbageAge = retentionGarbageAge
	switch l := strings.TrimSpace(raw["listen"]); l {
	case "", "off":
	default:
		host, port, err := net.SplitHostPort(l)
		if err != nil {
			return s, bad("listen", fmt.Errorf("%q is not HOST:PORT (such as %s, or off): %v", l, config.DefaultListen, err))
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return s, bad("listen", fmt.Errorf("%q: the port must be a number from 0 to 65535", l))
		}
		if host != "" && host != "localhost" && net.ParseIP(host) == nil {
			return s, bad("listen", fmt.Errorf("%q: the host must be an IP address or localhost", l))
		}
		s.listen = l
	}
	return s, nil
}

// retentionGarbageAge is expire's default --garbage-age.
const retentionGarbageAge = 6 * time.Hour

func (s agentSettings) retains() bool { return s.policy.KeepCount > 0 || s.policy.KeepWithin > 0 }

// retentionText describes the policy in the words of expire's flags.
func (s agentSettings) retentionText() string {
	var parts []string
	if s.policy.KeepCount > 0 {
		parts = append(parts, fmt.Sprintf("--keep %d", s.policy.KeepCount))
	}
	if s.policy.KeepWithin > 0 {
		parts = append(parts, "--keep-within "+s.policy.KeepWithin.String())
	}
	return strings.Join(parts, " ")
}

// describe says in one line what the settings schedule.
func (s agentSettings) describe() string {
	var parts []string
	if s.backup != nil {
		b := "backups " + s.backup.String()
		if s.retains() {
			b += " then retention " + s.retentionText()
		}
		parts = append(parts, b)
	} else {
		parts = append(parts, "no scheduled backups")
	}
	if s.verify != nil {
		parts = append(parts, "verify "+s.verify.String())
	}
	if s.listen != "" {
		parts = append(parts, "metrics and status page on "+s.listen)
	} else {
		parts = append(parts, "no metrics listener")
	}
	return strings.Join(parts, "; ")
}

// plan builds the scheduler's plan.
func (s agentSettings) plan(r *repo.Repo, bopts backup.Options, workers int) agent.Plan {
	p := agent.Plan{Backup: s.backup, Verify: s.verify, LastBackup: agent.LastBackup(r)}
	if s.backup != nil {
		p.BackupWork = agent.BackupWork(r, bopts)
		if s.retains() {
			p.Expire, p.Retention = agent.ExpireWork(r, s.policy), s.retentionText()
		}
	}
	if s.verify != nil {
		p.VerifyWork = agent.VerifyWork(r, workers)
	}
	return p
}

// listen opens the metrics listener (nil when addr is "").
func listen(ctx context.Context, addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s for the metrics and the status page (another agent or exporter on that port? give another with --listen, or --listen off): %w", addr, err)
	}
	return ln, nil
}
