package pgcontrol

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pgkeep/pgkeep/internal/wal"
)

// BackupLabel is the content of a backup_label file, the labelfile text
// pg_backup_stop (pg_stop_backup before PostgreSQL 15) returns, or of a
// backup history file (NNN.NNNNNNNN.backup), which adds the STOP lines.
// PostgreSQL 15 writes (xlogbackup.c, build_backup_content):
//
//	START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
//	STOP WAL LOCATION: 0/3000050 (file 000000010000000000000003)   history file only
//	CHECKPOINT LOCATION: 0/2000060
//	BACKUP METHOD: streamed
//	BACKUP FROM: primary
//	START TIME: 2026-11-24 17:52:31 UTC
//	LABEL: nightly
//	START TIMELINE: 1
//	STOP TIME: 2026-11-24 17:52:31 UTC                               history file only
//	STOP TIMELINE: 1                                                 history file only
//
// PostgreSQL 17 adds INCREMENTAL FROM LSN and INCREMENTAL FROM TLI for
// incremental backups, and 18 writes the same lines as 17. PostgreSQL 12
// and 13 write "BACKUP FROM: master" for a primary (14 renamed it
// "primary"). pg_rewind writes a label with only the first five lines and
// BACKUP METHOD: pg_rewind. testdata/majors holds a label and a history
// file from each major.
type BackupLabel struct {
	StartLSN      wal.LSN        // START WAL LOCATION: the redo point of the backup's checkpoint
	StartWALFile  string         // the segment holding StartLSN, from START WAL LOCATION
	CheckpointLSN wal.LSN        // CHECKPOINT LOCATION: where the checkpoint record is
	BackupMethod  string         // "streamed"; "pg_start_backup" for exclusive backups (before 15); "pg_rewind"
	BackupFrom    string         // "primary" ("master" before 14) or "standby"; empty if absent
	StartTime     string         // as written: "%Y-%m-%d %H:%M:%S %Z" in the server's log_timezone
	Label         string         // LABEL
	StartTimeline wal.TimeLineID // START TIMELINE, or the timeline of StartWALFile if absent

	// Backup history files only; zero otherwise.
	StopLSN      wal.LSN
	StopWALFile  string
	StopTime     string
	StopTimeline wal.TimeLineID

	// PostgreSQL 17 incremental backups only; zero otherwise.
	IncrementalFromLSN wal.LSN
	IncrementalFromTLI wal.TimeLineID
}

// ParseBackupLabel parses a backup_label or backup history file. START
// WAL LOCATION and CHECKPOINT LOCATION are required, as PostgreSQL requires
// them; the other lines are optional, may come in any order, and lines
// PostgreSQL does not write are ignored (a later release may add some). A
// line that appears twice is an error, as is a START TIMELINE that
// disagrees with the start file's timeline (PostgreSQL refuses that too)
// or a checkpoint before the start location.
func ParseBackupLabel(data []byte) (*BackupLabel, error) {
	var b BackupLabel
	seen := map[string]bool{}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSuffix(line, "\r")
		key, value, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		known, err := b.setField(key, value)
		if !known {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("backup label line %d: %s: %w", i+1, key, err)
		}
		if seen[key] {
			return nil, fmt.Errorf("backup label line %d: %s appears twice", i+1, key)
		}
		seen[key] = true
	}
	for _, key := range []string{"START WAL LOCATION", "CHECKPOINT LOCATION"} {
		if !seen[key] {
			return nil, fmt.Errorf("backup label has no %s line", key)
		}
	}
	fileTLI := wal.TimelineOf(b.StartWALFile)
	if b.StartTimeline == 0 {
		b.StartTimeline = fileTLI
	} else if b.StartTimeline != fileTLI {
		return nil, fmt.Errorf("backup label: START TIMELINE %d disagrees with start file %s", b.StartTimeline, b.StartWALFile)
	}
	if b.CheckpointLSN < b.StartLSN {
		return nil, fmt.Errorf("backup label: checkpoint %s is before the start location %s", b.CheckpointLSN, b.StartLSN)
	}
	if seen["STOP WAL LOCATION"] {
		if b.StopLSN < b.StartLSN {
			return nil, fmt.Errorf("backup label: stop location %s is before the start location %s", b.StopLSN, b.StartLSN)
		}
		if b.StopTimeline == 0 {
			b.StopTimeline = wal.TimelineOf(b.StopWALFile)
		}
	}
	return &b, nil
}

// setField stores the value of a line PostgreSQL writes in b. It reports
// whether key is one of those lines.
func (b *BackupLabel) setField(key, v string) (known bool, err error) {
	switch key {
	case "START WAL LOCATION":
		b.StartLSN, b.StartWALFile, err = parseWALLocation(v)
	case "STOP WAL LOCATION":
		b.StopLSN, b.StopWALFile, err = parseWALLocation(v)
	case "CHECKPOINT LOCATION":
		b.CheckpointLSN, err = wal.ParseLSN(v)
	case "BACKUP METHOD":
		b.BackupMethod = v
	case "BACKUP FROM":
		b.BackupFrom = v
	case "START TIME":
		b.StartTime = v
	case "STOP TIME":
		b.StopTime = v
	case "LABEL":
		b.Label = v
	case "START TIMELINE":
		b.StartTimeline, err = parseTimeline(v)
	case "STOP TIMELINE":
		b.StopTimeline, err = parseTimeline(v)
	case "INCREMENTAL FROM LSN":
		b.IncrementalFromLSN, err = wal.ParseLSN(v)
	case "INCREMENTAL FROM TLI":
		b.IncrementalFromTLI, err = parseTimeline(v)
	default:
		return false, nil
	}
	return true, err
}

// parseWALLocation parses "0/2000028 (file 000000010000000000000002)".
func parseWALLocation(v string) (wal.LSN, string, error) {
	lsnText, rest, ok := strings.Cut(v, " (file ")
	name, ok2 := strings.CutSuffix(rest, ")")
	if !ok || !ok2 {
		return 0, "", fmt.Errorf("%q is not like \"0/2000028 (file 000000010000000000000002)\"", v)
	}
	lsn, err := wal.ParseLSN(lsnText)
	if err != nil {
		return 0, "", err
	}
	if k, err := wal.Classify(name); err != nil || k != wal.KindSegment {
		return 0, "", fmt.Errorf("%q is not a WAL segment name", name)
	}
	return lsn, name, nil
}

func parseTimeline(v string) (wal.TimeLineID, error) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a timeline ID", v)
	}
	return wal.TimeLineID(n), nil
}

// Validate checks the label against the cluster's WAL segment size: the
// start file must be the segment that holds the start location, and in a
// backup history file the stop file the segment that holds the stop
// location (or, when the stop location is on a segment boundary, the
// segment before it).
func (b *BackupLabel) Validate(segSize uint64) error {
	if !wal.ValidSegSize(segSize) {
		return fmt.Errorf("validating backup label: invalid WAL segment size %d", segSize)
	}
	if want := wal.SegmentName(b.StartTimeline, wal.SegmentOf(b.StartLSN, segSize), segSize); b.StartWALFile != want {
		return fmt.Errorf("backup label: start location %s is in %s, not %s, with %d-byte segments", b.StartLSN, want, b.StartWALFile, segSize)
	}
	if b.StopWALFile != "" {
		tli := b.StopTimeline
		if tli == 0 {
			tli = wal.TimelineOf(b.StopWALFile)
		}
		at := wal.SegmentName(tli, wal.SegmentOf(b.StopLSN, segSize), segSize)
		before := at
		if b.StopLSN > 0 {
			before = wal.SegmentName(tli, wal.PrevSegmentOf(b.StopLSN, segSize), segSize)
		}
		if b.StopWALFile != at && b.StopWALFile != before {
			return fmt.Errorf("backup label: stop location %s is in %s, not %s, with %d-byte segments", b.StopLSN, at, b.StopWALFile, segSize)
		}
	}
	return nil
}
