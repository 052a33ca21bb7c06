package pgcontrol

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/pgversion"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// The fixtures are global/pg_control files written by PostgreSQL 15; the
// expected values are what pg_controldata 15 printed for them.
//
//	pg_control_15                   initdb -k, shut down
//	pg_control_15_64mb_nochecksums  initdb --wal-segsize=64, no checksums
//	pg_control_15_running           copied from a running primary
//	pg_control_15_tli2              copied from a standby promoted to timeline 2
func TestParseRealControlFiles(t *testing.T) {
	at := func(h, m, s int) time.Time { return time.Date(2026, 11, 24, h, m, s, 0, time.UTC) }
	cases := []struct {
		file string
		want ControlFile
	}{
		{"testdata/pg_control_15", ControlFile{
			SystemIdentifier: 7711757119419494528, State: StateShutdowned, Time: at(15, 16, 14),
			CheckpointLSN: 0x17414F8, RedoLSN: 0x17414F8, TimeLineID: 1, PrevTimeLineID: 1,
			NextXID: 724, NextOID: 13572, CheckpointTime: at(15, 16, 14), MaxWalSenders: 10,
			WalSegSize: 16 << 20, DataChecksumVersion: 1,
		}},
		{"testdata/pg_control_15_64mb_nochecksums", ControlFile{
			SystemIdentifier: 7711757122620317837, State: StateShutdowned, Time: at(15, 16, 15),
			CheckpointLSN: 0x4500718, RedoLSN: 0x4500718, TimeLineID: 1, PrevTimeLineID: 1,
			NextXID: 724, NextOID: 13572, CheckpointTime: at(15, 16, 15), MaxWalSenders: 10,
			WalSegSize: 64 << 20, DataChecksumVersion: 0,
		}},
		{"testdata/pg_control_15_running", ControlFile{
			SystemIdentifier: 7711797392846769577, State: StateInProduction, Time: at(17, 52, 32),
			CheckpointLSN: 0x4000060, RedoLSN: 0x4000028, TimeLineID: 1, PrevTimeLineID: 1,
			NextXID: 729, NextOID: 24576, CheckpointTime: at(17, 52, 32), MaxWalSenders: 5,
			WalSegSize: 16 << 20, DataChecksumVersion: 1,
		}},
		{"testdata/pg_control_15_tli2", ControlFile{
			SystemIdentifier: 7711797392846769577, State: StateInProduction, Time: at(17, 52, 33),
			CheckpointLSN: 0x6003FE8, RedoLSN: 0x6003FB0, TimeLineID: 2, PrevTimeLineID: 2,
			NextXID: 730, NextOID: 24576, CheckpointTime: at(17, 52, 33), MaxWalSenders: 5,
			WalSegSize: 16 << 20, DataChecksumVersion: 1,
		}},
	}
	for _, c := range cases {
		data, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Parse(data)
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		// Values every fixture shares.
		w := c.want
		w.ControlVersion, w.CatalogVersion = 1300, 202209061
		w.FullPageWrites = true
		w.UnloggedLSN = 0x3E8
		w.WalLevel = WalLevelReplica
		w.MaxConnections, w.MaxWorkerProcesses, w.MaxPreparedXacts, w.MaxLocksPerXact = 100, 8, 0, 64
		w.MaxAlign, w.BlockSize, w.RelSegSize, w.WalBlockSize = 8, 8192, 131072, 8192
		w.NameDataLen, w.IndexMaxKeys, w.ToastMaxChunkSize, w.LargeObjectChunk = 64, 32, 1996, 2048
		w.Float8ByVal = true
		if *got != w {
			t.Errorf("%s:\n got %+v\nwant %+v", c.file, *got, w)
		}
		if m, err := got.MajorVersion(); err != nil || m != 15 {
			t.Errorf("%s: major version %d, %v", c.file, m, err)
		}
		if got.WalLevel != WalLevelReplica {
			t.Errorf("wal_level %d", got.WalLevel)
		}

		// Every byte under the CRC is covered: flipping any one is caught.
		for off := 0; off < layout1300.crc+4; off++ {
			bad := append([]byte(nil), data...)
			bad[off] ^= 0x20
			if cf, err := Parse(bad); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s: flipped byte %d: %+v, %v", c.file, off, cf, err)
			}
		}
		// The padding after the CRC is not.
		bad := append([]byte(nil), data...)
		bad[4000] ^= 1
		if _, err := Parse(bad); err != nil {
			t.Errorf("%s: padding byte changed: %v", c.file, err)
		}
		for _, n := range []int{0, 8, 100, layout1300.crc, layout1300.crc + 3} {
			if _, err := Parse(data[:n]); !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s truncated to %d bytes: %v", c.file, n, err)
			}
		}
		if _, err := Parse(data[:layout1300.crc+4]); err != nil {
			t.Errorf("%s: the 292 bytes that carry data should do: %v", c.file, err)
		}
	}
}

// withVersion returns the fixture with pg_control_version set to v and
// the CRC recomputed, after applying edit.
func withVersion(t *testing.T, v uint32, edit func([]byte)) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/pg_control_15")
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint32(data[offControlVersion:], v)
	if edit != nil {
		edit(data)
	}
	recrc(data)
	return data
}

// recrc stores the CRC of the 13-to-16 layout (at 288).
func recrc(data []byte) { recrcAt(data, layout1300.crc) }

func recrcAt(data []byte, off int) {
	binary.LittleEndian.PutUint32(data[off:], crc32.Checksum(data[:off], crc32.MakeTable(crc32.Castagnoli)))
}

func TestOtherVersionsLayouts(t *testing.T) {
	// PostgreSQL 12: float4ByVal at 248 and float8ByVal at 249.
	pg12 := withVersion(t, 1201, func(d []byte) {
		binary.LittleEndian.PutUint32(d[offCatalogVersion:], 201909212)
		d[248], d[249] = 1, 0
	})
	cf, err := Parse(pg12)
	if err != nil {
		t.Fatal(err)
	}
	if cf.Float8ByVal || cf.DataChecksumVersion != 1 || cf.WalSegSize != 16<<20 {
		t.Errorf("PostgreSQL 12 layout: %+v", cf)
	}
	if m, err := cf.MajorVersion(); err != nil || m != 12 {
		t.Errorf("PostgreSQL 12: %d, %v", m, err)
	}
	// PostgreSQL 17: wal_level in CheckPoint's former padding (offset 60).
	pg17 := withVersion(t, 1700, func(d []byte) {
		binary.LittleEndian.PutUint32(d[offCatalogVersion:], 202406281)
		binary.LittleEndian.PutUint32(d[offCheckPointCopy+20:], 1)
	})
	cf, err = Parse(pg17)
	if err != nil {
		t.Fatal(err)
	}
	if cf.TimeLineID != 1 || cf.NextXID != 724 || cf.CheckpointTime.IsZero() || cf.WalSegSize != 16<<20 {
		t.Errorf("PostgreSQL 17 layout: %+v", cf)
	}
	if m, err := cf.MajorVersion(); err != nil || m != 17 {
		t.Errorf("PostgreSQL 17: %d, %v", m, err)
	}

	// Written by a big-endian machine.
	_, err = Parse(withVersion(t, 0x14050000, nil))
	if !errors.Is(err, ErrUnsupportedVersion) || !strings.Contains(err.Error(), "big-endian") {
		t.Errorf("big-endian: %v", err)
	}
	// A CRC that matches over implausible values.
	for name, edit := range map[string]func([]byte){
		"float format": func(d []byte) { d[offFloatFormat] ^= 1 },
		"block size":   func(d []byte) { binary.LittleEndian.PutUint32(d[offBlockSize:], 8000) },
		"segment size": func(d []byte) { binary.LittleEndian.PutUint32(d[offWalSegSize:], 3<<20) },
		"WAL block":    func(d []byte) { binary.LittleEndian.PutUint32(d[offWalBlockSize:], 0) },
		"relseg":       func(d []byte) { binary.LittleEndian.PutUint32(d[offRelSegSize:], 0) },
		"state":        func(d []byte) { binary.LittleEndian.PutUint32(d[offState:], 7) },
	} {
		if _, err := Parse(withVersion(t, 1300, edit)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestMajorVersion(t *testing.T) {
	for _, c := range []struct {
		control, catalog uint32
		want             int
	}{
		{1201, 201909212, 12},
		{1300, 202007201, 13},
		{1300, 202107181, 14},
		{1300, 202209061, 15},
		{1300, 202307071, 16},
		{1700, 202406281, 17},
		{1800, 202506291, 18},
		{1300, 202305241, 16}, // a PostgreSQL 16 beta
		{1300, 202205181, 15}, // a PostgreSQL 15 beta
		{1800, 202505011, 18}, // a PostgreSQL 18 beta
		{1201, 201905011, 12}, // a PostgreSQL 12 beta
	} {
		got, err := (&ControlFile{ControlVersion: c.control, CatalogVersion: c.catalog}).MajorVersion()
		if err != nil || got != c.want {
			t.Errorf("control %d catalog %d: %d, %v; want %d", c.control, c.catalog, got, err, c.want)
		}
	}
	var ue *pgversion.UnsupportedError
	for _, c := range []struct {
		control, catalog uint32
		corrupt          bool   // else unsupported
		major            int    // of the *pgversion.UnsupportedError; -1: none
		want             string // in the message
	}{
		// PostgreSQL 19 beta kept pg_control version 1800: only the
		// catalog version tells.
		{1800, 202606011, false, 0, "a PostgreSQL newer than 18 is not supported by this pgkeep (supported: 12 to 18): upgrade pgkeep"},
		{1900, 202606011, false, 19, "PostgreSQL 19 is not supported by this pgkeep (supported: 12 to 18): upgrade pgkeep"},
		{1300, 202312011, false, -1, "development build of PostgreSQL 17"},
		{1700, 202501011, false, -1, "development build of PostgreSQL 18"},
		{1300, 201909212, true, -1, "not above PostgreSQL 12's"},
		{1500, 202209061, true, -1, "not one PostgreSQL 12 to 18 writes"},
		{0, 0, true, -1, "not one PostgreSQL"},
	} {
		_, err := (&ControlFile{ControlVersion: c.control, CatalogVersion: c.catalog}).MajorVersion()
		switch {
		case err == nil:
			t.Errorf("control %d catalog %d accepted", c.control, c.catalog)
		case c.corrupt != errors.Is(err, ErrCorrupt) || c.corrupt == errors.Is(err, ErrUnsupportedVersion):
			t.Errorf("control %d catalog %d: corrupt=%v wanted, got %v", c.control, c.catalog, c.corrupt, err)
		case !strings.Contains(err.Error(), c.want):
			t.Errorf("control %d catalog %d: %q does not say %q", c.control, c.catalog, err, c.want)
		case c.major >= 0 && (!errors.As(err, &ue) || ue.Major != c.major):
			t.Errorf("control %d catalog %d: %v does not carry major %d", c.control, c.catalog, err, c.major)
		}
	}
}

// TestUnknownControlFiles patches a real control file to versions pgkeep
// does not know: one a later PostgreSQL would write reads as unsupported
// (typed, with the major), with or without a CRC where pgkeep expects it;
// one no PostgreSQL writes, with no CRC anywhere, reads as damaged.
func TestUnknownControlFiles(t *testing.T) {
	var ue *pgversion.UnsupportedError
	// PostgreSQL 19 with the 18 layout, CRC recomputed.
	pg19 := withVersion(t, 1900, nil)
	_, err := Parse(pg19)
	if !errors.As(err, &ue) || ue.Major != 19 || errors.Is(err, ErrCorrupt) ||
		err.Error() != "pg_control version 1900: PostgreSQL 19 is not supported by this pgkeep (supported: 12 to 18): upgrade pgkeep" {
		t.Errorf("version 1900: %v", err)
	}
	// A later layout: the CRC where pgkeep does not expect it.
	moved := withVersion(t, 2000, nil)
	recrcAt(moved, 320)
	binary.LittleEndian.PutUint32(moved[288:], 0)
	if _, err := Parse(moved); !errors.As(err, &ue) || ue.Major != 20 {
		t.Errorf("version 2000, CRC at 320: %v", err)
	}
	// A later version in the form releases use, even with no CRC found.
	noCRC := withVersion(t, 1900, nil)
	noCRC[288] ^= 0xFF
	if _, err := Parse(noCRC); !errors.As(err, &ue) || ue.Major != 19 {
		t.Errorf("version 1900 without a CRC: %v", err)
	}
	// PostgreSQL 11's version with a good CRC: too old.
	if _, err := Parse(withVersion(t, 1100, nil)); !errors.As(err, &ue) || ue.Major != 11 ||
		!strings.Contains(err.Error(), "PostgreSQL 11 is too old for pgkeep (supported: 12 to 18)") {
		t.Errorf("version 1100: %v", err)
	}
	// 9.6 wrote 960.
	if _, err := Parse(withVersion(t, 960, nil)); !errors.As(err, &ue) || ue.Major != 0 ||
		!strings.Contains(err.Error(), "a PostgreSQL older than 12 is too old") {
		t.Errorf("version 960: %v", err)
	}
	// PostgreSQL 18's version with a catalog version beyond 18's: a later
	// release that kept the format.
	later := withVersion(t, 1800, func(d []byte) { binary.LittleEndian.PutUint32(d[offCatalogVersion:], 202606011) })
	recrcAt(later, layout1800.crc)
	if _, err := Parse(later); !errors.Is(err, ErrUnsupportedVersion) || errors.Is(err, ErrCorrupt) ||
		!strings.Contains(err.Error(), "newer than 18") {
		t.Errorf("1800 with a newer catalog: %v", err)
	}
	// Versions no PostgreSQL writes, CRC nowhere: damaged.
	for _, v := range []uint32{1832, 9992, 1500, 12345678} {
		d := withVersion(t, v, nil)
		d[288] ^= 1
		if _, err := Parse(d); !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrUnsupportedVersion) {
			t.Errorf("version %d, no CRC: %v", v, err)
		}
	}
	// A development build's version with a good CRC: unsupported.
	if _, err := Parse(withVersion(t, 1500, nil)); !errors.Is(err, ErrUnsupportedVersion) || errors.As(err, &ue) {
		t.Errorf("version 1500 with a CRC: %v", err)
	}
}

func TestReadFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadFile(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing pg_control: %v", err)
	}
	if _, err := ReadVersionFile(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing PG_VERSION: %v", err)
	}
	data, err := os.ReadFile("testdata/pg_control_15")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "global"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "global", "pg_control"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if cf, err := ReadFile(dir); err != nil || cf.SystemIdentifier != 7711757119419494528 {
		t.Errorf("ReadFile: %+v, %v", cf, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "global", "pg_control"), data[:100], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(dir); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "pg_control") {
		t.Errorf("truncated file: %v", err)
	}
	for content, want := range map[string]int{"15\n": 15, "12": 12, "17\r\n": 17} {
		if err := os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if v, err := ReadVersionFile(dir); err != nil || v != want {
			t.Errorf("PG_VERSION %q: %d, %v", content, v, err)
		}
	}
	for _, bad := range []string{"9.6\n", "", "x", "-15", "8"} {
		if err := os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if v, err := ReadVersionFile(dir); err == nil {
			t.Errorf("PG_VERSION %q read as %d", bad, v)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"pg_control_15", "pg_control_15_64mb_nochecksums", "pg_control_15_running", "pg_control_15_tli2"} {
		data, err := os.ReadFile("testdata/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data[:layout1300.crc+4]) // the rest is zero padding
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		cf, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrUnsupportedVersion) {
				t.Fatalf("error wraps neither sentinel: %v", err)
			}
			return
		}
		if !wal.ValidSegSize(uint64(cf.WalSegSize)) || cf.BlockSize == 0 || cf.State > StateInProduction {
			t.Fatalf("implausible values accepted: %+v", cf)
		}
		_, _ = cf.MajorVersion()
	})
}
