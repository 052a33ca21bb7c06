// Package pgcontrol reads PostgreSQL's control file (global/pg_control),
// PG_VERSION, and the backup_label text.
package pgcontrol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pgkeep/pgkeep/internal/wal"
)

// ControlFile holds the fields of pg_control that pgkeep uses.
type ControlFile struct {
	SystemIdentifier    uint64
	ControlVersion      uint32
	CatalogVersion      uint32
	State               uint32
	CheckpointLSN       wal.LSN
	BlockSize           uint32
	WalBlockSize        uint32
	WalSegSize          uint32
	DataChecksumVersion uint32
}

// ErrCorrupt is wrapped when the control file fails its CRC or cannot be
// parsed.
var ErrCorrupt = errors.New("pg_control is damaged or of an unknown layout")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Layout facts (ControlFileData, PostgreSQL 12-17): system_identifier at 0,
// pg_control_version at 8, catalog_version_no at 12, state at 16,
// checkPoint at 32. Further on, blcksz, relseg_size, xlog_blcksz and
// xlog_seg_size are consecutive uint32s; after xlog_seg_size come
// nameDataLen, indexMaxKeys, toast_max_chunk_size, loblksize, float8ByVal
// (padded to 4), data_checksum_version, a 32-byte nonce and the CRC32C of
// everything before it. The position of that block moved between versions
// (CheckPoint grew), so Parse finds it and proves the guess with the CRC.
const (
	tailAfterSegSize = 60 // from xlog_seg_size to crc
	minOffset        = 100
	maxOffset        = 600
)

// Parse decodes a pg_control image and verifies its CRC.
func Parse(data []byte) (*ControlFile, error) {
	if len(data) < minOffset+tailAfterSegSize+4 {
		return nil, fmt.Errorf("%w: only %d bytes", ErrCorrupt, len(data))
	}
	le := binary.LittleEndian
	for off := minOffset; off+tailAfterSegSize+4 <= len(data) && off <= maxOffset; off += 4 {
		blcksz := le.Uint32(data[off-12:])
		relseg := le.Uint32(data[off-8:])
		walBlcksz := le.Uint32(data[off-4:])
		segSize := le.Uint32(data[off:])
		if !pow2(blcksz, 1024, 32768) || relseg == 0 || !pow2(walBlcksz, 1024, 65536) || !wal.ValidSegSize(uint64(segSize)) {
			continue
		}
		crcAt := off + tailAfterSegSize
		if crc32.Checksum(data[:crcAt], castagnoli) != le.Uint32(data[crcAt:]) {
			continue
		}
		return &ControlFile{
			SystemIdentifier:    le.Uint64(data[0:]),
			ControlVersion:      le.Uint32(data[8:]),
			CatalogVersion:      le.Uint32(data[12:]),
			State:               le.Uint32(data[16:]),
			CheckpointLSN:       wal.LSN(le.Uint64(data[32:])),
			BlockSize:           blcksz,
			WalBlockSize:        walBlcksz,
			WalSegSize:          segSize,
			DataChecksumVersion: le.Uint32(data[off+24:]),
		}, nil
	}
	return nil, fmt.Errorf("%w: no valid CRC found (control version %d)", ErrCorrupt, le.Uint32(data[8:]))
}

func pow2(v, lo, hi uint32) bool { return v >= lo && v <= hi && v&(v-1) == 0 }

// ReadFile reads and parses pgdata/global/pg_control.
func ReadFile(pgdata string) (*ControlFile, error) {
	p := filepath.Join(pgdata, "global", "pg_control")
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", p, err)
	}
	cf, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return cf, nil
}

// catalogVersions maps the first catalog version of each release to its
// major version (catversion.h of each release).
var catalogVersions = []struct {
	first uint32
	major int
}{
	{201909212, 12}, {202007201, 13}, {202107181, 14}, {202209061, 15}, {202307071, 16}, {202406281, 17},
}

// MajorVersion derives the PostgreSQL major version from the catalog
// version. Development snapshots between releases map to the next release.
func (c *ControlFile) MajorVersion() (int, error) {
	if c.CatalogVersion < catalogVersions[0].first {
		return 0, fmt.Errorf("catalog version %d is older than PostgreSQL 12, which pgkeep does not support", c.CatalogVersion)
	}
	major := 0
	for _, v := range catalogVersions {
		if c.CatalogVersion >= v.first {
			major = v.major
		}
	}
	return major, nil
}

// ReadVersionFile reads the major version from pgdata/PG_VERSION.
func ReadVersionFile(pgdata string) (int, error) {
	data, err := os.ReadFile(filepath.Join(pgdata, "PG_VERSION"))
	if err != nil {
		return 0, fmt.Errorf("reading PG_VERSION: %w", err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || v < 10 {
		return 0, fmt.Errorf("PG_VERSION holds %q, not a major version", strings.TrimSpace(string(data)))
	}
	return v, nil
}
