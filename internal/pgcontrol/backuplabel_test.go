package pgcontrol

import (
	"os"
	"strings"
	"testing"

	"github.com/pgkeep/pgkeep/internal/wal"
)

// The fixtures were written by PostgreSQL 15: backup_label_15 and
// backup_label_15_standby are the labelfile column of pg_backup_stop on a
// primary and on a standby; backup_history_15 is the backup history file
// the primary archived for the first backup.
func TestParseRealBackupLabels(t *testing.T) {
	cases := []struct {
		file string
		want BackupLabel
	}{
		{"testdata/backup_label_15", BackupLabel{
			StartLSN: 0x2000028, StartWALFile: "000000010000000000000002", CheckpointLSN: 0x2000060,
			BackupMethod: "streamed", BackupFrom: "primary", StartTime: "2026-11-24 17:52:31 UTC",
			Label: "nightly label with spaces", StartTimeline: 1,
		}},
		{"testdata/backup_label_15_standby", BackupLabel{
			StartLSN: 0x6003E20, StartWALFile: "000000010000000000000006", CheckpointLSN: 0x6003E58,
			BackupMethod: "streamed", BackupFrom: "standby", StartTime: "2026-11-24 17:52:33 UTC",
			Label: "standby backup", StartTimeline: 1,
		}},
		{"testdata/backup_history_15", BackupLabel{
			StartLSN: 0x2000028, StartWALFile: "000000010000000000000002", CheckpointLSN: 0x2000060,
			BackupMethod: "streamed", BackupFrom: "primary", StartTime: "2026-11-24 17:52:31 UTC",
			Label: "nightly label with spaces", StartTimeline: 1,
			StopLSN: 0x3000050, StopWALFile: "000000010000000000000003", StopTime: "2026-11-24 17:52:31 UTC", StopTimeline: 1,
		}},
	}
	for _, c := range cases {
		data, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseBackupLabel(data)
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		if *got != c.want {
			t.Errorf("%s:\n got %+v\nwant %+v", c.file, *got, c.want)
		}
		if err := got.Validate(16 << 20); err != nil {
			t.Errorf("%s: %v", c.file, err)
		}
		// 0/2000028 is in segment 0 of 1 GiB segments, not 2.
		if err := got.Validate(1 << 30); err == nil {
			t.Errorf("%s validated with 1 GiB segments", c.file)
		}
	}
}

func TestParseBackupLabel(t *testing.T) {
	const base = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\n"
	// pg_rewind's label: no LABEL, no START TIMELINE.
	rewind := base + "BACKUP METHOD: pg_rewind\nBACKUP FROM: standby\nSTART TIME: 2026-01-01 00:00:00 CET\n"
	b, err := ParseBackupLabel([]byte(rewind))
	if err != nil || b.BackupMethod != "pg_rewind" || b.StartTimeline != 1 || b.Label != "" {
		t.Errorf("pg_rewind label: %+v, %v", b, err)
	}
	// PostgreSQL 17 incremental backup; lines in another order, CRLF, an
	// unknown line, an empty label.
	inc := "LABEL: \r\nCHECKPOINT LOCATION: 0/9000060\r\nSTART WAL LOCATION: 0/9000028 (file 000000030000000000000009)\r\n" +
		"START TIMELINE: 3\r\nINCREMENTAL FROM LSN: 0/5000028\r\nINCREMENTAL FROM TLI: 2\r\nSOME FUTURE LINE: x\r\n"
	b, err = ParseBackupLabel([]byte(inc))
	if err != nil || b.IncrementalFromLSN != 0x5000028 || b.IncrementalFromTLI != 2 || b.StartTimeline != 3 || b.Label != "" {
		t.Errorf("incremental label: %+v, %v", b, err)
	}
	// A label with ": " and odd characters in it.
	b, err = ParseBackupLabel([]byte(base + "LABEL: a: b (file c) é\n"))
	if err != nil || b.Label != "a: b (file c) é" {
		t.Errorf("label text: %+v, %v", b, err)
	}

	bad := map[string]string{
		"empty":                  "",
		"no start":               "CHECKPOINT LOCATION: 0/2000060\n",
		"no checkpoint":          "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n",
		"bad start LSN":          "START WAL LOCATION: 0/20000x8 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000060\n",
		"no file":                "START WAL LOCATION: 0/2000028\nCHECKPOINT LOCATION: 0/2000060\n",
		"bad file":               "START WAL LOCATION: 0/2000028 (file 00000001000000000000000z)\nCHECKPOINT LOCATION: 0/2000060\n",
		"history file as start":  "START WAL LOCATION: 0/2000028 (file 00000001.history)\nCHECKPOINT LOCATION: 0/2000060\n",
		"file timeline 0":        "START WAL LOCATION: 0/2000028 (file 000000000000000000000002)\nCHECKPOINT LOCATION: 0/2000060\n",
		"unclosed":               "START WAL LOCATION: 0/2000028 (file 000000010000000000000002\nCHECKPOINT LOCATION: 0/2000060\n",
		"bad checkpoint":         "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: x\n",
		"checkpoint before redo": "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000000\n",
		"timeline mismatch":      base + "START TIMELINE: 2\n",
		"timeline 0":             base + "START TIMELINE: 0\n",
		"timeline text":          base + "START TIMELINE: one\n",
		"duplicate":              base + "CHECKPOINT LOCATION: 0/2000070\n",
		"duplicate label":        base + "LABEL: a\nLABEL: b\n",
		"stop before start":      base + "STOP WAL LOCATION: 0/1000000 (file 000000010000000000000001)\n",
		"bad stop timeline":      base + "STOP TIMELINE: -1\n",
		"bad incremental LSN":    base + "INCREMENTAL FROM LSN: 5000028\n",
	}
	for name, text := range bad {
		if b, err := ParseBackupLabel([]byte(text)); err == nil {
			t.Errorf("%s: accepted as %+v", name, b)
		}
	}

	// Validate: the stop file may name the segment before a boundary.
	b, err = ParseBackupLabel([]byte(base + "STOP WAL LOCATION: 0/4000000 (file 000000010000000000000003)\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Validate(16 << 20); err != nil {
		t.Errorf("stop on a boundary: %v", err)
	}
	b.StopWALFile = "000000010000000000000005"
	if err := b.Validate(16 << 20); err == nil {
		t.Error("wrong stop file validated")
	}
	if err := b.Validate(3 << 20); err == nil {
		t.Error("bad segment size validated")
	}
}

func FuzzParseBackupLabel(f *testing.F) {
	for _, name := range []string{"backup_label_15", "backup_label_15_standby", "backup_history_15"} {
		data, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("START WAL LOCATION: 0/9000028 (file 000000030000000000000009)\nCHECKPOINT LOCATION: 0/9000060\nINCREMENTAL FROM LSN: 0/5000028\nINCREMENTAL FROM TLI: 2\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseBackupLabel(data)
		if err != nil {
			return
		}
		if b.StartTimeline == 0 || wal.TimelineOf(b.StartWALFile) != b.StartTimeline || b.CheckpointLSN < b.StartLSN {
			t.Fatalf("inconsistent label accepted: %+v", b)
		}
		if k, err := wal.Classify(b.StartWALFile); err != nil || k != wal.KindSegment {
			t.Fatalf("start file %q", b.StartWALFile)
		}
		if b.StopWALFile != "" && b.StopLSN < b.StartLSN {
			t.Fatalf("stop before start: %+v", b)
		}
		for _, f := range []string{b.Label, b.BackupMethod, b.BackupFrom, b.StartTime, b.StopTime} {
			if strings.ContainsAny(f, "\n") {
				t.Fatalf("field spans lines: %q", f)
			}
		}
		_ = b.Validate(16 << 20)
	})
}
