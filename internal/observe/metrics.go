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

// uploadedBytes returns the bytes counted for an object kind.
func (m *Meter) uploadedBytes(object string) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.uploaded[object]
}

// failures returns the failed attempts counted for an object kind and an
// error kind.
func (m *Meter) failures(object, kind string) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failed[[2]string{object, kind}]
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
	descUp           = desc("pgkeep_repository_up", "1 if the last read of the repository succeeded, else 0 (the other repository figures are then from the last read that did).")
	descWALTime      = desc("pgkeep_wal_newest_timestamp_seconds", "When the newest WAL in the repository (an archived segment or a streamed piece) was stored, as a Unix time.")
	descWALLSN       = desc("pgkeep_wal_newest_lsn_bytes", "End of the WAL the repository holds on its newest timeline, as an LSN (a byte position in the WAL stream).")
	descWALTimeline  = desc("pgkeep_wal_newest_timeline", "The newest timeline the repository holds WAL of.")
	descWALGaps      = desc("pgkeep_wal_gaps", "Runs of missing segments in the repository's WAL, over all timelines (0 when the archive is continuous).")
	descRPO          = desc("pgkeep_rpo_seconds", "The RPO: how much committed work a loss of the database host now would cost. 0 when the server has flushed no WAL the repository lacks; else the age of the newest stored WAL.")
	descRPOMeasured  = desc("pgkeep_rpo_measured", "1 if pgkeep_rpo_seconds was measured against the server's flushed WAL position, 0 if estimated from the repository alone.")
	descBackups      = desc("pgkeep_backups", "Complete (restorable) backups in the repository.")
	descBackupTime   = desc("pgkeep_backup_last_success_timestamp_seconds", "When the newest complete backup finished, as a Unix time.")
	descBackupDur    = desc("pgkeep_backup_last_duration_seconds", "How long the newest complete backup took, from its start to its stop.")
	descBackupStored = desc("pgkeep_backup_last_stored_bytes", "Bytes the newest complete backup stored in the repository (compressed; for an incremental backup, only what it added).")
	descBackupSize   = desc("pgkeep_backup_last_size_bytes", "Size of the data directory the newest complete backup restores.")
	descWindowStart  = desc("pgkeep_recoverable_window_start_timestamp_seconds", "The earliest moment a restore can reach, as a Unix time (absent when nothing is restorable).")
	descWindowEnd    = desc("pgkeep_recoverable_window_end_timestamp_seconds", "The latest moment a restore can reach (the newest WAL on the window's timeline), as a Unix time.")
	descRecoverable  = desc("pgkeep_recoverable", "1 if some backup is restorable, else 0.")
	descRepoBytes    = descL("pgkeep_repository_bytes", "Bytes the repository holds, by kind: wal, backups, incomplete_backups, other.", "kind")
	descProblems     = desc("pgkeep_status_problems", "Problems pgkeep status reports (it exits 1 when there are any): missing WAL, nothing restorable, a failing archiver.")
	descSlot         = desc("pgkeep_slot_retained_wal_bytes", "WAL the agent's replication slot makes the server keep in pg_wal (the server's WAL position minus the slot's restart_lsn).")
	descArchFailed   = counterDesc("pgkeep_archiver_failed_total", "Failed archive_command runs PostgreSQL counted (pg_stat_archiver.failed_count, since its statistics were last reset).")
	descArchFailing  = desc("pgkeep_archiver_failing", "1 if PostgreSQL's archiver's last attempt failed (no WAL after it is archived), else 0.")
	descArchArchived = counterDesc("pgkeep_archiver_archived_total", "WAL files PostgreSQL's archiver archived (pg_stat_archiver.archived_count).")
	descServerUp     = desc("pgkeep_server_up", "1 if the database server was reached for the last snapshot, else 0.")
	descConnected    = desc("pgkeep_streaming_connected", "1 while the agent streams from the server, else 0.")
	descStreamLSN    = desc("pgkeep_streamed_lsn_bytes", "End of the WAL the agent has durably stored (what it reports to the server as flushed), as an LSN.")
	descStreamTime   = desc("pgkeep_streamed_timestamp_seconds", "When the agent's stored position last advanced, as a Unix time.")
	descStreamTLI    = desc("pgkeep_streamed_timeline", "The timeline the agent streams.")
	descSegments     = counterDesc("pgkeep_streamed_segments_total", "Segments the agent stored whole since it started.")
	descRuns         = counterL("pgkeep_schedule_runs_total", "Scheduled runs since the agent started, by kind (backup, expire, verify) and result (ok, failed, abandoned).", "kind", "result")
	descRunning      = descL("pgkeep_schedule_running", "1 while a run of this kind is in progress.", "kind")
	descLastRun      = descL("pgkeep_schedule_last_run_timestamp_seconds", "When the last run of this kind started, as a Unix time.", "kind")
	descLastRunDur   = descL("pgkeep_schedule_last_run_duration_seconds", "How long the last run of this kind took.", "kind")
	descLastRunOK    = descL("pgkeep_schedule_last_run_success", "1 if the last run of this kind succeeded, else 0.", "kind")
	descLastSuccess  = descL("pgkeep_schedule_last_success_timestamp_seconds", "When the last successful run of this kind finished, as a Unix time.", "kind")
	descNextRun      = descL("pgkeep_schedule_next_run_timestamp_seconds", "When the next run of this kind is due, as a Unix time (absent when not scheduled).", "kind")
	descSnapshotAge  = desc("pgkeep_snapshot_timestamp_seconds", "When the figures above were read from the repository and the server (at most the agent's --metrics-max-age ago).")
)

func desc(name, help string) *metricDesc { return gaugeDesc(name, help) }
func descL(name, help string, labels ...string) *metricDesc {
	return gaugeDesc(name, help, labels...)
}
func counterL(name, help string, labels ...string) *metricDesc {
	return counterDesc(name, help, labels...)
}

// collect adds the figures of the source's snapshot (taken now if the
// last one is too old).
func collect(e *exposition, src *Source) {
	snap := src.Get(context.Background())
	gauge, counter := e.add, e.add
	unix := func(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
	gauge(descUp, b2f(snap.Err == nil))
	gauge(descSnapshotAge, unix(snap.At))
	if st := snap.Status; st != nil {
		if st.NewestWALAt != nil {
			gauge(descWALTime, unix(*st.NewestWALAt))
		}
		if lsn, tli := st.End(); tli != 0 {
			gauge(descWALLSN, float64(lsn))
			gauge(descWALTimeline, float64(tli))
		}
		gauge(descWALGaps, float64(len(st.Gaps)))
		if st.RPOSeconds != nil {
			gauge(descRPO, *st.RPOSeconds)
		}
		gauge(descRPOMeasured, b2f(st.RPOMeasured))
		gauge(descBackups, float64(st.Backups))
		if w := st.Window; w != nil {
			gauge(descWindowStart, unix(w.Earliest))
			gauge(descWindowEnd, unix(w.Latest))
		}
		gauge(descRecoverable, b2f(st.Window != nil))
		gauge(descRepoBytes, float64(st.Size.WAL), "wal")
		gauge(descRepoBytes, float64(st.Size.Backups), "backups")
		gauge(descRepoBytes, float64(st.Size.Garbage), "incomplete_backups")
		gauge(descRepoBytes, float64(st.Size.Other), "other")
		gauge(descProblems, float64(len(st.Problems)))
	}
	if cat := snap.Catalog; cat != nil && len(cat.Backups) > 0 {
		m := cat.Backups[len(cat.Backups)-1]
		gauge(descBackupTime, unix(m.StopTime))
		gauge(descBackupDur, m.Duration().Seconds())
		gauge(descBackupStored, float64(m.Stored))
		gauge(descBackupSize, float64(m.Size))
	}
	if snap.SlotRetained != nil {
		gauge(descSlot, float64(*snap.SlotRetained))
	}
	gauge(descServerUp, b2f(snap.Archiver != nil))
	if a := snap.Archiver; a != nil {
		counter(descArchFailed, float64(a.FailedCount))
		counter(descArchArchived, float64(a.ArchivedCount))
		gauge(descArchFailing, b2f(a.Failing()))
	}
	if src.agent != nil {
		s := snap.Stream
		gauge(descConnected, b2f(s.Connected))
		if s.Durable != 0 {
			gauge(descStreamLSN, float64(s.Durable))
			gauge(descStreamTLI, float64(s.Timeline))
		}
		if !s.DurableAt.IsZero() {
			gauge(descStreamTime, unix(s.DurableAt))
		}
		counter(descSegments, float64(s.Segments))
	}
	for _, k := range snap.Kinds {
		for _, r := range []string{"ok", "failed", "abandoned"} {
			counter(descRuns, float64(k.Totals[r]), k.Kind, r)
		}
		gauge(descRunning, b2f(k.Running), k.Kind)
		if len(k.Runs) > 0 {
			r := k.Runs[0]
			gauge(descLastRun, unix(r.Started), k.Kind)
			gauge(descLastRunDur, r.Duration.Seconds(), k.Kind)
			gauge(descLastRunOK, b2f(r.Result == "ok"), k.Kind)
		}
		if !k.LastSuccess.IsZero() {
			gauge(descLastSuccess, unix(k.LastSuccess), k.Kind)
		}
		if !k.Next.IsZero() {
			gauge(descNextRun, unix(k.Next), k.Kind)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
