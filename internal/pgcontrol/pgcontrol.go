// Package pgcontrol reads the small files that describe a PostgreSQL data
// directory and a base backup: the control file (global/pg_control),
// PG_VERSION, the backup_label text that pg_backup_stop returns (and the
// backup history files the server archives), and tablespace_map.
//
// Layouts are those of PostgreSQL 12 to 18 on little-endian 64-bit
// machines (amd64, arm64), the platforms pgkeep supports. A control file
// of another PostgreSQL reads as unsupported (pgversion.ErrUnsupported),
// never as damaged, as long as it looks like one.
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

	"github.com/pgkeep/pgkeep/internal/pgversion"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// ErrCorrupt is wrapped when the control file fails its CRC or holds
// values no PostgreSQL writes.
var ErrCorrupt = errors.New("pg_control is damaged")

// ErrUnsupportedVersion is wrapped when the control file was written by a
// PostgreSQL pgkeep does not support: an unknown pg_control version with a
// plausible look (its CRC matches, or the version is beyond the newest
// pgkeep knows), or a catalog version beyond the newest release's. It is
// pgversion.ErrUnsupported; errors.As with *pgversion.UnsupportedError
// gives the major version when it can be inferred. It is also wrapped for
// a control file written by a big-endian machine.
var ErrUnsupportedVersion = pgversion.ErrUnsupported

// DBState is the cluster state recorded in pg_control (enum DBState).
type DBState uint32

// The cluster states, in PostgreSQL's numbering (unchanged from 9.4 to 18).
const (
	StateStartup              DBState = iota // DB_STARTUP
	StateShutdowned                          // DB_SHUTDOWNED: cleanly shut down
	StateShutdownedInRecovery                // DB_SHUTDOWNED_IN_RECOVERY: a standby shut down
	StateShutdowning                         // DB_SHUTDOWNING
	StateInCrashRecovery                     // DB_IN_CRASH_RECOVERY
	StateInArchiveRecovery                   // DB_IN_ARCHIVE_RECOVERY: recovering, or a standby
	StateInProduction                        // DB_IN_PRODUCTION: running (or crashed while running)
)

// WalLevel is the wal_level setting recorded in pg_control (enum
// WalLevel, PostgreSQL 9.6 and later).
type WalLevel int32

// The wal_level values.
const (
	WalLevelMinimal WalLevel = iota
	WalLevelReplica
	WalLevelLogical
)

// ControlFile holds the fields of pg_control (ControlFileData). Names
// follow pg_controldata's descriptions.
type ControlFile struct {
	SystemIdentifier uint64 // "Database system identifier"
	ControlVersion   uint32 // "pg_control version number": 1201, 1300, 1700 or 1800
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

	// PostgreSQL 18 and later: "Default char data signedness" (true:
	// signed, as on amd64). False for earlier versions, which do not
	// record it.
	DefaultCharSigned bool
}

// Layout of ControlFileData (src/include/catalog/pg_control.h) with 8-byte
// alignment of 64-bit fields. Every format pgkeep reads shares the offsets
// below up to data_checksum_version; what differs after it is in
// controlLayout.
//   - PostgreSQL 13 dropped float4ByVal (a bool right before float8ByVal),
//     but data_checksum_version stays 4-aligned at 252 either way;
//   - PostgreSQL 17 put wal_level (int) into CheckPoint's padding after
//     fullPageWrites, so CheckPoint keeps its size (88 bytes);
//   - PostgreSQL 18 added default_char_signedness (bool) after
//     data_checksum_version, which moves the 32-byte mock authentication
//     nonce to 257 and the CRC to 292.
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
	offChecksumVersion  = 252

	floatFormatValue = 1234567.0 // FLOATFORMAT_VALUE
)

// controlLayout is what differs between the pg_control formats pgkeep
// reads: one per PG_CONTROL_VERSION.
type controlLayout struct {
	version        uint32 // PG_CONTROL_VERSION
	float8ByVal    int    // offset of float8ByVal
	charSignedness int    // offset of default_char_signedness; 0: absent
	crc            int    // offset of the CRC-32C, which covers every byte before it
}

// The pg_control formats of PostgreSQL 12 to 18 (PG_CONTROL_VERSION in
// pg_control.h of each release; checked against control files written by
// each major's initdb, internal/pgcontrol/testdata/majors).
var (
	// PostgreSQL 12: float4ByVal at 248, float8ByVal at 249.
	layout1201 = controlLayout{version: 1201, float8ByVal: 249, crc: 288}
	// PostgreSQL 13 to 16: float4ByVal removed.
	layout1300 = controlLayout{version: 1300, float8ByVal: 248, crc: 288}
	// PostgreSQL 17: wal_level in CheckPoint; no offset pgkeep reads moved.
	layout1700 = controlLayout{version: 1700, float8ByVal: 248, crc: 288}
	// PostgreSQL 18: default_char_signedness; the nonce and CRC moved.
	layout1800 = controlLayout{version: 1800, float8ByVal: 248, charSignedness: 256, crc: 292}

	knownLayouts = [...]controlLayout{layout1201, layout1300, layout1700, layout1800}
)

// layoutOf returns the layout of a pg_control version pgkeep reads.
func layoutOf(version uint32) (controlLayout, bool) {
	for _, l := range knownLayouts {
		if l.version == version {
			return l, true
		}
	}
	return controlLayout{}, false
}

// maxControlData is PG_CONTROL_MAX_SAFE_SIZE (pg_control.h): the data of
// every pg_control format, CRC included, fits in its first 512 bytes.
const maxControlData = 512

// minDataSize is the shortest control file prefix Parse accepts: up to the
// earliest CRC and the CRC itself.
const minDataSize = 288 + 4

// FileSize is the size of global/pg_control on disk (PG_CONTROL_FILE_SIZE);
// only the first 292 to 296 bytes carry data.
const FileSize = 8192

// Parse decodes a pg_control image (normally FileSize bytes, at least the
// bytes up to and including the CRC), verifies its CRC-32C and checks that
// its values are plausible and that a supported PostgreSQL wrote it.
// Errors wrap ErrCorrupt or ErrUnsupportedVersion.
func Parse(data []byte) (*ControlFile, error) {
	if len(data) < minDataSize {
		return nil, fmt.Errorf("%w: %d bytes, need at least %d", ErrCorrupt, len(data), minDataSize)
	}
	le := binary.LittleEndian
	version := le.Uint32(data[offControlVersion:])
	layout, known := layoutOf(version)
	if !known {
		return nil, unknownVersion(data, version)
	}
	if len(data) < layout.crc+4 {
		return nil, fmt.Errorf("%w: %d bytes, pg_control version %d needs at least %d", ErrCorrupt, len(data), version, layout.crc+4)
	}
	if crc := crcAt(data, layout.crc); crc != le.Uint32(data[layout.crc:]) {
		return nil, fmt.Errorf("%w: CRC mismatch (stored %08X, computed %08X)", ErrCorrupt, le.Uint32(data[layout.crc:]), crc)
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
		Float8ByVal:         flag(layout.float8ByVal),
	}
	if layout.charSignedness > 0 {
		cf.DefaultCharSigned = flag(layout.charSignedness)
	}
	if err := cf.check(math.Float64frombits(u64(offFloatFormat))); err != nil {
		return nil, err
	}
	if _, err := cf.MajorVersion(); err != nil {
		return nil, err
	}
	return cf, nil
}

func crcAt(data []byte, off int) uint32 {
	return crc32.Checksum(data[:off], crc32.MakeTable(crc32.Castagnoli))
}

// unknownVersion explains a pg_control version pgkeep has no layout for.
// It is unsupported when the file is a real control file: its CRC-32C
// matches at some 4-byte boundary (where the CRC would be in a layout
// pgkeep does not know; random bytes match at one of the 126 places with
// odds of about one in 30 million), or its version has the form a later
// release would write
// (since PostgreSQL 13, a release that changes the format writes
// major*100: 1300, 1700, 1800). Otherwise it is damaged. data may be nil
// (only the version is known).
func unknownVersion(data []byte, version uint32) error {
	if swapped := bits.ReverseBytes32(version); isKnownControlVersion(swapped) {
		return fmt.Errorf("%w: pg_control was written by a big-endian machine (version %d byte-swapped); pgkeep supports little-endian machines (amd64, arm64)", ErrUnsupportedVersion, swapped)
	}
	source := fmt.Sprintf("pg_control version %d", version)
	major := 0
	if version >= 1000 && version < 100*100 {
		major = int(version / 100)
	}
	futureForm := version%100 == 0 && major > pgversion.MaxMajor
	crcOK := crcSomewhere(data)
	switch {
	case futureForm || (crcOK && major > pgversion.MaxMajor):
		return &pgversion.UnsupportedError{Major: major, Newer: true, Source: source}
	case crcOK && version < releases[0].control:
		// An older release: the major is the leading two of four digits
		// (as in 1201); a three-digit version (9.x) names none.
		return &pgversion.UnsupportedError{Major: major, Source: source}
	case crcOK:
		return fmt.Errorf("%w: pg_control version %d is not one PostgreSQL %s writes (%s): a development build pgkeep does not know", ErrUnsupportedVersion, version, pgversion.Range(), knownControlVersions())
	}
	return fmt.Errorf("%w: pg_control version %d is not one PostgreSQL %s writes (%s), and no CRC matches", ErrCorrupt, version, pgversion.Range(), knownControlVersions())
}

// crcSomewhere reports whether data holds a CRC-32C of the bytes before
// it at some 4-byte boundary within the first maxControlData bytes.
func crcSomewhere(data []byte) bool {
	tab := crc32.MakeTable(crc32.Castagnoli)
	crc := uint32(0)
	for off := 0; off+4 <= len(data) && off+4 <= maxControlData; off += 4 {
		if off >= offCatalogVersion+4 && crc == binary.LittleEndian.Uint32(data[off:]) {
			return true
		}
		crc = crc32.Update(crc, tab, data[off:off+4])
	}
	return false
}

func isKnownControlVersion(v uint32) bool {
	_, ok := layoutOf(v)
	return ok
}

func knownControlVersions() string {
	var vs []string
	for _, l := range knownLayouts {
		vs = append(vs, strconv.FormatUint(uint64(l.version), 10))
	}
	return strings.Join(vs, ", ")
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

// release is what a PostgreSQL major release writes into pg_control.
type release struct {
	major   int
	control uint32 // PG_CONTROL_VERSION
	catalog uint32 // CATALOG_VERSION_NO, which a release never changes after its first release candidate
}

// releases are the supported majors, oldest first (pg_control.h and
// catversion.h of each release; checked against the control files each
// major's initdb wrote, internal/pgcontrol/testdata/majors).
var releases = [...]release{
	{12, 1201, 201909212},
	{13, 1300, 202007201},
	{14, 1300, 202107181},
	{15, 1300, 202209061},
	{16, 1300, 202307071},
	{17, 1700, 202406281},
	{18, 1800, 202506291},
}

// MajorVersion derives the PostgreSQL major version from pg_control. The
// control version settles 12 (1201), 17 (1700) and 18 (1800); 13 to 16
// share 1300 and are told apart by the catalog version: a release carries
// exactly its number, and its betas a number above the previous release's.
// A catalog version above the newest release's is a later PostgreSQL
// (unsupported, wrapping ErrUnsupportedVersion); one at or below the
// release before the control version's first is no PostgreSQL's (ErrCorrupt).
func (c *ControlFile) MajorVersion() (int, error) {
	first := -1
	for i, r := range releases {
		if r.control == c.ControlVersion {
			if first < 0 {
				first = i
			}
			lowerBound := uint32(0)
			if i > 0 {
				lowerBound = releases[i-1].catalog
			}
			if i == first && c.CatalogVersion <= lowerBound {
				return 0, fmt.Errorf("%w: pg_control version %d with catalog version %d, not above PostgreSQL %d's (%d)",
					ErrCorrupt, c.ControlVersion, c.CatalogVersion, releases[i-1].major, lowerBound)
			}
			if c.CatalogVersion <= r.catalog {
				return r.major, nil
			}
		}
	}
	if first < 0 {
		return 0, unknownVersion(nil, c.ControlVersion)
	}
	// Above the catalog version of the last release with this control
	// version: a later PostgreSQL that kept the format.
	last := releases[first]
	for _, r := range releases[first:] {
		if r.control == c.ControlVersion {
			last = r
		}
	}
	source := fmt.Sprintf("pg_control version %d with catalog version %d (PostgreSQL %d's is %d)", c.ControlVersion, c.CatalogVersion, last.major, last.catalog)
	if last.major == pgversion.MaxMajor {
		return 0, &pgversion.UnsupportedError{Newer: true, Source: source}
	}
	return 0, fmt.Errorf("%w: %s: a development build of PostgreSQL %d, not a release pgkeep knows", ErrUnsupportedVersion, source, last.major+1)
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
