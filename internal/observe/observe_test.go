package observe

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

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
	var out bytes.Buffer
	if err := WriteMetrics(&out, src, meter); err != nil {
		t.Fatal(err)
	}
	series, types := parseExposition(t, out.String())
	for name, want := range map[string]float64{
		"pgkeep_backup_last_stored_bytes":                              float64(m.Stored),
		"pgkeep_backup_last_success_timestamp_seconds":                 float64(m.StopTime.UnixNano()) / 1e9,
		"pgkeep_backups":                                               1,
		"pgkeep_wal_gaps":                                              1,
		"pgkeep_server_up":                                             0,
		`pgkeep_uploaded_bytes_total{object="wal"}`:                    100,
		`pgkeep_uploaded_bytes_total{object="backup"}`:                 0,
		`pgkeep_upload_errors_total{kind="transient",object="backup"}`: 1,
		`pgkeep_upload_errors_total{kind="permanent",object="wal"}`:    0,
		"go_goroutines":                                                -1, // present; any value
		"process_resident_memory_bytes":                                -1,
	} {
		got, ok := series[name]
		switch {
		case !ok:
			t.Errorf("no %s in\n%s", name, out.String())
		case want >= 0 && got != want:
			t.Errorf("%s = %v, want %v", name, got, want)
		case want < 0 && got <= 0:
			t.Errorf("%s = %v, want a positive value", name, got)
		}
	}
	for name, want := range map[string]string{"pgkeep_backups": "gauge", "pgkeep_uploaded_bytes_total": "counter", "process_cpu_seconds_total": "counter"} {
		if types[name] != want {
			t.Errorf("%s has type %q, want %s", name, types[name], want)
		}
	}
	// The gap leaves the backup restorable to the gap only: the window
	// exists; the newest LSN is the end of segment 7 (repotest's segments
	// are 1 MiB).
	if got, want := series["pgkeep_wal_newest_lsn_bytes"], float64(8<<20); got != want {
		t.Errorf("newest LSN %v, want %v", got, want)
	}
	if _, ok := series["pgkeep_recoverable_window_start_timestamp_seconds"]; !ok {
		t.Error("no window start")
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

// parseExposition checks the text format strictly enough to catch a broken
// writer (every sample under its family's HELP and TYPE, each family
// declared once, values that parse) and returns the samples (name and
// labels as written) and the families' types.
func parseExposition(t *testing.T, text string) (map[string]float64, map[string]string) {
	t.Helper()
	series, types := map[string]float64{}, map[string]string{}
	family := ""
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		switch {
		case strings.HasPrefix(line, "# HELP "):
			name, _, _ := strings.Cut(strings.TrimPrefix(line, "# HELP "), " ")
			if _, dup := types[name]; dup {
				t.Fatalf("family %s declared twice", name)
			}
			family = name
		case strings.HasPrefix(line, "# TYPE "):
			f := strings.Fields(strings.TrimPrefix(line, "# TYPE "))
			if len(f) != 2 || f[0] != family {
				t.Fatalf("TYPE line %q not after its HELP", line)
			}
			types[f[0]] = f[1]
		default:
			i := strings.LastIndexByte(line, ' ')
			if i < 0 {
				t.Fatalf("sample line %q", line)
			}
			name, _, _ := strings.Cut(line[:i], "{")
			if name != family {
				t.Fatalf("sample %q outside its family (%s)", line, family)
			}
			v, err := strconv.ParseFloat(line[i+1:], 64)
			if err != nil {
				t.Fatalf("sample %q: %v", line, err)
			}
			series[line[:i]] = v
		}
	}
	return series, types
}

// TestExpositionEscapes: label values and help texts are escaped as the
// format says, and special values are spelled as it wants.
func TestExpositionEscapes(t *testing.T) {
	e := newExposition()
	d := gaugeDesc("x_value", "a help with \\ and\na newline", "l")
	e.add(d, 1.5, "a \"quoted\" \\ value\n")
	e.add(d, math.Inf(1), "b")
	e.add(d, math.NaN(), "c")
	var b bytes.Buffer
	if err := e.writeTo(&b); err != nil {
		t.Fatal(err)
	}
	want := "# HELP x_value a help with \\\\ and\\na newline\n# TYPE x_value gauge\n" +
		`x_value{l="a \"quoted\" \\ value\n"} 1.5` + "\n" + `x_value{l="b"} +Inf` + "\n" + `x_value{l="c"} NaN` + "\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	defer func() {
		if recover() == nil {
			t.Error("a sample with the wrong number of label values was accepted")
		}
	}()
	e.add(d, 1)
}
