package observe

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage"
)

// Meter counts the agent's uploads (storage.Meter): bytes stored and
// failed attempts, by what was stored (wal, backup, summary, other) and,
// for failures, by kind (transient, permanent, canceled). It is safe for
// concurrent use.
type Meter struct {
	mu       sync.Mutex
	uploaded map[string]float64    // by object
	failed   map[[2]string]float64 // by object and kind
}

var _ storage.Meter = (*Meter)(nil)

var (
	meterObjects = []string{"wal", "backup", "summary", "other"}
	meterKinds   = []string{"transient", "permanent", "canceled"}
	descUploaded = counterDesc("pgkeep_uploaded_bytes_total",
		"Bytes this agent stored in the repository (after compression and encryption), by object: wal (segments, streamed pieces), backup, summary, other.", "object")
	descFailed = counterDesc("pgkeep_upload_errors_total",
		"Failed upload attempts by object and kind: transient (retried: network, throttling, server errors), permanent (retrying cannot help), canceled.", "object", "kind")
)

// NewMeter returns a meter with every series at 0.
func NewMeter() *Meter {
	return &Meter{uploaded: map[string]float64{}, failed: map[[2]string]float64{}}
}

// Uploaded counts size bytes stored under key.
func (m *Meter) Uploaded(key string, size int64) {
	m.mu.Lock()
	m.uploaded[repo.KindOf(key)] += float64(size)
	m.mu.Unlock()
}

// UploadFailed counts a failed Put of key.
func (m *Meter) UploadFailed(key string, err error) {
	m.mu.Lock()
	m.failed[[2]string{repo.KindOf(key), storage.ErrorKind(err)}]++
	m.mu.Unlock()
}

// add adds the meter's series: every object and kind, 0 until counted.
func (m *Meter) add(e *exposition) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range meterObjects {
		e.add(descUploaded, m.uploaded[o], o)
	}
	for _, o := range meterObjects {
		for _, k := range meterKinds {
			e.add(descFailed, m.failed[[2]string{o, k}], o, k)
		}
	}
}

// WriteMetrics writes what /metrics serves, in the Prometheus text
// format: the snapshot's figures, the meter's counters (if m is not nil),
// and the Go runtime's and the process's.
func WriteMetrics(w io.Writer, src *Source, m *Meter) error {
	e := newExposition()
	collect(e, src)
	if m != nil {
		m.add(e)
	}
	addRuntime(e)
	return e.writeTo(w)
}

// A description of every metric the collector emits.
var (
	descUp           = gaugeDesc("pgkeep_repository_up", "1 if the last read of the repository succeeded, else 0 (the other repository figures are then from the last read that did).")
	descWALTime      = gaugeDesc("pgkeep_wal_newest_timestamp_seconds", "When the newest WAL in the repository (an archived segment or a streamed piece) was stored, as a Unix time.")
	descWALLSN       = gaugeDesc("pgkeep_wal_newest_lsn_bytes", "End of the WAL the repository holds on its newest timeline, as an LSN (a byte position in the WAL stream).")
	descWALTimeline  = gaugeDesc("pgkeep_wal_newest_timeline", "The newest timeline the repository holds WAL of.")
	descWALGaps      = gaugeDesc("pgkeep_wal_gaps", "Runs of missing segments in the repository's WAL, over all timelines (0 when the archive is continuous).")
	descRPO          = gaugeDesc("pgkeep_rpo_seconds", "The RPO: how much committed work a loss of the database host now would cost. 0 when the server has flushed no WAL the repository lacks; else the age of the newest stored WAL.")
	descRPOMeasured  = gaugeDesc("pgkeep_rpo_measured", "1 if pgkeep_rpo_seconds was measured against the server's flushed WAL position, 0 if estimated from the repository alone.")
	descBackups      = gaugeDesc("pgkeep_backups", "Complete (restorable) backups in the repository.")
	descBackupTime   = gaugeDesc("pgkeep_backup_last_success_timestamp_seconds", "When the newest complete backup finished, as a Unix time.")
	descBackupDur    = gaugeDesc("pgkeep_backup_last_duration_seconds", "How long the newest complete backup took, from its start to its stop.")
	descBackupStored = gaugeDesc("pgkeep_backup_last_stored_bytes", "Bytes the newest complete backup stored in the repository (compressed; for an incremental backup, only what it added).")
	descBackupSize   = gaugeDesc("pgkeep_backup_last_size_bytes", "Size of the data directory the newest complete backup restores.")
	descWindowStart  = gaugeDesc("pgkeep_recoverable_window_start_timestamp_seconds", "The earliest moment a restore can reach, as a Unix time (absent when nothing is restorable).")
	descWindowEnd    = gaugeDesc("pgkeep_recoverable_window_end_timestamp_seconds", "The latest moment a restore can reach (the newest WAL on the window's timeline), as a Unix time.")
	descRecoverable  = gaugeDesc("pgkeep_recoverable", "1 if some backup is restorable, else 0.")
	descRepoBytes    = gaugeDesc("pgkeep_repository_bytes", "Bytes the repository holds, by kind: wal, backups, incomplete_backups, other.", "kind")
	descProblems     = gaugeDesc("pgkeep_status_problems", "Problems pgkeep status reports (it exits 1 when there are any): missing WAL, nothing restorable, a failing archiver.")
	descSlot         = gaugeDesc("pgkeep_slot_retained_wal_bytes", "WAL the agent's replication slot makes the server keep in pg_wal (the server's WAL position minus the slot's restart_lsn).")
	descArchFailed   = counterDesc("pgkeep_archiver_failed_total", "Failed archive_command runs PostgreSQL counted (pg_stat_archiver.failed_count, since its statistics were last reset).")
	descArchFailing  = gaugeDesc("pgkeep_archiver_failing", "1 if PostgreSQL's archiver's last attempt failed (no WAL after it is archived), else 0.")
	descArchArchived = counterDesc("pgkeep_archiver_archived_total", "WAL files PostgreSQL's archiver archived (pg_stat_archiver.archived_count; segments the look-ahead pusher marked archived itself are not counted).")
	descServerUp     = gaugeDesc("pgkeep_server_up", "1 if the database server was reached for the last snapshot, else 0.")
	descConnected    = gaugeDesc("pgkeep_streaming_connected", "1 while the agent streams from the server, else 0.")
	descStreamLSN    = gaugeDesc("pgkeep_streamed_lsn_bytes", "End of the WAL the agent has durably stored (what it reports to the server as flushed), as an LSN.")
	descStreamTime   = gaugeDesc("pgkeep_streamed_timestamp_seconds", "When the agent's stored position last advanced, as a Unix time.")
	descStreamTLI    = gaugeDesc("pgkeep_streamed_timeline", "The timeline the agent streams.")
	descSegments     = counterDesc("pgkeep_streamed_segments_total", "Segments the agent stored whole since it started.")
	descRuns         = counterDesc("pgkeep_schedule_runs_total", "Scheduled runs since the agent started, by kind (backup, expire, verify) and result (ok, failed, abandoned).", "kind", "result")
	descRunning      = gaugeDesc("pgkeep_schedule_running", "1 while a run of this kind is in progress.", "kind")
	descLastRun      = gaugeDesc("pgkeep_schedule_last_run_timestamp_seconds", "When the last run of this kind started, as a Unix time.", "kind")
	descLastRunDur   = gaugeDesc("pgkeep_schedule_last_run_duration_seconds", "How long the last run of this kind took.", "kind")
	descLastRunOK    = gaugeDesc("pgkeep_schedule_last_run_success", "1 if the last run of this kind succeeded, else 0.", "kind")
	descLastSuccess  = gaugeDesc("pgkeep_schedule_last_success_timestamp_seconds", "When the last successful run of this kind finished, as a Unix time.", "kind")
	descNextRun      = gaugeDesc("pgkeep_schedule_next_run_timestamp_seconds", "When the next run of this kind is due, as a Unix time (absent when not scheduled).", "kind")
	descSnapshotAge  = gaugeDesc("pgkeep_snapshot_timestamp_seconds", "When the figures above were read from the repository and the server (at most the agent's --metrics-max-age ago).")
)

// collect adds the figures of the source's snapshot (taken now if the
// last one is too old).
func collect(e *exposition, src *Source) {
	snap := src.Get(context.Background())
	add := e.add // each description says gauge or counter
	unix := func(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
	add(descUp, b2f(snap.Err == nil))
	add(descSnapshotAge, unix(snap.At))
	if st := snap.Status; st != nil {
		if st.NewestWALAt != nil {
			add(descWALTime, unix(*st.NewestWALAt))
		}
		if lsn, tli := st.End(); tli != 0 {
			add(descWALLSN, float64(lsn))
			add(descWALTimeline, float64(tli))
		}
		add(descWALGaps, float64(len(st.Gaps)))
		if st.RPOSeconds != nil {
			add(descRPO, *st.RPOSeconds)
		}
		add(descRPOMeasured, b2f(st.RPOMeasured))
		add(descBackups, float64(st.Backups))
		if w := st.Window; w != nil {
			add(descWindowStart, unix(w.Earliest))
			add(descWindowEnd, unix(w.Latest))
		}
		add(descRecoverable, b2f(st.Window != nil))
		add(descRepoBytes, float64(st.Size.WAL), "wal")
		add(descRepoBytes, float64(st.Size.Backups), "backups")
		add(descRepoBytes, float64(st.Size.Garbage), "incomplete_backups")
		add(descRepoBytes, float64(st.Size.Other), "other")
		add(descProblems, float64(len(st.Problems)))
	}
	if cat := snap.Catalog; cat != nil && len(cat.Backups) > 0 {
		m := cat.Backups[len(cat.Backups)-1]
		add(descBackupTime, unix(m.StopTime))
		add(descBackupDur, m.Duration().Seconds())
		add(descBackupStored, float64(m.Stored))
		add(descBackupSize, float64(m.Size))
	}
	if snap.SlotRetained != nil {
		add(descSlot, float64(*snap.SlotRetained))
	}
	add(descServerUp, b2f(snap.Archiver != nil))
	if a := snap.Archiver; a != nil {
		add(descArchFailed, float64(a.FailedCount))
		add(descArchArchived, float64(a.ArchivedCount))
		add(descArchFailing, b2f(a.Failing()))
	}
	if src.agent != nil {
		s := snap.Stream
		add(descConnected, b2f(s.Connected))
		if s.Durable != 0 {
			add(descStreamLSN, float64(s.Durable))
			add(descStreamTLI, float64(s.Timeline))
		}
		if !s.DurableAt.IsZero() {
			add(descStreamTime, unix(s.DurableAt))
		}
		add(descSegments, float64(s.Segments))
	}
	for _, k := range snap.Kinds {
		for _, r := range []string{"ok", "failed", "abandoned"} {
			add(descRuns, float64(k.Totals[r]), k.Kind, r)
		}
		add(descRunning, b2f(k.Running), k.Kind)
		if len(k.Runs) > 0 {
			r := k.Runs[0]
			add(descLastRun, unix(r.Started), k.Kind)
			add(descLastRunDur, r.Duration.Seconds(), k.Kind)
			add(descLastRunOK, b2f(r.Result == "ok"), k.Kind)
		}
		if !k.LastSuccess.IsZero() {
			add(descLastSuccess, unix(k.LastSuccess), k.Kind)
		}
		if !k.Next.IsZero() {
			add(descNextRun, unix(k.Next), k.Kind)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
