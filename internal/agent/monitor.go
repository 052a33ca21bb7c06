package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgkeep/pgkeep/internal/units"
)

// SlotMonitor is the component that watches the replication slot: how much
// WAL it makes the server keep (a slot whose consumer falls behind, because
// the store is down say, keeps WAL until the server's disk fills), and,
// with --synchronous, whether the server really waits for the agent.
type SlotMonitor struct {
	// WarnBytes: warn when the slot retains more WAL than this (0: never).
	WarnBytes int64
	// Every is how often it looks (default 30s).
	Every time.Duration
}

// Name names the component in log lines.
func (m *SlotMonitor) Name() string { return "slot monitor" }

// Run checks at once, then every Every, until ctx ends. A warning is
// logged when retention crosses the threshold and every 10 minutes while
// it stays above; the return below it is logged too.
func (m *SlotMonitor) Run(ctx context.Context, a *Agent) error {
	every := m.Every
	if every <= 0 {
		every = 30 * time.Second
	}
	var warnedAt time.Time
	above, syncChecked := false, false
	first := time.NewTimer(3 * time.Second) // after the agent has connected
	defer first.Stop()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-first.C:
		case <-tick.C:
		}
		r, err := m.check(ctx, a)
		if err != nil {
			continue // the server is away: the stream's reconnection says so
		}
		if r.warn != "" {
			a.logf("WARNING: %s", r.warn)
		}
		if m.WarnBytes > 0 && r.retained > m.WarnBytes {
			if !above || time.Since(warnedAt) > 10*time.Minute {
				a.logf("WARNING: replication slot %s retains %s of WAL on the server (more than %s)%s: the WAL the repository does not hold stays in pg_wal until it is stored; if the store stays unreachable the server's disk fills. The repository holds WAL up to %s",
					a.cfg.Slot, units.Bytes(r.retained), units.Bytes(m.WarnBytes), r.status, a.State().Durable)
				warnedAt = time.Now()
			}
			above = true
		} else if above {
			a.logf("replication slot %s retains %s of WAL again, below %s", a.cfg.Slot, units.Bytes(r.retained), units.Bytes(m.WarnBytes))
			above = false
		}
		if a.cfg.Synchronous && !syncChecked && a.State().Connected {
			if r.syncState != "" {
				syncChecked = true
				if r.syncState != "sync" && r.syncState != "quorum" {
					a.logf("WARNING: --synchronous, but the server treats the agent as sync_state %q: commits do not wait for their WAL to be stored. Add %s to synchronous_standby_names (for example synchronous_standby_names = '%s') and reload",
						r.syncState, ApplicationName, ApplicationName)
				}
			}
		}
	}
}

type slotReport struct {
	retained  int64
	status    string // ", wal_status X, safe_wal_size Y" (13 and later)
	warn      string
	syncState string
}

// check reads the slot's retention and the agent's sync state.
func (m *SlotMonitor) check(ctx context.Context, a *Agent) (slotReport, error) {
	var r slotReport
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := a.connectSQL(cctx)
	if err != nil {
		return r, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var major int
	if err := conn.QueryRow(cctx, `SELECT current_setting('server_version_num')::int / 10000`).Scan(&major); err != nil {
		return r, err
	}
	// pg_current_wal_lsn fails on a standby; there the receive position
	// is the server's end of WAL.
	q := `SELECT coalesce((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END) - restart_lsn, 0)::bigint, '', NULL::bigint
		FROM pg_replication_slots WHERE slot_name = $1`
	if major >= 13 {
		// wal_status and safe_wal_size are new in 13.
		q = `SELECT coalesce((CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END) - restart_lsn, 0)::bigint,
			coalesce(wal_status, ''), safe_wal_size FROM pg_replication_slots WHERE slot_name = $1`
	}
	var walStatus string
	var safe *int64
	err = conn.QueryRow(cctx, q, a.cfg.Slot).Scan(&r.retained, &walStatus, &safe)
	if errors.Is(err, pgx.ErrNoRows) {
		r.warn = fmt.Sprintf("replication slot %s does not exist on the server (dropped?): the server keeps no WAL for the agent", a.cfg.Slot)
		return r, nil
	}
	if err != nil {
		return r, err
	}
	if walStatus != "" {
		r.status = ", wal_status " + walStatus
		if safe != nil {
			r.status += ", " + units.Bytes(*safe) + " before max_slot_wal_keep_size invalidates it"
		}
		switch walStatus {
		case "unreserved":
			r.warn = fmt.Sprintf("replication slot %s is past max_slot_wal_keep_size (wal_status unreserved): the server will remove WAL the repository does not hold at its next checkpoint", a.cfg.Slot)
		case "lost":
			r.warn = fmt.Sprintf("replication slot %s lost WAL the agent had not stored (wal_status lost, max_slot_wal_keep_size): the archive will have a gap", a.cfg.Slot)
		}
	}
	var st *string
	if err := conn.QueryRow(cctx, `SELECT sync_state FROM pg_stat_replication WHERE application_name = $1 ORDER BY backend_start DESC LIMIT 1`, ApplicationName).Scan(&st); err == nil && st != nil {
		r.syncState = *st
	}
	return r, nil
}

// SlotRetained returns how much WAL the agent's slot makes the server
// keep now (for metrics).
func (a *Agent) SlotRetained(ctx context.Context) (int64, error) {
	r, err := (&SlotMonitor{}).check(ctx, a)
	if err != nil {
		return 0, fmt.Errorf("reading replication slot %s: %w", a.cfg.Slot, err)
	}
	if r.warn != "" && r.retained == 0 {
		return 0, errors.New(r.warn)
	}
	return r.retained, nil
}
