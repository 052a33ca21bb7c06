package restore

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgkeep/pgkeep/internal/catalog"
)

// TestCreateFilesKeepsWrittenData: createFiles runs beside the fetch, so it
// may reach a file a writer has already created and filled. It must size
// the file without touching its data, create the files no writer touched
// (holes and empty files included) at their final sizes, and map
// pg_control to its temporary name.
func TestCreateFilesKeepsWrittenData(t *testing.T) {
	pgdata := t.TempDir()
	m := &catalog.Manifest{Contents: catalog.Contents{
		Dirs: []catalog.Dir{{Path: "base"}, {Path: "base/5"}, {Path: "global"}},
		Files: []catalog.File{
			{Path: "base/5/1259", Size: 3 * 8192}, // written first, with a hole at its end
			{Path: "base/5/2600", Size: 16384},    // only a hole
			{Path: "base/5/empty", Size: 0},
			{Path: "global/pg_control", Size: 8192},
		},
	}}
	if _, err := layout(pgdata, m, nil, nil); err != nil {
		t.Fatal(err)
	}
	files := &fileCache{root: pgdata}
	fh, err := files.open("base/5/1259")
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0xAB}, 8192)
	if _, err := fh.WriteAt(data, 8192); err != nil {
		t.Fatal(err)
	}
	files.closeAll()

	if err := createFiles(context.Background(), pgdata, m); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(pgdata, "base/5/1259"))
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(make([]byte, 8192), data...), make([]byte, 8192)...)
	if !bytes.Equal(got, want) {
		t.Errorf("base/5/1259: %d bytes, data kept %v; want %d bytes with the written block intact", len(got), bytes.Equal(got[8192:16384], data), len(want))
	}
	for _, f := range []struct {
		path string
		size int64
	}{{"base/5/2600", 16384}, {"base/5/empty", 0}, {controlTemp, 8192}} {
		st, err := os.Stat(filepath.Join(pgdata, f.path))
		if err != nil || st.Size() != f.size || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, want a 0600 file of %d bytes", f.path, err, f.size)
		}
	}
	if _, err := os.Stat(filepath.Join(pgdata, "global/pg_control")); !os.IsNotExist(err) {
		t.Errorf("global/pg_control exists before the restore is done: %v", err)
	}

	// A cancelled restore stops creating files.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := createFiles(ctx, t.TempDir(), m); err == nil {
		t.Error("createFiles went on after cancellation")
	}
}
