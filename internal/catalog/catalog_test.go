package catalog

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func validManifest() *Manifest {
	return &Manifest{
		Format: 1, ID: "20261124T100000Z", StartLSN: "0/2000028", StopLSN: "0/2000100",
		Objects: []Object{{Seq: 0, Size: 100}},
		Dirs:    []Dir{{Path: "base", Mode: 0o700}},
		Files: []File{
			{Path: "base/1/1259", Size: 60, Pieces: []Piece{{Object: 0, Offset: 0, FileOffset: 0, Size: 60}}},
			{Path: "PG_VERSION", Size: 40, Pieces: []Piece{{Object: 0, Offset: 60, FileOffset: 0, Size: 40}}},
			{Path: "empty", Size: 0},
		},
		Tablespaces: []Tablespace{{OID: "16400", Location: "/srv/ts"}},
	}
}

func TestValidate(t *testing.T) {
	if err := validManifest().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := map[string]func(m *Manifest){
		"absolute path":       func(m *Manifest) { m.Files[0].Path = "/etc/passwd" },
		"dot-dot":             func(m *Manifest) { m.Files[0].Path = "base/../../x" },
		"dot-dot dir":         func(m *Manifest) { m.Dirs[0].Path = "../outside" },
		"empty element":       func(m *Manifest) { m.Files[0].Path = "base//x" },
		"backslash":           func(m *Manifest) { m.Files[0].Path = `base\..\x` },
		"piece outside":       func(m *Manifest) { m.Files[1].Pieces[0].Offset = 90 },
		"unknown object":      func(m *Manifest) { m.Files[1].Pieces[0].Object = 7 },
		"size mismatch":       func(m *Manifest) { m.Files[1].Size = 41 },
		"newer format":        func(m *Manifest) { m.Format = 2 },
		"bad id":              func(m *Manifest) { m.ID = "latest" },
		"bad lsn":             func(m *Manifest) { m.StopLSN = "nope" },
		"relative tablespace": func(m *Manifest) { m.Tablespaces[0].Location = "ts" },
		"bad tablespace oid":  func(m *Manifest) { m.Tablespaces[0].OID = "../x" },
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
	good, _ := json.Marshal(validManifest())
	f.Add(good)
	f.Add([]byte(strings.Replace(string(good), "base/1/1259", "../../etc/passwd", 1)))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
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
