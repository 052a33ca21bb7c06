package walarchive

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestArchivingIn(t *testing.T) {
	for title, want := range map[string]string{
		"postgres: archiver archiving 000000010000000000000003\x00\x00": "000000010000000000000003",
		"postgres: main: archiver archiving 00000002.history":           "00000002.history",
		"postgres: archiver   archiving 000000010000000000000003   ":    "000000010000000000000003", // PostgreSQL 12
		"postgres: archiver last was 000000010000000000000003":          "",
		"postgres: archiver failed on 000000010000000000000003":         "",
		"postgres: archiver": "",
		"/usr/bin/something archiver archiving 000000010000000000000003": "",
	} {
		if got := archivingIn(title); got != want {
			t.Errorf("archivingIn(%q) = %q, want %q", title, got, want)
		}
	}
}

// TestMarkable: the pusher never marks the segment the archiver is on,
// the newest ready one, or (when the archiver's title does not say) the
// oldest; and it marks only a segment whose file is the one it read.
func TestMarkable(t *testing.T) {
	walDir := t.TempDir()
	status := filepath.Join(walDir, "archive_status")
	os.MkdirAll(filepath.Join(walDir, pushedDir), 0o700)
	os.Mkdir(status, 0o700)
	segs := []string{"000000010000000000000003", "000000010000000000000004", "000000010000000000000005", "000000010000000000000006"}
	for _, s := range segs {
		os.WriteFile(filepath.Join(walDir, s), []byte(s), 0o600)
		os.WriteFile(filepath.Join(status, s+".ready"), nil, 0o600)
	}
	os.WriteFile(filepath.Join(status, "00000002.history.ready"), nil, 0o600)
	for _, tc := range []struct {
		name, busy string
		want       bool
	}{
		{segs[0], "", false},     // oldest, archiver's pick unknown
		{segs[0], segs[1], true}, // the archiver is on another
		{segs[1], "", true},
		{segs[1], segs[1], false},                    // the archiver is on it
		{segs[3], segs[1], false},                    // newest
		{"000000010000000000000009", segs[1], false}, // not ready
	} {
		if got := markable(walDir, tc.name, tc.busy); got != tc.want {
			t.Errorf("markable(%s, busy %q) = %v, want %v", tc.name, tc.busy, got, tc.want)
		}
	}

	fi, _ := os.Stat(filepath.Join(walDir, segs[1]))
	id, _ := idOf(fi)
	writeRecord(walDir, segs[1], "record")
	// A file replaced since it was read is not marked.
	other := id
	other.Ino++
	if markArchived(walDir, segs[1], other) {
		t.Fatal("marked a segment whose file is not the one read")
	}
	if markedDone(filepath.Join(walDir, segs[1])) {
		t.Fatal("markedDone before marking")
	}
	if !markArchived(walDir, segs[1], id) {
		t.Fatal("markArchived failed")
	}
	if _, err := os.Stat(filepath.Join(status, segs[1]+".done")); err != nil {
		t.Fatal("no .done after marking")
	}
	if _, err := os.Stat(filepath.Join(status, segs[1]+".ready")); err == nil {
		t.Fatal(".ready left after marking")
	}
	if _, err := os.Stat(recordPath(walDir, segs[1])); err == nil {
		t.Fatal("record left after marking")
	}
	// A call the archiver had started for it sees the mark and stops
	// waiting, but does not take it for proof: it pushes the segment
	// itself (a call by hand may name another repository).
	if !markedDone(filepath.Join(walDir, segs[1])) {
		t.Fatal("markedDone after marking")
	}
	os.WriteFile(PusherLock(walDir), nil, 0o600)
	l, ok, err := tryLock(PusherLock(walDir))
	if err != nil || !ok {
		t.Fatalf("taking the pusher's lock: %v %v", ok, err)
	}
	defer l.release()
	began := time.Now()
	if WaitPushed(filepath.Join(walDir, segs[2]), "tag", 100*time.Millisecond) || time.Since(began) < 100*time.Millisecond {
		t.Fatal("a call for a ready segment did not wait for the running pusher")
	}
	began = time.Now()
	if WaitPushed(filepath.Join(walDir, segs[1]), "tag", 5*time.Second) {
		t.Fatal("a call for a marked segment took the mark for an upload to its repository")
	}
	if time.Since(began) > time.Second {
		t.Fatal("a call for a marked segment waited for a record that will not come")
	}
	if markedDone(filepath.Join(walDir, segs[2])) {
		t.Fatal("markedDone for a ready segment")
	}
}
