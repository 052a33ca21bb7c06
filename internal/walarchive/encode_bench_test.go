package walarchive

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/repo"
)

// BenchmarkEncodeSegments encodes and summarizes the WAL segments in the
// directory PGKEEP_BENCH_WAL names (full segments of real WAL, as a
// pusher does), one after another: what a drain spends per segment,
// without the store.
func BenchmarkEncodeSegments(b *testing.B) {
	dir := os.Getenv("PGKEEP_BENCH_WAL")
	if dir == "" {
		b.Skip("PGKEEP_BENCH_WAL names no directory of WAL segments")
	}
	names, _ := filepath.Glob(filepath.Join(dir, "0000000*"))
	if len(names) == 0 {
		b.Skip("no segments in " + dir)
	}
	comp, err := envelope.ParseCompression(os.Getenv("PGKEEP_BENCH_COMPRESSION"))
	if err != nil {
		comp = envelope.Compression{Codec: envelope.S2}
	}
	id := &repo.Identity{WalSegSize: 16 << 20, PGMajor: 15}
	b.SetBytes(16 << 20)
	for i := 0; i < b.N; i++ {
		path := names[i%len(names)]
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		sum := newSegmentSummary(filepath.Base(path), id)
		enc, err := encodeOpen(f, comp, nil, sum)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := sum.finish(); err != nil {
			b.Fatal(err)
		}
		enc.release()
	}
}
