package walarchive

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage/local"
	"github.com/pgkeep/pgkeep/internal/wal"
)

const testSegSize = 1 << 20

// fakeSegment is a whole segment of cluster sysid, named name: a long page
// header, then half compressible, half random bytes.
func fakeSegment(sysid uint64, seed uint64, name string) []byte {
	b := make([]byte, testSegSize)
	copy(b, segmentHeader(sysid, testSegSize))
	if seg, err := wal.ParseSegmentName(name, testSegSize); err == nil {
		binary.LittleEndian.PutUint64(b[8:], uint64(wal.SegmentStartLSN(seg.No, testSegSize)))
	}
	rng := rand.New(rand.NewPCG(seed, seed))
	for i := testSegSize / 2; i < testSegSize; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func TestEncodeFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "000000010000000000000001")
	data := fakeSegment(42, 1, filepath.Base(p))
	data = append(data, data[:12345]...) // not a multiple of the chunk size
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"zstd", "s2", "none"} {
		comp, err := envelope.ParseCompression(c)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := encodeFile(p, comp, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, sum, err := envelope.Decode(io.NewSectionReader(enc.buf, 0, enc.buf.Len()), nil)
		if err != nil || !bytes.Equal(got, data) || sum != sumOf(data) || enc.sum != sum {
			t.Fatalf("%s: round trip failed: err %v, sum %v want %v", c, err, enc.sum, sumOf(data))
		}
		if !bytes.Equal(enc.head, data[:headSize]) {
			t.Fatalf("%s: head differs", c)
		}
		enc.release()
	}
}

// pushed reports whether the record of the segment at path proves it was
// uploaded to the repository tag names (consuming the record).
func pushed(path, tag string) bool {
	ok, _ := checkRecord(path, tag)
	return ok
}

// The look-ahead record proves only the very file that was read: the same
// content rewritten, or another file renamed into place, is pushed again.
func TestRecordMatchesOnlyTheFileThatWasRead(t *testing.T) {
	walDir := filepath.Join(t.TempDir(), "pg_wal")
	os.MkdirAll(filepath.Join(walDir, pushedDir), 0o700)
	name := "000000010000000000000002"
	p := filepath.Join(walDir, name)
	data := fakeSegment(42, 2, name)
	os.WriteFile(p, data, 0o600)
	tag := RepoTag("s3://bucket/a http://127.0.0.1:9000")
	record := func() {
		t.Helper()
		enc, err := encodeFile(p, envelope.Compression{Codec: envelope.None}, nil)
		if err != nil {
			t.Fatal(err)
		}
		writeRecord(walDir, name, formatRecord(tag, enc.id, enc.sum.XXH64))
		enc.release()
	}

	record()
	if !pushed(p, tag) {
		t.Fatal("record of the unchanged file not accepted")
	}
	if pushed(p, tag) {
		t.Fatal("record not consumed")
	}

	// A record made for another repository proves nothing for this one
	// (archive_command pointed elsewhere while a pusher was at work).
	record()
	if pushed(p, RepoTag("s3://bucket/b http://127.0.0.1:9000")) {
		t.Fatal("record of another repository accepted")
	}

	record()
	time.Sleep(2 * time.Millisecond)
	os.WriteFile(p, data, 0o600) // same bytes, written again
	if pushed(p, tag) {
		t.Fatal("record accepted for a rewritten file")
	}

	record()
	other := filepath.Join(walDir, "other")
	os.WriteFile(other, data, 0o600)
	os.Rename(other, p) // another file (a recycled segment) under the name
	if pushed(p, tag) {
		t.Fatal("record accepted for another file renamed into place")
	}

	writeRecord(walDir, name, "pgkeep-pushed-1 garbage\n")
	if pushed(p, tag) {
		t.Fatal("record of another version accepted")
	}

	// A skip record ends the wait at once, even with the timeout far off.
	writeRecord(walDir, name, skipRecord)
	began := time.Now()
	if WaitPushed(p, tag, time.Minute) || time.Since(began) > time.Second {
		t.Fatal("skip record did not end the wait with false")
	}
	if _, err := os.Stat(recordPath(walDir, name)); err == nil {
		t.Fatal("skip record not consumed")
	}
}

// PushAhead uploads every ready segment after the given one, records each,
// and gives a segment of another cluster a skip record instead.
func TestPushAheadUploadsAndRecords(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	walDir := filepath.Join(root, "pg_wal")
	os.MkdirAll(filepath.Join(walDir, "archive_status"), 0o700)
	st, err := local.New(filepath.Join(root, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	comp, _ := envelope.ParseCompression("zstd")
	r := repo.New(st, repo.Options{Compression: comp, WALCompression: comp})
	if _, err := r.EnsureIdentity(ctx, repo.Identity{SystemIdentifier: 42, PGMajor: 15, WalSegSize: testSegSize}); err != nil {
		t.Fatal(err)
	}
	names := []string{"000000010000000000000001", "000000010000000000000002", "000000010000000000000003",
		"000000010000000000000004", "000000010000000000000005"}
	segs := map[string][]byte{}
	for i, n := range names {
		sysid := uint64(42)
		if i == 3 {
			sysid = 7 // another cluster's
		}
		segs[n] = fakeSegment(sysid, uint64(i), n)
		os.WriteFile(filepath.Join(walDir, n), segs[n], 0o600)
		os.WriteFile(filepath.Join(walDir, "archive_status", n+".ready"), nil, 0o600)
	}
	tag := RepoTag("file://" + filepath.Join(root, "repo"))
	if err := PushAhead(ctx, r, tag, walDir, names[0], 3, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(recordPath(walDir, names[0])); err == nil {
		t.Error("the segment PostgreSQL's own call pushes was pushed ahead too")
	}
	for i, n := range names[1:] {
		p := filepath.Join(walDir, n)
		if i+1 == 3 {
			if pushed, skipped := checkRecord(p, tag); pushed || !skipped {
				t.Errorf("%s of another cluster: pushed %v, skipped %v", n, pushed, skipped)
			}
			continue
		}
		if !pushed(p, tag) {
			t.Errorf("%s has no valid record", n)
			continue
		}
		got, _, err := r.GetObject(ctx, repo.WAL(n))
		if err != nil || !bytes.Equal(got, segs[n]) {
			t.Errorf("%s in the repository differs: %v", n, err)
		}
	}
}

// sumOf is the content sum of p.
func sumOf(p []byte) envelope.Sum {
	h := envelope.NewHasher()
	h.Write(p)
	return h.Sum()
}

func TestChunkedBuffer(t *testing.T) {
	var b chunkedBuffer
	want := make([]byte, 3*outChunk+12345)
	for i := range want {
		want[i] = byte(i * 7)
	}
	for off := 0; off < len(want); {
		n := min(len(want)-off, 1+off%70000)
		b.Write(want[off : off+n])
		off += n
	}
	if b.Len() != int64(len(want)) {
		t.Fatalf("len %d", b.Len())
	}
	got, err := io.ReadAll(io.NewSectionReader(&b, 0, b.Len()))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back: %v, %d bytes", err, len(got))
	}
	part := make([]byte, 100)
	if n, err := b.ReadAt(part, int64(outChunk)-50); n != 100 || err != nil || !bytes.Equal(part, want[outChunk-50:outChunk+50]) {
		t.Fatalf("across a chunk boundary: %d %v", n, err)
	}
	b.release()
}

// encodeFile reads the file at path once, in cache-sized chunks, hashing
// and compressing each chunk into an envelope. It fails with errChanged if
// the file's identity changed during the read.
func encodeFile(path string, comp envelope.Compression, ci envelope.Cipher) (*encodedFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading WAL file: %w", err)
	}
	defer f.Close()
	return encodeOpen(f, comp, ci, nil)
}
