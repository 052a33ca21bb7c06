package pgstat

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseSetting(t *testing.T) {
	for in, want := range map[string]time.Duration{"0": 0, "60": time.Minute, "1min": time.Minute, "5s": 5 * time.Second, "2h": 2 * time.Hour, "1d": 24 * time.Hour, "500ms": 500 * time.Millisecond} {
		if got, err := parseSetting(in); err != nil || got != want {
			t.Errorf("%q: %v %v", in, got, err)
		}
	}
	if _, err := parseSetting("soon"); err == nil {
		t.Error("junk accepted")
	}
}

func TestFailing(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	later := t0.Add(time.Minute)
	a := &Archiver{FailedCount: 3, LastFailedAt: &later, LastFailedWAL: "000000010000000000000007", LastArchivedAt: &t0, LastArchivedWAL: "000000010000000000000006", Command: "pgkeep wal-push %p"}
	if !a.Failing() {
		t.Fatal("a failure after the last success is failing")
	}
	if txt := a.FailureText(); !strings.Contains(txt, "000000010000000000000007") || !strings.Contains(txt, "PostgreSQL log") {
		t.Fatalf("failure text: %s", txt)
	}
	a.LastPushError = &PushFailure{File: "000000010000000000000007", Error: "PostgreSQL 19 is not supported"}
	if txt := a.FailureText(); !strings.Contains(txt, "PostgreSQL 19 is not supported") {
		t.Fatalf("failure text with wal-push's error: %s", txt)
	}
	a.LastFailedAt = &t0
	a.LastArchivedAt = &later
	if a.Failing() {
		t.Fatal("recovered archiver reported as failing")
	}
	if (&Archiver{}).Failing() {
		t.Fatal("fresh archiver failing")
	}
}

func TestPushFailureRecord(t *testing.T) {
	dir := t.TempDir()
	if ReadPushFailure(dir) != nil {
		t.Fatal("record out of nothing")
	}
	RecordPushFailure(dir, "000000010000000000000003", errors.New("boom"))
	f := ReadPushFailure(dir)
	if f == nil || f.File != "000000010000000000000003" || f.Error != "boom" {
		t.Fatalf("%+v", f)
	}
	ClearPushFailure(dir)
	if ReadPushFailure(dir) != nil {
		t.Fatal("record survived a success")
	}
}

func TestRPOWarning(t *testing.T) {
	if w := (&Archiver{Mode: "on"}).RPOWarning(0); !strings.Contains(w, "archive_timeout is 0") {
		t.Fatalf("off: %q", w)
	}
	a := &Archiver{Mode: "on", Timeout: Seconds(10 * time.Minute)}
	if w := a.RPOWarning(5 * time.Minute); !strings.Contains(w, "longer than --max-rpo") {
		t.Fatalf("too long: %q", w)
	}
	if w := a.RPOWarning(time.Hour); w != "" {
		t.Fatalf("within: %q", w)
	}
}
