// Package pgstat reads what a running PostgreSQL server says about WAL
// archiving: pg_stat_archiver and the archive settings, and the record
// pgkeep wal-push leaves of its last failure. backup and status use it to
// report an archiver that is failing (PostgreSQL archives segments in
// order, so one that keeps failing stalls all archiving behind it) and
// settings that leave the RPO unbounded.
package pgstat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Archiver is the server's archiving state.
type Archiver struct {
	SystemIdentifier uint64     `json:"-"`
	Mode             string     `json:"archive_mode"`
	Command          string     `json:"archive_command"`
	Timeout          Seconds    `json:"archive_timeout_seconds"` // 0: off
	ArchivedCount    int64      `json:"archived_count"`
	LastArchivedWAL  string     `json:"last_archived_wal,omitempty"`
	LastArchivedAt   *time.Time `json:"last_archived_time,omitempty"`
	FailedCount      int64      `json:"failed_count"`
	LastFailedWAL    string     `json:"last_failed_wal,omitempty"`
	LastFailedAt     *time.Time `json:"last_failed_time,omitempty"`
	// LastPushError is what pgkeep wal-push said when it last failed on
	// this host (nil when it has succeeded since, or the data directory is
	// not readable here).
	LastPushError *PushFailure `json:"last_push_error,omitempty"`
	// FlushLSN is the end of the WAL the server has flushed ("" on a
	// standby), on Timeline (its last checkpoint's).
	FlushLSN string `json:"flush_lsn,omitempty"`
	Timeline uint32 `json:"timeline,omitempty"`
	// Agent is the pgkeep agent's replication connection, nil when none
	// is connected.
	Agent *Agent `json:"agent,omitempty"`
}

// Agent is what pg_stat_replication shows of the pgkeep agent.
type Agent struct {
	State     string     `json:"state"`
	FlushLSN  string     `json:"flush_lsn"` // what the agent reported as stored
	SyncState string     `json:"sync_state"`
	ReplyTime *time.Time `json:"reply_time,omitempty"`
}

// Seconds is a duration shown in whole seconds.
type Seconds time.Duration

// MarshalJSON renders the duration as seconds.
func (s Seconds) MarshalJSON() ([]byte, error) {
	return []byte(strconv.FormatFloat(time.Duration(s).Seconds(), 'f', -1, 64)), nil
}

// Read queries the archiver state over conn. pgdata, if not empty, is the
// server's data directory, where wal-push records its last failure; if
// empty, the server's data_directory is used when this role may see it.
func Read(ctx context.Context, conn *pgx.Conn, pgdata string) (*Archiver, error) {
	a := &Archiver{}
	var sysID, timeout, dataDir string
	err := conn.QueryRow(ctx, `SELECT (SELECT system_identifier::text FROM pg_control_system()),
		current_setting('archive_mode'), current_setting('archive_command'), current_setting('archive_timeout'),
		coalesce((SELECT setting FROM pg_settings WHERE name = 'data_directory'), ''),
		archived_count, coalesce(last_archived_wal, ''), last_archived_time,
		failed_count, coalesce(last_failed_wal, ''), last_failed_time
		FROM pg_stat_archiver`).Scan(&sysID, &a.Mode, &a.Command, &timeout, &dataDir,
		&a.ArchivedCount, &a.LastArchivedWAL, &a.LastArchivedAt, &a.FailedCount, &a.LastFailedWAL, &a.LastFailedAt)
	if err != nil {
		return nil, fmt.Errorf("reading pg_stat_archiver (does the user have pg_read_all_settings or pg_monitor?): %w", err)
	}
	a.SystemIdentifier, _ = strconv.ParseUint(sysID, 10, 64)
	d, err := parseSetting(timeout)
	if err != nil {
		return nil, fmt.Errorf("archive_timeout %q: %w", timeout, err)
	}
	a.Timeout = Seconds(d)
	var flush *string
	if err := conn.QueryRow(ctx, `SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_flush_lsn()::text END,
		(SELECT timeline_id FROM pg_control_checkpoint())`).Scan(&flush, &a.Timeline); err == nil && flush != nil {
		a.FlushLSN = *flush
	}
	var ag Agent
	var agFlush *string
	if err := conn.QueryRow(ctx, `SELECT state, flush_lsn::text, sync_state, reply_time FROM pg_stat_replication
		WHERE application_name = 'pgkeep' ORDER BY backend_start DESC LIMIT 1`).Scan(&ag.State, &agFlush, &ag.SyncState, &ag.ReplyTime); err == nil {
		if agFlush != nil {
			ag.FlushLSN = *agFlush
		}
		a.Agent = &ag
	}
	if pgdata == "" {
		pgdata = dataDir
	}
	if pgdata != "" {
		a.LastPushError = ReadPushFailure(filepath.Join(pgdata, "pg_wal"))
	}
	return a, nil
}

// parseSetting reads a time setting as current_setting shows it: a number
// with an optional unit (archive_timeout's base unit is seconds).
func parseSetting(v string) (time.Duration, error) {
	if v == "" || v == "0" {
		return 0, nil
	}
	if n, err := strconv.Atoi(v); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	for _, u := range []struct {
		suffix string
		d      time.Duration
	}{{"ms", time.Millisecond}, {"s", time.Second}, {"min", time.Minute}, {"h", time.Hour}, {"d", 24 * time.Hour}} {
		if n, ok := cutSuffixInt(v, u.suffix); ok {
			return time.Duration(n) * u.d, nil
		}
	}
	return 0, errors.New("not a duration PostgreSQL shows")
}

func cutSuffixInt(v, suffix string) (int, bool) {
	if len(v) <= len(suffix) || v[len(v)-len(suffix):] != suffix {
		return 0, false
	}
	n, err := strconv.Atoi(v[:len(v)-len(suffix)])
	return n, err == nil
}

// Failing reports whether the archiver's last attempt failed: it failed
// after its last success (or has never succeeded). PostgreSQL archives in
// order, so while this holds no later segment reaches the repository.
func (a *Archiver) Failing() bool {
	if a.FailedCount == 0 || a.LastFailedAt == nil {
		return false
	}
	return a.LastArchivedAt == nil || a.LastFailedAt.After(*a.LastArchivedAt)
}

// FailureText describes a failing archiver, for an error.
func (a *Archiver) FailureText() string {
	since := "it has never archived a file"
	if a.LastArchivedAt != nil {
		since = fmt.Sprintf("its last success was %s at %s", a.LastArchivedWAL, a.LastArchivedAt.UTC().Format(time.RFC3339))
	}
	msg := fmt.Sprintf("PostgreSQL's archiver is failing: archiving %s failed at %s (%d failures in all; %s), so no WAL after it reaches the repository",
		a.LastFailedWAL, a.LastFailedAt.UTC().Format(time.RFC3339), a.FailedCount, since)
	if e := a.LastPushError; e != nil && (e.File == a.LastFailedWAL || a.LastFailedWAL == "") {
		msg += fmt.Sprintf("; pgkeep wal-push said: %s", e.Error)
	} else {
		msg += fmt.Sprintf("; archive_command is %q: see the PostgreSQL log for its error", a.Command)
	}
	return msg
}

// RPOWarning returns a warning when archive_timeout leaves the data at risk
// unbounded (0) or bounds it above maxRPO (when maxRPO > 0); "" otherwise.
func (a *Archiver) RPOWarning(maxRPO time.Duration) string {
	if a.Agent != nil && (a.Agent.State == "streaming" || a.Agent.State == "catchup") {
		return "" // the agent streams: archive_timeout does not bound the RPO
	}
	if a.Mode == "off" {
		return "archive_mode is off and no pgkeep agent is streaming: no WAL reaches the repository"
	}
	t := time.Duration(a.Timeout)
	if t == 0 {
		return "archive_timeout is 0: a quiet server may not fill a WAL segment for hours, and until it does nothing since the last segment is in the repository; set archive_timeout (e.g. 60s), or run pgkeep agent to stream WAL"
	}
	if maxRPO > 0 && t > maxRPO {
		return fmt.Sprintf("archive_timeout is %s, longer than --max-rpo %s: on a quiet server up to %s of commits may not be in the repository; lower archive_timeout, or run pgkeep agent to stream WAL", t, maxRPO, t)
	}
	return ""
}

// PushFailure is wal-push's record of its last failure on a host.
type PushFailure struct {
	File  string    `json:"file"`
	Error string    `json:"error"`
	At    time.Time `json:"at"`
}

// pushFailureFile is the record's path inside pg_wal.
const pushFailureFile = "pgkeep/last-push-error"

// RecordPushFailure notes that wal-push failed on file, so that backup and
// status can say why archiving stalls without the server log. Best effort:
// it is a diagnostic.
func RecordPushFailure(walDir, file string, err error) {
	p := filepath.Join(walDir, pushFailureFile)
	data, _ := json.Marshal(PushFailure{File: file, Error: err.Error(), At: time.Now().UTC()})
	if os.MkdirAll(filepath.Dir(p), 0o700) != nil {
		return
	}
	tmp := p + ".tmp"
	if os.WriteFile(tmp, data, 0o600) == nil {
		os.Rename(tmp, p)
	}
}

// ClearPushFailure removes the record after a success.
func ClearPushFailure(walDir string) { os.Remove(filepath.Join(walDir, pushFailureFile)) }

// ReadPushFailure returns the record, or nil.
func ReadPushFailure(walDir string) *PushFailure {
	data, err := os.ReadFile(filepath.Join(walDir, pushFailureFile))
	if err != nil {
		return nil
	}
	var f PushFailure
	if json.Unmarshal(data, &f) != nil {
		return nil
	}
	return &f
}

// Probe connects with connString ("" : the libpq environment) within
// timeout and reads the archiver state; status uses it where the server
// may or may not be reachable.
func Probe(ctx context.Context, connString, pgdata string, timeout time.Duration) (*Archiver, error) {
	cfg, err := pgx.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("reading the connection settings: %w", err)
	}
	cfg.ConnectTimeout = timeout
	ctx, cancel := context.WithTimeout(ctx, timeout+2*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return Read(ctx, conn, pgdata)
}
