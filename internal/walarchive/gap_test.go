package walarchive

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// putSegs stores 1 MiB segments on timeline tli, dated long ago.
func putSegs(t *testing.T, r *repo.Repo, root string, tli wal.TimeLineID, nos ...uint64) {
	t.Helper()
	old := time.Now().Add(-time.Hour)
	for _, no := range nos {
		name := wal.SegmentName(tli, no, seg1M)
		if _, err := r.PutObject(context.Background(), repo.WAL(name), bytes.Repeat([]byte{byte(no)}, seg1M)); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(filepath.Join(root, filepath.FromSlash(repo.WAL(name).String())), old, old)
	}
}

func fetchErr(t *testing.T, r *repo.Repo, name string) error {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "RECOVERYXLOG")
	err := Fetch(context.Background(), opened(r), name, dest, FetchOptions{})
	if err != nil {
		if _, serr := os.Stat(dest); serr == nil {
			t.Fatalf("fetch of %s failed (%v) but wrote its destination", name, err)
		}
	}
	return err
}

// TestGapIsNotTheEnd: a missing segment is "not found" only at the end of
// the archive; with later WAL that recovery would replay in the
// repository, it is a gap, on the same timeline or on one that descends
// from it past the missing segment. History files of timelines that do not
// exist yet, and abandoned branches, stay "not found".
func TestGapIsNotTheEnd(t *testing.T) {
	r := testRepo(t)
	root := strings.TrimPrefix(r.Location(), "file://")
	putSegs(t, r, root, 1, 1, 2, 4, 5)
	seg := func(tli wal.TimeLineID, no uint64) string { return wal.SegmentName(tli, no, seg1M) }

	if err := fetchErr(t, r, seg(1, 3)); !errors.Is(err, ErrGap) || errors.Is(err, ErrNotArchived) {
		t.Fatalf("segment 3 missing before 4 and 5: %v", err)
	} else if !strings.Contains(err.Error(), seg(1, 4)) || !strings.Contains(err.Error(), "--target-lsn") {
		t.Fatalf("the gap error should name the later WAL and the way out: %v", err)
	}
	if err := fetchErr(t, r, seg(1, 6)); !errors.Is(err, ErrNotArchived) {
		t.Fatalf("the segment after the newest is the end of the archive: %v", err)
	}
	if err := fetchErr(t, r, "00000002.history"); !errors.Is(err, ErrNotArchived) {
		t.Fatalf("a history file of a timeline that does not exist yet: %v", err)
	}
	if err := fetchErr(t, r, seg(1, 6)+".partial"); !errors.Is(err, ErrNotArchived) {
		t.Fatalf("a missing .partial: %v", err)
	}

	// Timeline 2 left timeline 1 inside segment 4 (at 0/400100); timeline 1
	// went on to segment 5 as an abandoned branch.
	hist := []byte("1\t0/400100\tno recovery target specified\n")
	if _, err := r.PutObject(context.Background(), repo.WAL("00000002.history"), hist); err != nil {
		t.Fatal(err)
	}
	putSegs(t, r, root, 2, 4, 6, 7)
	if err := fetchErr(t, r, seg(2, 5)); !errors.Is(err, ErrGap) {
		t.Fatalf("segment 5 of timeline 2 missing before its 6 and 7: %v", err)
	}
	if err := fetchErr(t, r, seg(2, 8)); !errors.Is(err, ErrNotArchived) {
		t.Fatalf("end of timeline 2: %v", err)
	}
	if err := fetchErr(t, r, seg(1, 6)); !errors.Is(err, ErrNotArchived) {
		t.Fatalf("timeline 1 past the switch is an abandoned branch, not a gap: %v", err)
	}
	// Segment 3 of timeline 1 lies on timeline 2's history: still a gap.
	if err := fetchErr(t, r, seg(1, 3)); !errors.Is(err, ErrGap) {
		t.Fatalf("a gap before the switch: %v", err)
	}
}

// TestGapGrace: a later segment stored moments ago may have overtaken the
// missing one (parallel uploads): the fetch waits for it.
func TestGapGrace(t *testing.T) {
	r := testRepo(t)
	root := strings.TrimPrefix(r.Location(), "file://")
	putSegs(t, r, root, 1, 1, 2)
	name := wal.SegmentName(1, 4, seg1M)
	if _, err := r.PutObject(context.Background(), repo.WAL(name), bytes.Repeat([]byte{4}, seg1M)); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(1500 * time.Millisecond)
		putSegs(t, r, root, 1, 3)
	}()
	began := time.Now()
	if err := fetchErr(t, r, wal.SegmentName(1, 3, seg1M)); err != nil {
		t.Fatalf("a segment overtaken by its successor: %v", err)
	}
	if time.Since(began) < time.Second {
		t.Fatal("served before it was stored?")
	}
}
