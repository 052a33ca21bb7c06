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

// putPieces stores the bytes [start, end) of seg as streamed pieces, one
// per range.
func putPieces(t *testing.T, r *repo.Repo, name string, seg []byte, ranges ...[2]uint64) {
	t.Helper()
	for _, rg := range ranges {
		p := repo.Piece{Segment: name, Start: rg[0], End: rg[1]}
		if _, err := StorePiece(context.Background(), r, p, seg[rg[0]:rg[1]]); err != nil {
			t.Fatal(err)
		}
	}
}

func fetchTo(t *testing.T, r *repo.Repo, name string) ([]byte, error) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "RECOVERYXLOG")
	err := Fetch(context.Background(), func() (*repo.Repo, error) { return r, nil }, name, dest, FetchOptions{})
	if err != nil {
		if _, serr := os.Stat(dest); serr == nil {
			t.Fatalf("fetch of %s failed (%v) but wrote its destination", name, err)
		}
		return nil, err
	}
	return os.ReadFile(dest)
}

// A segment the repository holds only in streamed pieces is fetched from
// them: at the end of the archive up to the last streamed byte and
// zero-filled (recovery replays to there, then promotes), complete pieces
// in full. A hole between pieces, or a partly streamed segment with later
// WAL on the path, is a gap.
func TestFetchStreamed(t *testing.T) {
	r := testRepo(t)
	root := strings.TrimPrefix(r.Location(), "file://")
	name := func(no uint64) string { return wal.SegmentName(1, no, seg1M) }
	putSegs(t, r, root, 1, 1)
	seg2 := fakeSegment(42, 2, name(2))
	seg3 := fakeSegment(42, 3, name(3))
	putPieces(t, r, name(2), seg2, [2]uint64{0, 4096}, [2]uint64{4096, seg1M})
	putPieces(t, r, name(3), seg3, [2]uint64{0, 8192}, [2]uint64{8192, 600000})

	got, err := fetchTo(t, r, name(2))
	if err != nil || !bytes.Equal(got, seg2) {
		t.Fatalf("a segment complete in pieces: %v (equal %v)", err, bytes.Equal(got, seg2))
	}
	got, err = fetchTo(t, r, name(3))
	want := append(append([]byte(nil), seg3[:600000]...), make([]byte, seg1M-600000)...)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the streamed tail: %v (equal to the streamed bytes, zero-filled: %v)", err, bytes.Equal(got, want))
	}
	if _, err := fetchTo(t, r, name(4)); !errors.Is(err, ErrNotArchived) {
		t.Fatalf("the segment after the streamed tail is the end of the archive: %v", err)
	}

	// The same tail with a later segment on the path: a gap, not the end.
	old := time.Now().Add(-time.Hour)
	putSegs(t, r, root, 1, 5)
	if _, err := fetchTo(t, r, name(3)); !errors.Is(err, ErrGap) || !strings.Contains(err.Error(), "streamed only up to") {
		t.Fatalf("a partly streamed segment before later WAL: %v", err)
	}
	if _, err := fetchTo(t, r, name(4)); !errors.Is(err, ErrGap) {
		t.Fatalf("a missing segment before later WAL: %v", err)
	}

	// A hole inside the streamed pieces is a gap even at the end.
	seg6 := fakeSegment(42, 6, name(6))
	putPieces(t, r, name(6), seg6, [2]uint64{0, 8192}, [2]uint64{16384, 20000})
	for _, p := range []repo.Piece{{Segment: name(6), Start: 0, End: 8192}, {Segment: name(6), Start: 16384, End: 20000}} {
		os.Chtimes(filepath.Join(root, filepath.FromSlash(repo.StreamedPiece(p).String())), old, old)
	}
	if _, err := fetchTo(t, r, name(6)); !errors.Is(err, ErrGap) || !strings.Contains(err.Error(), "missing between its streamed pieces") {
		t.Fatalf("a hole between streamed pieces: %v", err)
	}

	// A piece whose stored bytes are damaged is never served.
	seg7 := fakeSegment(42, 7, name(7))
	putPieces(t, r, name(7), seg7, [2]uint64{0, 9000})
	p := repo.StreamedPiece(repo.Piece{Segment: name(7), Start: 0, End: 9000})
	path := filepath.Join(root, filepath.FromSlash(p.String()))
	data, _ := os.ReadFile(path)
	data[len(data)/2] ^= 0xff
	os.Chmod(path, 0o600)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fetchTo(t, r, name(7)); err == nil || errors.Is(err, ErrNotArchived) {
		t.Fatalf("a damaged piece: %v", err)
	}
}

// The history a timeline left at a switch point: its last segment, streamed
// up to the switch, is the end of that timeline, not a gap, although the
// child timeline goes on.
func TestFetchStreamedBeforeSwitch(t *testing.T) {
	r := testRepo(t)
	root := strings.TrimPrefix(r.Location(), "file://")
	putSegs(t, r, root, 1, 1)
	name1 := wal.SegmentName(1, 2, seg1M)
	seg2 := fakeSegment(42, 2, name1)
	putPieces(t, r, name1, seg2, [2]uint64{0, 5000})
	switchAt := wal.SegmentStartLSN(2, seg1M) + 5000
	if _, err := r.PutObject(context.Background(), repo.WAL("00000002.history"), []byte("1\t"+switchAt.String()+"\tno recovery target specified\n")); err != nil {
		t.Fatal(err)
	}
	putSegs(t, r, root, 2, 3, 4)
	if _, err := fetchTo(t, r, name1); err != nil {
		t.Fatalf("timeline 1's last segment, streamed to its switch point: %v", err)
	}
	// Had timeline 2 left timeline 1 later than the streamed end, the WAL
	// between would be missing.
	if _, err := r.PutObject(context.Background(), repo.WAL("00000003.history"), []byte("1\t"+(switchAt+100).String()+"\tx\n")); err != nil {
		t.Fatal(err)
	}
	putSegs(t, r, root, 3, 5)
	if _, err := fetchTo(t, r, name1); !errors.Is(err, ErrGap) {
		t.Fatalf("a child timeline that left after the streamed end: %v", err)
	}
}

// A segment the agent completes is stored exactly as wal-push stores the
// same file: a push of it afterwards finds identical content.
func TestStoreSegmentAgreesWithPush(t *testing.T) {
	r := testRepo(t)
	id, err := r.Identity(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	name := wal.SegmentName(1, 9, seg1M)
	seg := fakeSegment(42, 9, name)
	res, err := StoreSegment(context.Background(), r, id, name, seg)
	if err != nil || res.Existed {
		t.Fatalf("StoreSegment: %+v %v", res, err)
	}
	dir := filepath.Join(t.TempDir(), "pg_wal")
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, name), seg, 0o600)
	pr, err := Push(context.Background(), r, filepath.Join(dir, name), PushOptions{})
	if err != nil || !pr.Existed {
		t.Fatalf("wal-push of the same segment after the agent stored it: %+v %v", pr, err)
	}
	// And a segment of another cluster is refused.
	if _, err := StoreSegment(context.Background(), r, id, wal.SegmentName(1, 10, seg1M), fakeSegment(43, 10, wal.SegmentName(1, 10, seg1M))); !errors.Is(err, repo.ErrForeignCluster) {
		t.Fatalf("another cluster's segment: %v", err)
	}
}
