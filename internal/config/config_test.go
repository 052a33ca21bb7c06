package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pgkeep.conf")
	os.WriteFile(file, []byte("# comment\nrepo = s3://from-file/p\ns3-region = \"eu-west-1\"\ncompression = lz4\n"), 0o600)

	cfg, err := Load(Sources{ConfigFile: file, Getenv: env(nil)})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Repo.String() != "s3://from-file/p" || cfg.S3.Region != "eu-west-1" || cfg.Compression.Codec.String() != "lz4" {
		t.Fatalf("file values not used: %+v", cfg)
	}
	cfg, err = Load(Sources{ConfigFile: file, Getenv: env(map[string]string{"PGKEEP_REPO": "s3://from-env/x"})})
	if err != nil || cfg.Repo.Bucket != "from-env" {
		t.Fatalf("env should beat file: %+v %v", cfg, err)
	}
	cfg, err = Load(Sources{ConfigFile: file, Flags: map[string]string{"repo": "file:///tmp/r"},
		Getenv: env(map[string]string{"PGKEEP_REPO": "s3://from-env/x"})})
	if err != nil || cfg.Repo.String() != "file:///tmp/r" {
		t.Fatalf("flag should beat env: %+v %v", cfg, err)
	}
	if !strings.Contains(cfg.Sources["s3-region"], file) {
		t.Fatalf("source of s3-region not recorded: %v", cfg.Sources)
	}
}

func TestPGKEEPConfigEnvAndMissingFile(t *testing.T) {
	_, err := Load(Sources{Getenv: env(map[string]string{"PGKEEP_CONFIG": "/nonexistent/pgkeep.conf"})})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/pgkeep.conf") {
		t.Fatalf("explicit missing config file should fail naming it, got %v", err)
	}
}

func TestValidationNamesField(t *testing.T) {
	cases := map[string]map[string]string{
		"repo":          {"repo": "ftp://x"},
		"s3-path-style": {"repo": "s3://b", "s3-path-style": "maybe"},
		"s3-endpoint":   {"repo": "s3://b", "s3-endpoint": "localhost:9000"},
		"compression":   {"repo": "s3://b", "compression": "gzip"},
		"workers":       {"repo": "s3://b", "workers": "-3"},
		"s3-ca-bundle":  {"repo": "s3://b", "s3-ca-bundle": "/nonexistent.pem"},
	}
	for field, flags := range cases {
		_, err := Load(Sources{Flags: flags, Getenv: env(nil), ConfigFile: "/dev/null"})
		if err == nil || !strings.Contains(err.Error(), "setting "+field) {
			t.Errorf("%s: error %v does not name the field", field, err)
		}
	}
}

func TestParseRepoURL(t *testing.T) {
	good := map[string]string{
		"file:///var/lib/pgkeep": "file:///var/lib/pgkeep",
		"/var/lib/pgkeep/":       "file:///var/lib/pgkeep",
		"s3://bucket":            "s3://bucket",
		"s3://bucket/a/b/":       "s3://bucket/a/b",
	}
	for in, want := range good {
		u, err := ParseRepoURL(in)
		if err != nil || u.String() != want {
			t.Errorf("%q: got %q, %v", in, u.String(), err)
		}
	}
	for _, bad := range []string{"", "relative/path", "file://host/x", "s3://", "s3://b/../x", "gs://b", "s3://key:secret@bucket/x", "s3://b/x?region=1"} {
		_, err := ParseRepoURL(bad)
		if err == nil {
			t.Errorf("%q accepted", bad)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("%q: error leaks the secret: %v", bad, err)
		}
	}
}

func TestArgsCarryNoSecrets(t *testing.T) {
	cfg, err := Load(Sources{Flags: map[string]string{"repo": "s3://b/p", "s3-endpoint": "http://127.0.0.1:9000", "s3-path-style": "true"},
		Getenv: env(map[string]string{"AWS_SECRET_ACCESS_KEY": "sekrit"}), ConfigFile: "/dev/null"})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(cfg.Args(), " ")
	want := "--repo=s3://b/p --s3-endpoint=http://127.0.0.1:9000 --s3-path-style=true"
	if got != want {
		t.Fatalf("Args() = %q, want %q", got, want)
	}
}

func FuzzParseFile(f *testing.F) {
	f.Add([]byte("repo = s3://x\n# c\ns3-region=\"a b\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) { ParseFile(data) })
}

func FuzzParseRepoURL(f *testing.F) {
	for _, s := range []string{"s3://b/p", "file:///x", "/abs"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseRepoURL(s)
		if err != nil {
			return
		}
		u2, err := ParseRepoURL(u.String())
		if err != nil || u2 != u {
			t.Fatalf("%q -> %q does not round-trip: %+v %v", s, u.String(), u2, err)
		}
	})
}

// WAL's codec: its own setting, else compression when that was set, else
// s2; backups keep compression's (zstd by default).
func TestWALCompression(t *testing.T) {
	for _, c := range []struct {
		flags            map[string]string
		wantWAL, wantObj string
	}{
		{map[string]string{}, "s2", "zstd"},
		{map[string]string{"compression": "zstd:1"}, "zstd:1", "zstd:1"},
		{map[string]string{"compression": "lz4", "wal-compression": "zstd"}, "zstd", "lz4"},
		{map[string]string{"wal-compression": "none"}, "none", "zstd"},
	} {
		c.flags["repo"] = "file:///tmp/r"
		cfg, err := Load(Sources{Flags: c.flags, Getenv: env(nil), ConfigFile: "/dev/null"})
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.WALCompression.String(); got != c.wantWAL {
			t.Errorf("%v: WAL compression %s, want %s", c.flags, got, c.wantWAL)
		}
		if got := cfg.Compression.String(); got != c.wantObj {
			t.Errorf("%v: compression %s, want %s", c.flags, got, c.wantObj)
		}
	}
	if _, err := Load(Sources{Flags: map[string]string{"repo": "file:///tmp/r", "wal-compression": "gzip"}, Getenv: env(nil), ConfigFile: "/dev/null"}); err == nil || !strings.Contains(err.Error(), "setting wal-compression") {
		t.Errorf("a bad wal-compression: %v", err)
	}
}
