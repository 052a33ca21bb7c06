package pgcontrol

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/pgversion"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// The fixtures in testdata/majors/N were written by PostgreSQL N itself
// (internal/pgtest TestGenerateFixtures says how): pg_control of a running
// primary, with what the server's pg_control_* functions read in that same
// file (pg_control.json), and the backup_label and backup history file of
// a non-exclusive backup, with the LSNs the server returned (backup.json).

// controlGolden is pg_control.json.
type controlGolden struct {
	ServerVersionNum string `json:"server_version_num"`
	System           struct {
		ControlVersion uint32      `json:"pg_control_version"`
		CatalogVersion uint32      `json:"catalog_version_no"`
		SystemID       json.Number `json:"system_identifier"`
		LastModified   time.Time   `json:"pg_control_last_modified"`
	} `json:"pg_control_system"`
	Checkpoint struct {
		CheckpointLSN  string    `json:"checkpoint_lsn"`
		RedoLSN        string    `json:"redo_lsn"`
		TimeLineID     uint32    `json:"timeline_id"`
		PrevTimeLineID uint32    `json:"prev_timeline_id"`
		FullPageWrites bool      `json:"full_page_writes"`
		NextXID        string    `json:"next_xid"` // epoch:xid
		NextOID        string    `json:"next_oid"`
		Time           time.Time `json:"checkpoint_time"`
	} `json:"pg_control_checkpoint"`
	Init struct {
		MaxAlign          uint32 `json:"max_data_alignment"`
		BlockSize         uint32 `json:"database_block_size"`
		RelSegSize        uint32 `json:"blocks_per_segment"`
		WalBlockSize      uint32 `json:"wal_block_size"`
		WalSegSize        uint32 `json:"bytes_per_wal_segment"`
		NameDataLen       uint32 `json:"max_identifier_length"`
		IndexMaxKeys      uint32 `json:"max_index_columns"`
		ToastMaxChunkSize uint32 `json:"max_toast_chunk_size"`
		LargeObjectChunk  uint32 `json:"large_object_chunk_size"`
		Float8ByVal       bool   `json:"float8_pass_by_value"`
		ChecksumVersion   uint32 `json:"data_page_checksum_version"`
		CharSigned        *bool  `json:"default_char_signedness"` // 18 and later
	} `json:"pg_control_init"`
	Recovery struct {
		MinRecoveryLSN string `json:"min_recovery_end_lsn"`
		MinRecoveryTLI uint32 `json:"min_recovery_end_timeline"`
		BackupStart    string `json:"backup_start_lsn"`
		BackupEnd      string `json:"backup_end_lsn"`
		EndRequired    bool   `json:"end_of_backup_record_required"`
	} `json:"pg_control_recovery"`
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func majorDir(major int) string { return filepath.Join("testdata", "majors", strconv.Itoa(major)) }

func mustLSN(t *testing.T, s string) wal.LSN {
	t.Helper()
	l, err := wal.ParseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestEveryMajorControlFile(t *testing.T) {
	for _, major := range pgversion.Majors() {
		t.Run(strconv.Itoa(major), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(majorDir(major), "pg_control"))
			if err != nil {
				t.Fatal(err)
			}
			var g controlGolden
			readJSON(t, filepath.Join(majorDir(major), "pg_control.json"), &g)
			if n, _ := strconv.Atoi(g.ServerVersionNum); pgversion.MajorOf(n) != major {
				t.Fatalf("fixture of PostgreSQL %d written by server_version_num %s", major, g.ServerVersionNum)
			}
			cf, err := Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			sysID, _ := strconv.ParseUint(g.System.SystemID.String(), 10, 64)
			epoch, xid, _ := strings.Cut(g.Checkpoint.NextXID, ":")
			e, _ := strconv.ParseUint(epoch, 10, 32)
			x, _ := strconv.ParseUint(xid, 10, 32)
			oid, _ := strconv.ParseUint(g.Checkpoint.NextOID, 10, 32)
			want := ControlFile{
				SystemIdentifier: sysID, ControlVersion: g.System.ControlVersion, CatalogVersion: g.System.CatalogVersion,
				State: StateInProduction, Time: g.System.LastModified.UTC(),
				CheckpointLSN: mustLSN(t, g.Checkpoint.CheckpointLSN), RedoLSN: mustLSN(t, g.Checkpoint.RedoLSN),
				TimeLineID: wal.TimeLineID(g.Checkpoint.TimeLineID), PrevTimeLineID: wal.TimeLineID(g.Checkpoint.PrevTimeLineID),
				FullPageWrites: g.Checkpoint.FullPageWrites, NextXID: e<<32 | x, NextOID: uint32(oid), CheckpointTime: g.Checkpoint.Time.UTC(),
				MinRecoveryPoint: mustLSN(t, g.Recovery.MinRecoveryLSN), MinRecoveryPointTLI: wal.TimeLineID(g.Recovery.MinRecoveryTLI),
				BackupStartPoint: mustLSN(t, g.Recovery.BackupStart), BackupEndPoint: mustLSN(t, g.Recovery.BackupEnd),
				BackupEndRequired: g.Recovery.EndRequired,
				MaxAlign:          g.Init.MaxAlign, BlockSize: g.Init.BlockSize, RelSegSize: g.Init.RelSegSize,
				WalBlockSize: g.Init.WalBlockSize, WalSegSize: g.Init.WalSegSize, NameDataLen: g.Init.NameDataLen,
				IndexMaxKeys: g.Init.IndexMaxKeys, ToastMaxChunkSize: g.Init.ToastMaxChunkSize, LargeObjectChunk: g.Init.LargeObjectChunk,
				Float8ByVal: g.Init.Float8ByVal, DataChecksumVersion: g.Init.ChecksumVersion,
			}
			if g.Init.CharSigned != nil {
				want.DefaultCharSigned = *g.Init.CharSigned
			}
			// The SQL functions do not show these; the harness's settings
			// and the fixture's cluster are what they are.
			want.UnloggedLSN, want.WalLevel, want.WalLogHints = cf.UnloggedLSN, WalLevelReplica, false
			want.MaxConnections, want.MaxWorkerProcesses, want.MaxWalSenders = 100, 8, 10
			want.MaxPreparedXacts, want.MaxLocksPerXact, want.TrackCommitTimestamp = 0, 64, false
			if *cf != want {
				t.Errorf("PostgreSQL %d:\n got %+v\nwant %+v", major, *cf, want)
			}
			if m, err := cf.MajorVersion(); err != nil || m != major {
				t.Errorf("major version %d, %v", m, err)
			}
			if (major >= 18) != (g.Init.CharSigned != nil) {
				t.Errorf("default_char_signedness shown by PostgreSQL %d: %v", major, g.Init.CharSigned != nil)
			}

			// Every byte under the layout's CRC is covered, and the CRC is
			// where the layout says.
			layout, _ := layoutOf(cf.ControlVersion)
			for off := 0; off < layout.crc+4; off++ {
				bad := bytes.Clone(data)
				bad[off] ^= 0x20
				if c, err := Parse(bad); !errors.Is(err, ErrCorrupt) {
					t.Fatalf("flipped byte %d: %+v, %v", off, c, err)
				}
			}
			if _, err := Parse(data[:layout.crc+4]); err != nil {
				t.Errorf("the %d bytes up to the CRC should do: %v", layout.crc+4, err)
			}
			if _, err := Parse(data[:layout.crc+3]); !errors.Is(err, ErrCorrupt) {
				t.Errorf("cut into the CRC: %v", err)
			}

			// The same file from a PostgreSQL pgkeep does not know (the
			// version field made 1900, the CRC recomputed): unsupported,
			// naming the major.
			next := bytes.Clone(data)
			next[offControlVersion], next[offControlVersion+1] = 0x6C, 0x07 // 1900
			recrcAt(next, layout.crc)
			var ue *pgversion.UnsupportedError
			if _, err := Parse(next); !errors.As(err, &ue) || ue.Major != 19 || errors.Is(err, ErrCorrupt) {
				t.Errorf("as version 1900: %v", err)
			}
		})
	}
}

func TestEveryMajorBackupLabel(t *testing.T) {
	for _, major := range pgversion.Majors() {
		t.Run(strconv.Itoa(major), func(t *testing.T) {
			var lsns struct {
				Start   string `json:"start_lsn"`
				Stop    string `json:"stop_lsn"`
				History string `json:"history_file"`
			}
			readJSON(t, filepath.Join(majorDir(major), "backup.json"), &lsns)
			// PostgreSQL 12 and 13 name the primary "master" (renamed in 14).
			from := "primary"
			if major < 14 {
				from = "master"
			}
			for _, name := range []string{"backup_label", "backup_history"} {
				data, err := os.ReadFile(filepath.Join(majorDir(major), name))
				if err != nil {
					t.Fatal(err)
				}
				b, err := ParseBackupLabel(data)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				start := mustLSN(t, lsns.Start)
				if b.StartLSN != start || b.StartWALFile != wal.SegmentName(1, wal.SegmentOf(start, 16<<20), 16<<20) ||
					b.CheckpointLSN < start || b.BackupMethod != "streamed" || b.BackupFrom != from ||
					b.Label != "fixture label" || b.StartTimeline != 1 || !strings.HasSuffix(b.StartTime, " UTC") {
					t.Errorf("%s: %+v", name, b)
				}
				if err := b.Validate(16 << 20); err != nil {
					t.Errorf("%s: %v", name, err)
				}
				if name == "backup_label" && (b.StopLSN != 0 || b.StopWALFile != "" || b.StopTime != "") {
					t.Errorf("backup_label has stop fields: %+v", b)
				}
				if name == "backup_history" {
					if b.StopLSN != mustLSN(t, lsns.Stop) || b.StopTimeline != 1 || b.StopTime == "" {
						t.Errorf("history file: %+v, stop %s", b, lsns.Stop)
					}
					if k, err := wal.Classify(lsns.History); err != nil || k != wal.KindBackupHistory {
						t.Errorf("history file name %s: %v %v", lsns.History, k, err)
					}
				}
			}
		})
	}
}
