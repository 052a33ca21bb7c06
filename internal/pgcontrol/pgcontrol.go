// Package pgcontrol reads the small files that describe a PostgreSQL data
// directory and a base backup: the control file (global/pg_control),
// PG_VERSION, the backup_label text that pg_backup_stop returns (and the
// backup history files the server archives), and tablespace_map.
//
// Layouts are those of PostgreSQL 12 to 17 on little-endian 64-bit
// machines (amd64, arm64), the platforms pgkeep supports.
package pgcontrol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pgkeep/pgkeep/internal/wal"
)

// ErrCorrupt is wrapped when the control file fails its CRC or holds
// values no PostgreSQL writes.
var ErrCorrupt = errors.New("pg_control is damaged")

// ErrUnsupportedVersion is wrapped when pg_control_version is not one of
// the layouts pgkeep reads (those of PostgreSQL 12 to 17).
var ErrUnsupportedVersion = errors.New("unsupported pg_control version")

// DBState is the cluster state recorded in pg_control (enum DBState).
type DBState uint32

// The cluster states, in PostgreSQL's numbering (unchanged from 9.4 to 17).
const (
	StateStartup              DBState = iota // DB_STARTUP
	StateShutdowned                          // DB_SHUTDOWNED: cleanly shut down
	StateShutdownedInRecovery                // DB_SHUTDOWNED_IN_RECOVERY: a standby shut down
	StateShutdowning                         // DB_SHUTDOWNING
	StateInCrashRecovery                     // DB_IN_CRASH_RECOVERY
	StateInArchiveRecovery                   // DB_IN_ARCHIVE_RECOVERY: recovering, or a standby
	StateInProduction                        // DB_IN_PRODUCTION: running (or crashed while running)
)

// String returns the state as pg_controldata prints it.
func (s DBState) String() string {
	switch s {
	case StateStartup:
		return "starting up"
	case StateShutdowned:
		return "shut down"
	case StateShutdownedInRecovery:
		return "shut down in recovery"
	case StateShutdowning:
		return "shutting down"
	case StateInCrashRecovery:
		return "in crash recovery"
	case StateInArchiveRecovery:
		return "in archive recovery"
	case StateInProduction:
		return "in production"
	}
	return fmt.Sprintf("unrecognized status code %d", uint32(s))
}

// WalLevel is the wal_level setting recorded in pg_control (enum
// WalLevel, PostgreSQL 9.6 and later).
type WalLevel int32

// The wal_level values.
const (
	WalLevelMinimal WalLevel = iota
	WalLevelReplica
	WalLevelLogical
)

func (l WalLevel) String() string {
	switch l {
	case WalLevelMinimal:
		return "minimal"
	case WalLevelReplica:
		return "replica"
	case WalLevelLogical:
		return "logical"
	}
	return fmt.Sprintf("unrecognized wal_level %d", int32(l))
}

// ControlFile holds the fields of pg_control (ControlFileData). Names
// follow pg_controldata's descriptions.
type ControlFile struct {
	SystemIdentifier uint64 // "Database system identifier"
	ControlVersion   uint32 // "pg_control version number": 1201, 1300 or 1700
	CatalogVersion   uint32 // "Catalog version number", YYYYMMDDN
	State            DBState
	Time             time.Time // "pg_control last modified"

	// The latest checkpoint.
	CheckpointLSN  wal.LSN        // "Latest checkpoint location"
	RedoLSN        wal.LSN        // "Latest checkpoint's REDO location"
	TimeLineID     wal.TimeLineID // "Latest checkpoint's TimeLineID"
	PrevTimeLineID wal.TimeLineID // "Latest checkpoint's PrevTimeLineID"
	FullPageWrites bool           // "Latest checkpoint's full_page_writes"
	NextXID        uint64         // "Latest checkpoint's NextXID", epoch in the high 32 bits
	NextOID        uint32         // "Latest checkpoint's NextOID"
	CheckpointTime time.Time      // "Time of latest checkpoint"

	UnloggedLSN         wal.LSN        // "Fake LSN counter for unlogged rels"
	MinRecoveryPoint    wal.LSN        // "Minimum recovery ending location"
	MinRecoveryPointTLI wal.TimeLineID // "Min recovery ending loc's timeline"
	BackupStartPoint    wal.LSN        // "Backup start location"
	BackupEndPoint      wal.LSN        // "Backup end location"
	BackupEndRequired   bool           // "End-of-backup record required"

	// Settings that decide what the WAL can be used for.
	WalLevel             WalLevel
	WalLogHints          bool
	MaxConnections       int32
	MaxWorkerProcesses   int32
	MaxWalSenders        int32
	MaxPreparedXacts     int32
	MaxLocksPerXact      int32
	TrackCommitTimestamp bool

	// Compile-time settings of the server that wrote the cluster.
	MaxAlign            uint32 // "Maximum data alignment"
	BlockSize           uint32 // BLCKSZ, "Database block size"
	RelSegSize          uint32 // RELSEG_SIZE in blocks, "Blocks per segment of large relation"
	WalBlockSize        uint32 // XLOG_BLCKSZ, "WAL block size"
	WalSegSize          uint32 // "Bytes per WAL segment"
	NameDataLen         uint32 // "Maximum length of identifiers"
	IndexMaxKeys        uint32 // "Maximum columns in an index"
	ToastMaxChunkSize   uint32 // "Maximum size of a TOAST chunk"
	LargeObjectChunk    uint32 // "Size of a large-object chunk"
	Float8ByVal         bool   // "Float8 argument passing": by value
	DataChecksumVersion uint32 // "Data page checksum version": 0 = checksums off
}

// The pg_control_version values of PostgreSQL 12 to 17.
const (
	controlVersion12 = 1201 // PostgreSQL 12
	controlVersion13 = 1300 // PostgreSQL 13 to 16
	controlVersion17 = 1700 // PostgreSQL 17: wal_level added to CheckPoint
)

// Layout of ControlFileData in PostgreSQL 12 to 17 with 8-byte alignment of
// 64-bit fields. The three layouts share every offset:
//   - PostgreSQL 13 dropped float4ByVal (a bool right before float8ByVal),
//     but data_checksum_version stays 4-aligned at 252 either way;
//   - PostgreSQL 17 put wal_level (int) into CheckPoint's padding after
//     fullPageWrites, so CheckPoint keeps its size (88 bytes).
//
// The CRC32C at offset 288 covers bytes 0 to 287.
const (
	offSystemIdentifier = 0
	offControlVersion   = 8
	offCatalogVersion   = 12
	offState            = 16
	offTime             = 24
	offCheckPoint       = 32
	offCheckPointCopy   = 40 // CheckPoint struct:
	offRedo             = offCheckPointCopy + 0
	offThisTLI          = offCheckPointCopy + 8
	offPrevTLI          = offCheckPointCopy + 12
	offFullPageWrites   = offCheckPointCopy + 16
	offNextXID          = offCheckPointCopy + 24
	offNextOID          = offCheckPointCopy + 32
	offCheckPointTime   = offCheckPointCopy + 64
	offUnloggedLSN      = 128
	offMinRecoveryPoint = 136
	offMinRecoveryTLI   = 144
	offBackupStartPoint = 152
	offBackupEndPoint   = 160
	offBackupEndReq     = 168
	offWalLevel         = 172
	offWalLogHints      = 176
	offMaxConnections   = 180
	offMaxWorkers       = 184
	offMaxWalSenders    = 188
	offMaxPrepared      = 192
	offMaxLocks         = 196
	offTrackCommitTS    = 200
	offMaxAlign         = 204
	offFloatFormat      = 208
	offBlockSize        = 216
	offRelSegSize       = 220
	offWalBlockSize     = 224
	offWalSegSize       = 228
	offNameDataLen      = 232
	offIndexMaxKeys     = 236
	offToastMaxChunk    = 240
	offLOBlockSize      = 244
	offFloat8ByVal      = 248 // PostgreSQL 12: float4ByVal at 248, float8ByVal at 249
	offChecksumVersion  = 252
	offCRC              = 288 // after the 32-byte mock authentication nonce

	floatFormatValue = 1234567.0 // FLOATFORMAT_VALUE
)

// FileSize is the size of global/pg_control on disk (PG_CONTROL_FILE_SIZE);
// only the first 292 bytes carry data.
const FileSize = 8192

// Parse decodes a pg_control image (normally FileSize bytes, at least the
// 292 that hold data), verifies its CRC-32C and checks that its values are
// plausible. Errors wrap ErrCorrupt or ErrUnsupportedVersion.
func Parse(data []byte) (*ControlFile, error) {
	if len(data) < offCRC+4 {
		return nil, fmt.Errorf("%w: %d bytes, need at least %d", ErrCorrupt, len(data), offCRC+4)
	}
	le := binary.LittleEndian
	version := le.Uint32(data[offControlVersion:])
	crc := crc32.Checksum(data[:offCRC], crc32.MakeTable(crc32.Castagnoli))
	crcOK := crc == le.Uint32(data[offCRC:])
	switch version {
	case controlVersion12, controlVersion13, controlVersion17:
	default:
		if knownVersion(bits.ReverseBytes32(version)) {
			return nil, fmt.Errorf("%w: pg_control was written by a big-endian machine (version %d byte-swapped)", ErrUnsupportedVersion, bits.ReverseBytes32(version))
		}
		if !crcOK {
			return nil, fmt.Errorf("%w: pg_control version %d is not one PostgreSQL 12 to 17 writes (1201, 1300, 1700), and the CRC does not match either: %w", ErrCorrupt, version, ErrUnsupportedVersion)
		}
		return nil, fmt.Errorf("%w %d: pgkeep reads the pg_control of PostgreSQL 12 to 17 (versions 1201, 1300, 1700)", ErrUnsupportedVersion, version)
	}
	if !crcOK {
		return nil, fmt.Errorf("%w: CRC mismatch (stored %08X, computed %08X)", ErrCorrupt, le.Uint32(data[offCRC:]), crc)
	}
	u32 := func(off int) uint32 { return le.Uint32(data[off:]) }
	i32 := func(off int) int32 { return int32(le.Uint32(data[off:])) }
	u64 := func(off int) uint64 { return le.Uint64(data[off:]) }
	lsn := func(off int) wal.LSN { return wal.LSN(le.Uint64(data[off:])) }
	flag := func(off int) bool { return data[off] != 0 }
	unix := func(off int) time.Time { return time.Unix(int64(le.Uint64(data[off:])), 0).UTC() }

	cf := &ControlFile{
		SystemIdentifier: u64(offSystemIdentifier),
		ControlVersion:   version,
		CatalogVersion:   u32(offCatalogVersion),
		State:            DBState(u32(offState)),
		Time:             unix(offTime),

		CheckpointLSN:  lsn(offCheckPoint),
		RedoLSN:        lsn(offRedo),
		TimeLineID:     wal.TimeLineID(u32(offThisTLI)),
		PrevTimeLineID: wal.TimeLineID(u32(offPrevTLI)),
		FullPageWrites: flag(offFullPageWrites),
		NextXID:        u64(offNextXID),
		NextOID:        u32(offNextOID),
		CheckpointTime: unix(offCheckPointTime),

		UnloggedLSN:         lsn(offUnloggedLSN),
		MinRecoveryPoint:    lsn(offMinRecoveryPoint),
		MinRecoveryPointTLI: wal.TimeLineID(u32(offMinRecoveryTLI)),
		BackupStartPoint:    lsn(offBackupStartPoint),
		BackupEndPoint:      lsn(offBackupEndPoint),
		BackupEndRequired:   flag(offBackupEndReq),

		WalLevel:             WalLevel(i32(offWalLevel)),
		WalLogHints:          flag(offWalLogHints),
		MaxConnections:       i32(offMaxConnections),
		MaxWorkerProcesses:   i32(offMaxWorkers),
		MaxWalSenders:        i32(offMaxWalSenders),
		MaxPreparedXacts:     i32(offMaxPrepared),
		MaxLocksPerXact:      i32(offMaxLocks),
		TrackCommitTimestamp: flag(offTrackCommitTS),

		MaxAlign:            u32(offMaxAlign),
		BlockSize:           u32(offBlockSize),
		RelSegSize:          u32(offRelSegSize),
		WalBlockSize:        u32(offWalBlockSize),
		WalSegSize:          u32(offWalSegSize),
		NameDataLen:         u32(offNameDataLen),
		IndexMaxKeys:        u32(offIndexMaxKeys),
		ToastMaxChunkSize:   u32(offToastMaxChunk),
		LargeObjectChunk:    u32(offLOBlockSize),
		DataChecksumVersion: u32(offChecksumVersion),
	}
	cf.Float8ByVal = flag(offFloat8ByVal)
	if version == controlVersion12 {
		cf.Float8ByVal = flag(offFloat8ByVal + 1)
	}
	if err := cf.check(math.Float64frombits(u64(offFloatFormat))); err != nil {
		return nil, err
	}
	return cf, nil
}

func knownVersion(v uint32) bool {
	return v == controlVersion12 || v == controlVersion13 || v == controlVersion17
}

// check rejects values that no PostgreSQL writes: they mean the CRC
// matched by accident or the layout is not what pgkeep thinks.
func (c *ControlFile) check(floatFormat float64) error {
	switch {
	case floatFormat != floatFormatValue:
		return fmt.Errorf("%w: floatFormat is %v, not %v (another architecture or layout)", ErrCorrupt, floatFormat, floatFormatValue)
	case !pow2(c.BlockSize, 1<<10, 32<<10):
		return fmt.Errorf("%w: block size %d", ErrCorrupt, c.BlockSize)
	case !pow2(c.WalBlockSize, 1<<10, 64<<10):
		return fmt.Errorf("%w: WAL block size %d", ErrCorrupt, c.WalBlockSize)
	case !wal.ValidSegSize(uint64(c.WalSegSize)):
		return fmt.Errorf("%w: WAL segment size %d", ErrCorrupt, c.WalSegSize)
	case c.RelSegSize == 0:
		return fmt.Errorf("%w: relation segment size 0", ErrCorrupt)
	case c.State > StateInProduction:
		return fmt.Errorf("%w: cluster state %d", ErrCorrupt, uint32(c.State))
	}
	return nil
}

func pow2(v, lo, hi uint32) bool { return v >= lo && v <= hi && v&(v-1) == 0 }

// ReadFile reads and parses pgdata/global/pg_control.
func ReadFile(pgdata string) (*ControlFile, error) {
	p := filepath.Join(pgdata, "global", "pg_control")
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("reading control file: %w", err)
	}
	cf, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return cf, nil
}

// Release catalog versions (CATALOG_VERSION_NO of each major release; a
// release never changes it after its first release candidate).
const (
	catalogVersion12 = 201909212
	catalogVersion13 = 202007201
	catalogVersion14 = 202107181
	catalogVersion15 = 202209061
	catalogVersion16 = 202307071
	catalogVersion17 = 202406281
)

// MajorVersion derives the PostgreSQL major version (12 to 17) from
// pg_control. The control version alone settles 12 (1201) and 17 (1700);
// 13 to 16 share 1300 and are told apart by the catalog version: released
// versions carry exactly their release's number, and a development or beta
// build of a release carries a number above the previous release's.
func (c *ControlFile) MajorVersion() (int, error) {
	switch c.ControlVersion {
	case controlVersion12:
		return 12, nil
	case controlVersion17:
		return 17, nil
	case controlVersion13:
		switch cat := c.CatalogVersion; {
		case cat > catalogVersion15:
			return 16, nil
		case cat > catalogVersion14:
			return 15, nil
		case cat > catalogVersion13:
			return 14, nil
		case cat > catalogVersion12:
			return 13, nil
		default:
			return 0, fmt.Errorf("pg_control version 1300 with catalog version %d, older than PostgreSQL 13's", cat)
		}
	}
	return 0, fmt.Errorf("%w %d", ErrUnsupportedVersion, c.ControlVersion)
}

// ReadVersionFile reads the major version from pgdata/PG_VERSION, which
// holds it as text ("15\n").
func ReadVersionFile(pgdata string) (int, error) {
	p := filepath.Join(pgdata, "PG_VERSION")
	data, err := os.ReadFile(p)
	if err != nil {
		return 0, fmt.Errorf("reading PostgreSQL version: %w", err)
	}
	text := strings.TrimSpace(string(data))
	v, err := strconv.Atoi(text)
	if err != nil || v < 10 || v > 999 {
		return 0, fmt.Errorf("%s holds %q, not a PostgreSQL major version (10 or later)", p, text)
	}
	return v, nil
}
