package observe

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pgkeep/pgkeep/internal/agent"
	"github.com/pgkeep/pgkeep/internal/repotest"
)

// TestSnapshotMetricsAndPage: the metrics carry the repository's figures
// (the newest backup's stored bytes and stop time, the gap, the window)
// and the page shows the backup, the gap and a run's line, escaped.
func TestSnapshotMetricsAndPage(t *testing.T) {
	t.Setenv("PGHOST", "/nonexistent") // no server: status without it
	env := repotest.New(t)
	env.Init(t)
	now := time.Now()
	env.WAL(t, 1, 2, 4, now.Add(-time.Hour))
	env.WAL(t, 1, 6, 7, now.Add(-30*time.Minute)) // a gap: 5
	m := env.Backup(t, "20261201T090000Z", map[string][]byte{"PG_VERSION": []byte("15\n")}, 2, 3, now.Add(-2*time.Hour), 4096)

	sched := agent.NewScheduler(agent.Plan{})
	src := &Source{Repo: env.Repo(), Scheduler: sched, MaxAge: time.Hour}
	meter := NewMeter()
	meter.Uploaded("wal/00000001/000000010000000000000002", 100)
	meter.UploadFailed("backups/X/data/000001", errors.New("connection reset"))
	reg := Registry(src, meter)
	for name, want := range map[string]float64{
		"pgkeep_backup_last_stored_bytes":              float64(m.Stored),
		"pgkeep_backup_last_success_timestamp_seconds": float64(m.StopTime.UnixNano()) / 1e9,
		"pgkeep_backups":                               1,
		"pgkeep_wal_gaps":                              1,
		"pgkeep_server_up":                             0,
	} {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, mf := range mfs {
			if mf.GetName() == name {
				found = true
				if got := mf.GetMetric()[0].GetGauge().GetValue(); got != want {
					t.Errorf("%s = %v, want %v", name, got, want)
				}
			}
		}
		if !found {
			t.Errorf("no %s", name)
		}
	}
	if got := testutil.ToFloat64(meter.uploaded.WithLabelValues("wal")); got != 100 {
		t.Errorf("uploaded wal bytes %v", got)
	}
	if got := testutil.ToFloat64(meter.failed.WithLabelValues("backup", "transient")); got != 1 {
		t.Errorf("transient backup upload errors %v", got)
	}
	if n, err := testutil.GatherAndCount(reg, "pgkeep_wal_newest_lsn_bytes", "pgkeep_recoverable_window_start_timestamp_seconds"); err != nil || n != 2 {
		// The gap leaves the backup restorable to the gap only: the window
		// exists; the newest LSN is the end of segment 7.
		t.Errorf("window and newest LSN: %d series, %v", n, err)
	}

	var b bytes.Buffer
	snap := src.Get(context.Background())
	snap.Kinds[0].Runs = []agent.RunRecord{{Kind: "backup", Started: now, Duration: time.Second, Result: "failed", Detail: "<script>x</script>"}}
	if err := writePage(&b, snap); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{"20261201T090000Z", "000000010000000000000005", `class="bad">failed`, "&lt;script&gt;", `name="viewport"`} {
		if !strings.Contains(page, want) {
			t.Errorf("the page does not show %q", want)
		}
	}
	if strings.Contains(page, "<script>") {
		t.Errorf("the page did not escape a run's detail")
	}
}
