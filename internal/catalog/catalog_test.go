package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/pgkeep/pgkeep/internal/crypt"
	"github.com/pgkeep/pgkeep/internal/envelope"
)

func validManifest() *Manifest {
	return &Manifest{
		Summary: Summary{
			Format: ManifestFormat, ID: "20261124T100000Z", StartLSN: "0/2000028", StopLSN: "0/2000100",
			Objects: []Object{{Seq: 0, Size: 100}}, FileCount: 3,
		},
		Contents: Contents{
			Label: "nightly", BackupLabel: "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n",
			Dirs: []Dir{{Path: "base", Mode: 0o700}},
			Files: []File{
				{Path: "base/1/1259", Size: 60, Pieces: []Piece{{Object: 0, Offset: 0, FileOffset: 0, Size: 60, XXH64: "00000000000000aa"}}},
				{Path: "PG_VERSION", Size: 40, Pieces: []Piece{{Object: 0, Offset: 60, FileOffset: 0, Size: 40, XXH64: "00000000000000bb"}}},
				{Path: "empty", Size: 0},
			},
			Tablespaces: []Tablespace{{OID: "16400", Location: "/srv/ts"}},
		},
	}
}

func TestValidate(t *testing.T) {
	if err := validManifest().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := map[string]func(m *Manifest){
		"absolute path":          func(m *Manifest) { m.Files[0].Path = "/etc/passwd" },
		"dot-dot":                func(m *Manifest) { m.Files[0].Path = "base/../../x" },
		"dot-dot dir":            func(m *Manifest) { m.Dirs[0].Path = "../outside" },
		"empty element":          func(m *Manifest) { m.Files[0].Path = "base//x" },
		"backslash":              func(m *Manifest) { m.Files[0].Path = `base\..\x` },
		"piece outside":          func(m *Manifest) { m.Files[1].Pieces[0].Offset = 90 },
		"unknown object":         func(m *Manifest) { m.Files[1].Pieces[0].Object = 7 },
		"size mismatch":          func(m *Manifest) { m.Files[1].Size = 41 },
		"newer format":           func(m *Manifest) { m.Format = ManifestFormat + 1 },
		"bad id":                 func(m *Manifest) { m.ID = "latest" },
		"bad lsn":                func(m *Manifest) { m.StopLSN = "nope" },
		"relative tablespace":    func(m *Manifest) { m.Tablespaces[0].Location = "ts" },
		"bad tablespace oid":     func(m *Manifest) { m.Tablespaces[0].OID = "../x" },
		"no checksum":            func(m *Manifest) { m.Files[0].Pieces[0].XXH64 = "" },
		"short chunk sums":       func(m *Manifest) { m.Files[0].Pieces[0].Chunks = make([]byte, 4) },
		"full with a parent":     func(m *Manifest) { m.Parent = "20261123T100000Z" },
		"incremental, no parent": func(m *Manifest) { m.Type = "incremental"; m.Chain = 1 },
		"parent after it": func(m *Manifest) {
			m.Type, m.Parent, m.Chain, m.Full = "incremental", "20261125T100000Z", 1, "20261122T100000Z"
		},
		"unknown type": func(m *Manifest) { m.Type = "differential" },
		"refers to a later backup": func(m *Manifest) {
			m.Objects = append(m.Objects, Object{Seq: 0, Size: 100, Backup: "20261125T100000Z"})
		},
		"refers to an unlisted object": func(m *Manifest) { m.Files[0].Pieces[0].Backup = "20261123T100000Z" },
	}
	inc := validManifest()
	inc.Type, inc.Parent, inc.Chain, inc.Full = "incremental", "20261123T100000Z", 1, "20261122T100000Z"
	inc.Objects = append(inc.Objects, Object{Seq: 0, Size: 100, Backup: "20261122T100000Z"})
	inc.Files[0].Pieces[0] = Piece{Object: 0, Backup: "20261122T100000Z", Offset: 0, FileOffset: 0, Size: 60, Chunks: make([]byte, 8)}
	if err := inc.Validate(); err != nil {
		t.Errorf("an incremental manifest referring to an older backup's object: %v", err)
	}
	for name, mutate := range bad {
		m := validManifest()
		mutate(m)
		if err := m.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestIDsSortByTime(t *testing.T) {
	a := NewID(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	b := NewID(time.Date(2026, 1, 2, 3, 4, 6, 0, time.FixedZone("x", 3600)))
	c := NewID(time.Date(2026, 11, 2, 3, 4, 5, 0, time.UTC))
	if !(a < c) || !ValidID(a) || ValidID("x") {
		t.Fatalf("ids %s %s %s", a, b, c)
	}
	if b >= a { // b is 02:04:06 UTC, an hour before a
		t.Fatalf("%s should sort before %s", b, a)
	}
}

func FuzzParseManifest(f *testing.F) {
	good, _ := EncodeManifest(validManifest(), envelope.Compression{}, nil)
	f.Add(good)
	f.Add([]byte(strings.Replace(string(good), "base/1/1259", "../../etc/passwd", 1)))
	v1, _ := json.Marshal(validManifest())
	f.Add(v1)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data, nil)
		if err != nil {
			return
		}
		for _, file := range m.Files {
			if SafePath(file.Path) != nil {
				t.Fatalf("accepted unsafe path %q", file.Path)
			}
		}
	})
}

// TestManifestPlainRoundTrip: a plaintext repository's manifest holds its
// contents inline, and a format 1 manifest (everything at the top level)
// still reads.
func TestManifestPlainRoundTrip(t *testing.T) {
	m := validManifest()
	data, err := EncodeManifest(m, envelope.Compression{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseManifest(data, nil)
	if err != nil || got.Sealed || !reflect.DeepEqual(got.Files, m.Files) || got.Label != m.Label || got.FileCount != 3 {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	old := *m
	old.Format = 1
	v1, _ := json.Marshal(&old)
	got, err = ParseManifest(v1, nil)
	if err != nil || !reflect.DeepEqual(got.Files, m.Files) || got.FileCount != 3 || got.BackupLabel != m.BackupLabel {
		t.Fatalf("format 1: %+v %v", got, err)
	}
}

// TestManifestSealed: in an encrypted repository the contents are sealed:
// no file name or label is readable without the key, the summary is, and
// sealed contents moved into another backup's manifest are refused.
func TestManifestSealed(t *testing.T) {
	key, _ := crypt.NewRepoKey()
	writer, _ := crypt.NewCipher(key.Recipient(), nil, errors.New("no identity"))
	reader, _ := crypt.NewCipher(key.Recipient(), key, nil)

	m := validManifest()
	data, err := EncodeManifest(m, envelope.Compression{Codec: envelope.Zstd}, writer)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"base/1/1259", "PG_VERSION", "nightly", "START WAL LOCATION", "/srv/ts"} {
		if strings.Contains(string(data), secret) {
			t.Errorf("%q readable in a sealed manifest", secret)
		}
	}
	got, err := ParseManifest(data, writer)
	if err != nil || !got.Sealed || got.StopLSN != m.StopLSN || got.FileCount != 3 || len(got.Files) != 0 || len(got.Objects) != 1 {
		t.Fatalf("without the key: %+v %v", got, err)
	}
	if err := got.NeedContents(); !errors.Is(err, ErrSealed) {
		t.Fatalf("NeedContents without the key: %v", err)
	}
	got, err = ParseManifest(data, reader)
	if err != nil || got.Sealed || !reflect.DeepEqual(got.Files, m.Files) || got.Label != "nightly" {
		t.Fatalf("with the key: %+v %v", got, err)
	}

	other := validManifest()
	other.ID = "20261125T100000Z"
	var st storedManifest
	json.Unmarshal(data, &st)
	st.ID = other.ID
	moved, _ := json.Marshal(st)
	if _, err := ParseManifest(moved, reader); !errors.Is(err, envelope.ErrCorrupt) {
		t.Fatalf("sealed contents of another backup accepted: %v", err)
	}
}

// TestPieceCheck: a piece is verified by its chunk checksums when they
// cover it, else by its whole checksum; any changed byte, a missing or
// extra byte, or a chunk list too short is caught.
func TestPieceCheck(t *testing.T) {
	data := make([]byte, 2*ChunkSize+1000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	whole := fmt.Sprintf("%016x", xxhash.Sum64(data))
	chunks := AppendChunkSums(nil, data)
	check := func(p Piece, b []byte) error {
		c := NewPieceCheck(p)
		for len(b) > 0 { // in uneven writes, across chunk boundaries
			n := min(len(b), 50000)
			c.Write(b[:n])
			b = b[n:]
		}
		return c.Verify()
	}
	bad := bytes.Clone(data)
	bad[ChunkSize+5] ^= 1
	size := int64(len(data))
	for name, tc := range map[string]struct {
		p    Piece
		b    []byte
		fail bool
	}{
		"chunks":                      {Piece{Size: size, XXH64: whole, Chunks: chunks}, data, false},
		"chunks, a byte changed":      {Piece{Size: size, XXH64: whole, Chunks: chunks}, bad, true},
		"chunks, a byte short":        {Piece{Size: size, XXH64: whole, Chunks: chunks}, data[:len(data)-1], true},
		"chunks only":                 {Piece{Size: size, Chunks: chunks}, data, false},
		"chunks only, a byte changed": {Piece{Size: size, Chunks: chunks}, bad, true},
		"whole":                       {Piece{Size: size, XXH64: whole}, data, false},
		"whole, a byte changed":       {Piece{Size: size, XXH64: whole}, bad, true},
		"too few chunks":              {Piece{Size: size, XXH64: whole, Chunks: chunks[:16]}, data, true},
		"too few chunks, whole wrong": {Piece{Size: size, XXH64: "0000000000000001", Chunks: chunks[:16]}, data, true},
	} {
		if err := check(tc.p, tc.b); (err != nil) != tc.fail {
			t.Errorf("%s: %v", name, err)
		} else if err != nil && !errors.Is(err, envelope.ErrCorrupt) {
			t.Errorf("%s: %v is not ErrCorrupt", name, err)
		}
	}
}
