package envelope

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/pgkeep/pgkeep/internal/freelist"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// Codec identifies the compression applied to an object's content. Its
// numeric value is stored in the object header, so values never change.
type Codec uint8

const (
	None Codec = 0
	Zstd Codec = 1
	LZ4  Codec = 2
	S2   Codec = 3
)

// String returns the codec's name as accepted by ParseCodec.
func (c Codec) String() string {
	switch c {
	case None:
		return "none"
	case Zstd:
		return "zstd"
	case LZ4:
		return "lz4"
	case S2:
		return "s2"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

func (c Codec) valid() bool { return c <= S2 }

// ParseCodec parses a codec name: none, zstd, lz4 or s2.
func ParseCodec(s string) (Codec, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "none", "off":
		return None, nil
	case "zstd":
		return Zstd, nil
	case "lz4":
		return LZ4, nil
	case "s2":
		return S2, nil
	}
	return 0, fmt.Errorf("unknown compression %q (choose zstd, lz4, s2 or none)", s)
}

// Compression is a codec and its level. Level 0 means the codec's default
// (for zstd the fastest level, for lz4 the fast mode). Levels: zstd 1-4
// (fastest, default, better, best), lz4 1-9, s2 1-3 (default, better, best).
type Compression struct {
	Codec Codec
	Level int
}

func (c Compression) String() string {
	if c.Level == 0 {
		return c.Codec.String()
	}
	return fmt.Sprintf("%s:%d", c.Codec, c.Level)
}

// ParseCompression parses "codec" or "codec:level".
func ParseCompression(s string) (Compression, error) {
	name, lvl, hasLevel := strings.Cut(s, ":")
	codec, err := ParseCodec(name)
	if err != nil {
		return Compression{}, err
	}
	c := Compression{Codec: codec}
	if hasLevel {
		if _, err := fmt.Sscanf(lvl, "%d", &c.Level); err != nil {
			return Compression{}, fmt.Errorf("compression level %q is not a number", lvl)
		}
		max := map[Codec]int{None: 0, Zstd: 4, LZ4: 9, S2: 3}[codec]
		if c.Level < 0 || c.Level > max {
			return Compression{}, fmt.Errorf("compression level %d out of range for %s (0-%d)", c.Level, codec, max)
		}
	}
	return c, nil
}

// compressor is a reusable streaming encoder.
type compressor interface {
	io.WriteCloser
	Reset(w io.Writer)
}

// pools of encoders, one per compression setting. Encoders are expensive to
// build (zstd allocates window tables), so they are reused.
// They are kept across garbage collections (package freelist): a zstd
// encoder rebuilt after each cycle touches fresh memory for its tables
// and history, which costs more than compressing with it.
var encoderPools sync.Map // Compression -> *freelist.List[compressor]

func encoderPool(c Compression) *freelist.List[compressor] {
	if p, ok := encoderPools.Load(c); ok {
		return p.(*freelist.List[compressor])
	}
	p, _ := encoderPools.LoadOrStore(c, &freelist.List[compressor]{New: func() compressor { return nil }})
	return p.(*freelist.List[compressor])
}

type nopCompressor struct{ w io.Writer }

func (n *nopCompressor) Write(p []byte) (int, error) { return n.w.Write(p) }
func (n *nopCompressor) Close() error                { return nil }
func (n *nopCompressor) Reset(w io.Writer)           { n.w = w }

type zstdCompressor struct{ *zstd.Encoder }

func (z zstdCompressor) Reset(w io.Writer) { z.Encoder.Reset(w) }

type lz4Compressor struct{ *lz4.Writer }

func (l lz4Compressor) Reset(w io.Writer) { l.Writer.Reset(w) }

type s2Compressor struct{ *s2.Writer }

func (s s2Compressor) Reset(w io.Writer) { s.Writer.Reset(w) }

// Write encodes a large p in place (EncodeBuffer: no copy into the
// writer's own buffer, which for a WAL segment was 16 MiB of memmove);
// small writes are gathered into blocks as usual. With concurrency 1 the
// encoding is done when EncodeBuffer returns, so p is free again.
func (s s2Compressor) Write(p []byte) (int, error) {
	if len(p) < 64<<10 {
		return s.Writer.Write(p)
	}
	if err := s.Writer.EncodeBuffer(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func newCompressor(c Compression) (compressor, error) {
	switch c.Codec {
	case None:
		return &nopCompressor{}, nil
	case Zstd:
		lvl := zstd.SpeedFastest
		if c.Level > 0 {
			lvl = zstd.EncoderLevel(c.Level)
		}
		// Concurrency 1: pgkeep parallelises across objects, not inside one.
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(lvl), zstd.WithEncoderConcurrency(1),
			zstd.WithEncoderCRC(false), zstd.WithWindowSize(1<<20))
		if err != nil {
			return nil, fmt.Errorf("creating zstd encoder: %w", err)
		}
		return zstdCompressor{enc}, nil
	case LZ4:
		w := lz4.NewWriter(nil)
		opts := []lz4.Option{lz4.ChecksumOption(false), lz4.ConcurrencyOption(1), lz4.BlockSizeOption(lz4.Block4Mb)}
		if c.Level > 0 {
			opts = append(opts, lz4.CompressionLevelOption(lz4.CompressionLevel(1<<(8+c.Level))))
		}
		if err := w.Apply(opts...); err != nil {
			return nil, fmt.Errorf("creating lz4 encoder: %w", err)
		}
		return lz4Compressor{w}, nil
	case S2:
		opts := []s2.WriterOption{s2.WriterConcurrency(1)}
		switch c.Level {
		case 2:
			opts = append(opts, s2.WriterBetterCompression())
		case 3:
			opts = append(opts, s2.WriterBestCompression())
		}
		return s2Compressor{s2.NewWriter(nil, opts...)}, nil
	}
	return nil, fmt.Errorf("unknown codec %d", c.Codec)
}

func getCompressor(c Compression, w io.Writer) (compressor, error) {
	if cw := encoderPool(c).Get(); cw != nil {
		cw.Reset(w)
		return cw, nil
	}
	cw, err := newCompressor(c)
	if err != nil {
		return nil, err
	}
	cw.Reset(w)
	return cw, nil
}

func putCompressor(c Compression, cw compressor) {
	cw.Reset(nil)
	encoderPool(c).Put(cw)
}

// decompressor is a reusable streaming decoder.
type decompressor interface {
	io.Reader
	Reset(r io.Reader) error
}

var decoderPools [S2 + 1]freelist.List[decompressor]

func init() {
	for i := range decoderPools {
		decoderPools[i].New = func() decompressor { return nil }
	}
}

type nopDecompressor struct{ r io.Reader }

func (n *nopDecompressor) Read(p []byte) (int, error) { return n.r.Read(p) }
func (n *nopDecompressor) Reset(r io.Reader) error    { n.r = r; return nil }

type lz4Decompressor struct{ *lz4.Reader }

func (l lz4Decompressor) Reset(r io.Reader) error { l.Reader.Reset(r); return nil }

type s2Decompressor struct{ *s2.Reader }

func (s s2Decompressor) Reset(r io.Reader) error { s.Reader.Reset(r); return nil }

func getDecompressor(c Codec, r io.Reader) (decompressor, error) {
	if !c.valid() {
		return nil, fmt.Errorf("unknown codec %d", c)
	}
	if d := decoderPools[c].Get(); d != nil {
		if err := d.Reset(r); err != nil {
			return nil, err
		}
		return d, nil
	}
	switch c {
	case None:
		return &nopDecompressor{r: r}, nil
	case Zstd:
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(false),
			zstd.WithDecoderMaxWindow(1<<27))
		if err != nil {
			return nil, fmt.Errorf("creating zstd decoder: %w", err)
		}
		return d, nil
	case LZ4:
		d := lz4.NewReader(r)
		if err := d.Apply(lz4.ConcurrencyOption(1)); err != nil {
			return nil, err
		}
		return lz4Decompressor{d}, nil
	default: // S2
		return s2Decompressor{s2.NewReader(r, s2.ReaderMaxBlockSize(4<<20))}, nil
	}
}

func putDecompressor(c Codec, d decompressor) {
	_ = d.Reset(nil)
	decoderPools[c].Put(d)
}
