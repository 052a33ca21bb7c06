package pgtest

import (
	"path/filepath"
	"testing"
)

func TestCluster(t *testing.T) {
	c := NewCluster(t, Options{})
	c.Start(t)
	if got := c.QueryString(t, "SHOW data_checksums"); got != "on" {
		t.Fatalf("data_checksums = %s", got)
	}
	c.Exec(t, "CREATE TABLE t (i int)")
	c.Exec(t, "INSERT INTO t VALUES (1), (2)")
	c.Stop(t, "fast")
	if c.Running() {
		t.Fatal("still running after a fast stop")
	}
	c.Start(t)
	if got := c.QueryString(t, "SELECT count(*)::text FROM t"); got != "2" {
		t.Fatalf("rows after restart: %s", got)
	}
	c.Stop(t, "immediate")

	// Adopt a copy of the data directory on another port.
	dir := filepath.Join(TempDir(t, "adopt-"), "data")
	cp := Command(t.Context(), "/bin/cp", "-a", c.DataDir, dir)
	if out, err := cp.CombinedOutput(); err != nil {
		t.Fatalf("copy: %v %s", err, out)
	}
	a := Adopt(t, dir, c.BinDir)
	if a.Port == c.Port {
		t.Fatal("adopted cluster reuses the port")
	}
	a.Start(t)
	a.WaitPromoted(t, 60e9)
	if got := a.QueryString(t, "SELECT count(*)::text FROM t"); got != "2" {
		t.Fatalf("rows in the adopted copy: %s", got)
	}
}

func TestWalSegSize(t *testing.T) {
	f := false
	c := NewCluster(t, Options{WalSegSizeMB: 64, Checksums: &f})
	c.Start(t)
	if got := c.QueryString(t, "SHOW wal_segment_size"); got != "64MB" {
		t.Fatalf("wal_segment_size = %s", got)
	}
	if got := c.QueryString(t, "SHOW data_checksums"); got != "off" {
		t.Fatalf("data_checksums = %s", got)
	}
}

func TestMinIO(t *testing.T) {
	m := StartMinIO(t)
	if m.Bucket == "" || m.NewBucket(t) == m.Bucket {
		t.Fatal("buckets")
	}
}
