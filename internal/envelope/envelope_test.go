package envelope

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

func testContent(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		// Half-compressible: runs of text with random bytes.
		if i%64 < 32 {
			b[i] = byte('a' + i%7)
		} else {
			b[i] = byte(r.UintN(256))
		}
	}
	return b
}

var allCompressions = []Compression{{None, 0}, {Zstd, 0}, {Zstd, 3}, {LZ4, 0}, {LZ4, 9}, {S2, 0}, {S2, 2}}

func TestRoundTrip(t *testing.T) {
	for _, c := range allCompressions {
		for _, n := range []int{0, 1, 1000, 5 << 20} {
			content := testContent(n)
			var buf bytes.Buffer
			sum, err := Encode(&buf, content, c, nil)
			if err != nil {
				t.Fatalf("%s/%d: encode: %v", c, n, err)
			}
			if sum != sumOf(content) {
				t.Fatalf("%s/%d: sum %v, want %v", c, n, sum, sumOf(content))
			}
			got, gsum, err := Decode(bytes.NewReader(buf.Bytes()), nil)
			if err != nil {
				t.Fatalf("%s/%d: decode: %v", c, n, err)
			}
			if !bytes.Equal(got, content) || gsum != sum {
				t.Fatalf("%s/%d: round trip mismatch", c, n)
			}
			// Decoding through a reader that returns one byte at a time.
			got, _, err = Decode(&oneByteReader{bytes.NewReader(buf.Bytes())}, nil)
			if err != nil || !bytes.Equal(got, content) {
				t.Fatalf("%s/%d: byte-at-a-time decode: %v", c, n, err)
			}
		}
	}
}

type oneByteReader struct{ r io.Reader }

func (o *oneByteReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}

func TestCorruptionDetected(t *testing.T) {
	content := testContent(200 << 10)
	for _, c := range allCompressions {
		var buf bytes.Buffer
		if _, err := Encode(&buf, content, c, nil); err != nil {
			t.Fatal(err)
		}
		enc := buf.Bytes()
		cases := map[string][]byte{
			"truncated-trailer": enc[:len(enc)-1],
			"truncated-body":    enc[:len(enc)/2],
			"header-only":       enc[:headerSize],
			"empty":             nil,
		}
		flipped := bytes.Clone(enc)
		flipped[headerSize+len(enc)/3] ^= 0x40
		cases["flipped-body"] = flipped
		flippedSum := bytes.Clone(enc)
		flippedSum[len(enc)-16] ^= 1
		cases["flipped-checksum"] = flippedSum
		badMagic := bytes.Clone(enc)
		badMagic[0] = 'X'
		cases["bad-magic"] = badMagic
		for name, data := range cases {
			_, _, err := Decode(bytes.NewReader(data), nil)
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s/%s: got %v, want ErrCorrupt", c, name, err)
			}
		}
	}
}

func TestFutureVersionRefused(t *testing.T) {
	var buf bytes.Buffer
	Encode(&buf, []byte("x"), Compression{Codec: Zstd}, nil)
	b := buf.Bytes()
	b[3] = 3
	_, _, err := Decode(bytes.NewReader(b), nil)
	if err == nil || errors.Is(err, ErrCorrupt) {
		t.Fatalf("want a version error, got %v", err)
	}
}

func TestTransportErrorIsNotCorruption(t *testing.T) {
	var buf bytes.Buffer
	Encode(&buf, testContent(1<<20), Compression{Codec: Zstd}, nil)
	boom := errors.New("connection reset")
	r := io.MultiReader(bytes.NewReader(buf.Bytes()[:buf.Len()/2]), &errReader{boom})
	_, _, err := Decode(r, nil)
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the transport error", err)
	}
}

type errReader struct{ err error }

func (e *errReader) Read([]byte) (int, error) { return 0, e.err }

func TestParseCompression(t *testing.T) {
	good := map[string]Compression{"zstd": {Zstd, 0}, "lz4:1": {LZ4, 1}, "none": {None, 0}, "s2:3": {S2, 3}}
	for in, want := range good {
		got, err := ParseCompression(in)
		if err != nil || got != want {
			t.Errorf("%q: got %v %v", in, got, err)
		}
	}
	for _, bad := range []string{"gzip", "zstd:9", "lz4:x", "s2:-1"} {
		if _, err := ParseCompression(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, c := range allCompressions {
		var buf bytes.Buffer
		Encode(&buf, testContent(3000), c, nil)
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, sum, err := Decode(bytes.NewReader(data), nil)
		if err == nil && sumOf(got) != sum {
			t.Fatalf("accepted content whose checksum does not match")
		}
	})
}

func TestTransportErrorInHeaderIsNotCorruption(t *testing.T) {
	boom := errors.New("connection reset")
	r := io.MultiReader(bytes.NewReader([]byte("PGK")), &errReader{boom})
	if _, _, err := Decode(r, nil); !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want the transport error", err)
	}
	if _, _, err := Decode(bytes.NewReader([]byte("PGK")), nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a short object is corrupt, got %v", err)
	}
}

// encodeV1 builds a version 1 envelope (as pgkeep wrote before the stored
// checksum) of content: header, body, 24-byte trailer.
func encodeV1(t *testing.T, content []byte, c Compression) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := Encode(&buf, content, c, nil); err != nil {
		t.Fatal(err)
	}
	v2 := buf.Bytes()
	v1 := bytes.Clone(v2[:len(v2)-trailerSizeV2])
	v1[3] = 1
	v1 = append(v1, v2[len(v2)-trailerSizeV2:len(v2)-trailerSizeV2+16]...)
	return append(v1, trailerMagicV1[:]...)
}

func TestVersion1StaysReadable(t *testing.T) {
	content := testContent(100 << 10)
	for _, c := range allCompressions {
		v1 := encodeV1(t, content, c)
		got, sum, err := Decode(bytes.NewReader(v1), nil)
		if err != nil || !bytes.Equal(got, content) || sum != sumOf(content) {
			t.Fatalf("%s: decoding a version 1 envelope: %v", c, err)
		}
		st, err := CheckStored(bytes.NewReader(v1))
		if err != nil || st.Version != 1 || st.Verified || st.Content != sumOf(content) {
			t.Fatalf("%s: CheckStored of version 1: %+v %v", c, st, err)
		}
		flipped := bytes.Clone(v1)
		flipped[headerSize+len(v1)/3] ^= 0x40
		if _, _, err := Decode(bytes.NewReader(flipped), nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%s: damaged version 1 decoded: %v", c, err)
		}
	}
}

// TestCheckStored: the stored bytes of a version 2 envelope are verified
// without decoding, so damage anywhere (header, body, trailer) is caught by
// a reader that has no key.
func TestCheckStored(t *testing.T) {
	content := testContent(300 << 10)
	var buf bytes.Buffer
	sum, err := Encode(&buf, content, Compression{Codec: Zstd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	enc := buf.Bytes()
	st, err := CheckStored(bytes.NewReader(enc))
	if err != nil || !st.Verified || st.Version != 2 || st.Content != sum || st.Encrypted || st.Size != int64(len(enc)) {
		t.Fatalf("CheckStored: %+v %v", st, err)
	}
	for _, off := range []int{4, 6, headerSize + 1, len(enc) / 2, len(enc) - trailerSizeV2 - 1, len(enc) - 30, len(enc) - 20, len(enc) - 10} {
		bad := bytes.Clone(enc)
		bad[off] ^= 0x10
		if _, err := CheckStored(bytes.NewReader(bad)); err == nil {
			t.Errorf("damage at byte %d of %d not caught", off, len(enc))
		}
	}
	if _, err := CheckStored(bytes.NewReader(enc[:len(enc)-1])); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncation: %v", err)
	}
	boom := errors.New("connection reset")
	if _, err := CheckStored(io.MultiReader(bytes.NewReader(enc[:len(enc)/2]), &errReader{boom})); !errors.Is(err, boom) {
		t.Errorf("a transport error must come back as it is: %v", err)
	}
}

// sumOf is the content sum of p.
func sumOf(p []byte) Sum {
	h := NewHasher()
	h.Write(p)
	return h.Sum()
}

// Writes of mixed sizes (small ones gathered, large ones encoded in place
// by s2) come back in order, for every codec.
func TestMixedWrites(t *testing.T) {
	content := testContent(7<<20 + 12345)
	sizes := []int{10, 1 << 20, 100, 64 << 10, 64<<10 - 1, 3 << 20, 1}
	for _, c := range allCompressions {
		var buf bytes.Buffer
		w, err := NewWriter(&buf, c, nil)
		if err != nil {
			t.Fatal(err)
		}
		rest := content
		for i := 0; len(rest) > 0; i++ {
			n := min(sizes[i%len(sizes)], len(rest))
			chunk := append([]byte(nil), rest[:n]...)
			if _, err := w.Write(chunk); err != nil {
				t.Fatalf("%s: write: %v", c, err)
			}
			clear(chunk) // the caller may reuse its buffer at once
			rest = rest[n:]
		}
		if _, err := w.Close(); err != nil {
			t.Fatalf("%s: close: %v", c, err)
		}
		got, _, err := Decode(bytes.NewReader(buf.Bytes()), nil)
		if err != nil || !bytes.Equal(got, content) {
			t.Fatalf("%s: mixed writes do not round-trip: %v", c, err)
		}
	}
}
