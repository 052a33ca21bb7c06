// Package envelope defines the byte format of every object pgkeep stores:
// a fixed header naming the codec, the compressed content, and a trailer
// carrying the content's size and checksum. Readers verify the trailer when
// they reach the end, so no caller can consume unverified content by
// accident: Reader.Read returns the checksum error instead of io.EOF.
//
// Layout (all integers little-endian):
//
//	header  (8 bytes):  "PGK" V | codec (1) | flags (1) | reserved (2, zero)
//	body:               content compressed with codec
//	trailer, V = 2 (40 bytes): content size (8) | xxh64 of content (8) |
//	                    stored size (8) | stored xxh64 (8) | "PGKEND02"
//	trailer, V = 1 (24 bytes): content size (8) | xxh64 of content (8) | "PGKEND01"
//
// V in the magic is the envelope format version. This package writes
// version 2 and reads 1 and 2; readers refuse any other. In version 2,
// stored size is the length of header and body, and stored xxh64 is the
// xxh64 of header, body and the trailer's first 16 bytes (the content
// fields): every byte but the stored checksum itself, as it lies in the
// repository. Anyone can check it without decoding and without a key
// (CheckStored); a reader that decodes checks both sums.
// Version 1 objects (pgkeep before the stored checksum) carry only the
// content's sum, which a reader without the key cannot check.
//
// Flag bit 0 (FlagEncrypted) means the body is an age stream (see package
// crypt) whose plaintext is the compressed content; the trailer is the same,
// so writers can compare content without the key. Other flags must be zero.
package envelope

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cespare/xxhash/v2"
)

const (
	headerSize    = 8
	trailerSizeV1 = 24
	trailerSizeV2 = 40
	// Overhead is the number of bytes an envelope adds around the body.
	Overhead = headerSize + trailerSizeV2
)

// Version is the envelope format version this package writes.
const Version = 2

var (
	magicPrefix    = [3]byte{'P', 'G', 'K'}
	trailerMagicV1 = [8]byte{'P', 'G', 'K', 'E', 'N', 'D', '0', '1'}
	trailerMagicV2 = [8]byte{'P', 'G', 'K', 'E', 'N', 'D', '0', '2'}
)

// trailerSize returns the trailer length of envelope version v.
func trailerSize(v byte) int {
	if v == 1 {
		return trailerSizeV1
	}
	return trailerSizeV2
}

// FlagEncrypted marks an encrypted body.
const FlagEncrypted = 0x01

// Cipher encrypts and decrypts bodies. Decrypt returns an explanatory error
// when the reader has no key.
type Cipher interface {
	Encrypt(dst io.Writer) (io.WriteCloser, error)
	Decrypt(src io.Reader) (io.Reader, error)
}

// ErrEncrypted means an object is encrypted and no Cipher was given.
var ErrEncrypted = errors.New("object is encrypted: give the identity file with --age-identity or PGKEEP_AGE_IDENTITY")

// ErrCorrupt is wrapped by every error that means the stored bytes are not
// a valid envelope or do not match their checksum.
var ErrCorrupt = errors.New("corrupt object")

// Sum is the checksum of a content: its length and xxh64 digest.
type Sum struct {
	Size  int64
	XXH64 uint64
}

// String formats the digest as 16 hex digits.
func (s Sum) String() string { return fmt.Sprintf("%016x", s.XXH64) }

// Hasher computes a Sum incrementally.
type Hasher struct {
	d *xxhash.Digest
	n int64
}

// NewHasher returns an empty Hasher.
func NewHasher() *Hasher { return &Hasher{d: xxhash.New()} }

func (h *Hasher) Write(p []byte) (int, error) {
	h.n += int64(len(p))
	return h.d.Write(p)
}

// Sum returns the checksum of everything written so far.
func (h *Hasher) Sum() Sum { return Sum{Size: h.n, XXH64: h.d.Sum64()} }

// Writer encodes content into an envelope written to an underlying writer.
// Close MUST be called to write the trailer; until then the output is not a
// valid envelope.
type Writer struct {
	w     *hashingWriter // everything before the trailer goes through it
	comp  Compression
	enc   compressor
	crypt io.WriteCloser // nil when not encrypting
	h     *Hasher
	err   error
}

// NewWriter writes the header to w and returns a Writer for the content,
// encrypted with ci unless ci is nil.
func NewWriter(w io.Writer, c Compression, ci Cipher) (*Writer, error) {
	if !c.Codec.valid() {
		return nil, fmt.Errorf("unknown codec %d", c.Codec)
	}
	hdr := [headerSize]byte{}
	copy(hdr[:3], magicPrefix[:])
	hdr[3] = Version
	hdr[4] = byte(c.Codec)
	if ci != nil {
		hdr[5] = FlagEncrypted
	}
	hw := &hashingWriter{w: w, h: NewHasher()}
	if _, err := hw.Write(hdr[:]); err != nil {
		return nil, fmt.Errorf("writing object header: %w", err)
	}
	ew := &Writer{w: hw, comp: c, h: NewHasher()}
	var body io.Writer = hw
	if ci != nil {
		cw, err := ci.Encrypt(hw)
		if err != nil {
			return nil, fmt.Errorf("starting encryption: %w", err)
		}
		ew.crypt, body = cw, cw
	}
	enc, err := getCompressor(c, body)
	if err != nil {
		return nil, err
	}
	ew.enc = enc
	return ew, nil
}

// Write compresses p.
func (e *Writer) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	e.h.Write(p)
	n, err := e.enc.Write(p)
	if err != nil {
		e.err = fmt.Errorf("compressing: %w", err)
	}
	return n, e.err
}

// Close flushes the compressor and writes the trailer. It returns the
// checksum of the content.
func (e *Writer) Close() (Sum, error) {
	if e.err != nil {
		return Sum{}, e.err
	}
	if err := e.enc.Close(); err != nil {
		e.err = fmt.Errorf("finishing compression: %w", err)
		return Sum{}, e.err
	}
	putCompressor(e.comp, e.enc)
	e.enc = nil
	if e.crypt != nil {
		if err := e.crypt.Close(); err != nil {
			e.err = fmt.Errorf("finishing encryption: %w", err)
			return Sum{}, e.err
		}
	}
	sum := e.h.Sum()
	var tr [trailerSizeV2]byte
	binary.LittleEndian.PutUint64(tr[0:8], uint64(sum.Size))
	binary.LittleEndian.PutUint64(tr[8:16], sum.XXH64)
	stored := storedSum(e.w.h, tr[:16])
	binary.LittleEndian.PutUint64(tr[16:24], uint64(stored.Size))
	binary.LittleEndian.PutUint64(tr[24:32], stored.XXH64)
	copy(tr[32:], trailerMagicV2[:])
	if _, err := e.w.w.Write(tr[:]); err != nil {
		e.err = fmt.Errorf("writing object trailer: %w", err)
		return Sum{}, e.err
	}
	e.err = errors.New("envelope writer closed")
	return sum, nil
}

// storedSum finishes the stored checksum of a version 2 envelope: h has
// hashed the header and the body; the checksum also covers the trailer's
// content fields (so a keyless check vouches for the content sum too),
// while the size is that of header and body.
func storedSum(h *Hasher, contentFields []byte) Sum {
	n := h.n
	h.Write(contentFields)
	return Sum{Size: n, XXH64: h.d.Sum64()}
}

// hashingWriter passes writes through and hashes them.
type hashingWriter struct {
	w io.Writer
	h *Hasher
}

func (hw *hashingWriter) Write(p []byte) (int, error) {
	n, err := hw.w.Write(p)
	hw.h.Write(p[:n])
	return n, err
}

// Encode returns content encoded as one envelope, appended to dst.
func Encode(dst *bytes.Buffer, content []byte, c Compression, ci Cipher) (Sum, error) {
	w, err := NewWriter(dst, c, ci)
	if err != nil {
		return Sum{}, err
	}
	if _, err := w.Write(content); err != nil {
		return Sum{}, err
	}
	return w.Close()
}

// Reader decodes an envelope. It returns the content through Read and
// verifies size and checksum when the content ends: the final Read returns
// an error wrapping ErrCorrupt instead of io.EOF if they do not match.
type Reader struct {
	codec   Codec
	version byte
	tail    *tailReader
	dec     decompressor
	h       *Hasher
	sum     Sum
	done    bool
	err     error
}

// NewReader reads and checks the header from r; ci decrypts encrypted
// objects (nil: an encrypted object is an ErrEncrypted error).
func NewReader(r io.Reader, ci Cipher) (*Reader, error) {
	hdr, err := parseHeader(r)
	if err != nil {
		return nil, err
	}
	codec := Codec(hdr[4])
	if !codec.valid() {
		return nil, fmt.Errorf("%w: unknown codec %d", ErrCorrupt, hdr[4])
	}
	tail := newTailReader(r, hdr)
	var body io.Reader = tail
	if hdr[5]&FlagEncrypted != 0 {
		if ci == nil {
			return nil, ErrEncrypted
		}
		dr, err := ci.Decrypt(tail)
		if err != nil {
			if errors.Is(err, ErrEncrypted) {
				return nil, err
			}
			if tail.err != nil && !errors.Is(tail.err, io.EOF) {
				return nil, tail.err
			}
			return nil, fmt.Errorf("%w: cannot decrypt: %v", ErrCorrupt, err)
		}
		body = dr
	}
	dec, err := getDecompressor(codec, body)
	if err != nil {
		return nil, err
	}
	return &Reader{codec: codec, version: hdr[3], tail: tail, dec: dec, h: NewHasher()}, nil
}

// parseHeader reads and checks the header: magic, a version this package
// reads, known flags.
func parseHeader(r io.Reader) ([headerSize]byte, error) {
	var hdr [headerSize]byte
	if err := readHeader(r, hdr[:]); err != nil {
		return hdr, err
	}
	if !bytes.Equal(hdr[:3], magicPrefix[:]) {
		return hdr, fmt.Errorf("%w: not a pgkeep object (bad magic)", ErrCorrupt)
	}
	if hdr[3] != 1 && hdr[3] != 2 {
		return hdr, fmt.Errorf("object format version %d is not supported by this pgkeep (it reads 1 and 2); upgrade pgkeep", hdr[3])
	}
	if hdr[5]&^FlagEncrypted != 0 {
		return hdr, fmt.Errorf("object has flags %#x that this pgkeep does not support; upgrade pgkeep", hdr[5])
	}
	return hdr, nil
}

// Codec returns the codec named in the header.
func (d *Reader) Codec() Codec { return d.codec }

// Sum returns the verified checksum; valid only after Read returned io.EOF.
func (d *Reader) Sum() Sum { return d.sum }

// Read returns decompressed content.
func (d *Reader) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	n, err := d.dec.Read(p)
	d.h.Write(p[:n])
	if err == io.EOF {
		if verr := d.finish(); verr != nil {
			d.err = verr
			return n, verr
		}
		d.err = io.EOF
		return n, io.EOF
	}
	if err != nil {
		if d.tail.err != nil && !errors.Is(d.tail.err, io.EOF) {
			// Transport failure underneath: report it as such.
			d.err = d.tail.err
		} else {
			d.err = fmt.Errorf("%w: decompressing %s: %v", ErrCorrupt, d.codec, err)
		}
		d.release()
		return n, d.err
	}
	return n, nil
}

func (d *Reader) finish() error {
	defer d.release()
	// The decoder stopped; anything left before the trailer is garbage.
	var scratch [512]byte
	for {
		n, err := d.tail.Read(scratch[:])
		if n > 0 {
			return fmt.Errorf("%w: data after the compressed stream", ErrCorrupt)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	t, err := d.tail.finish()
	if err != nil {
		return err
	}
	got := d.h.Sum()
	if got != t.content {
		return fmt.Errorf("%w: content is %d bytes with checksum %s, trailer says %d bytes with %s",
			ErrCorrupt, got.Size, got, t.content.Size, t.content)
	}
	d.sum = got
	return nil
}

func (d *Reader) release() {
	if d.dec != nil {
		putDecompressor(d.codec, d.dec)
		d.dec = nil
	}
}

// Decode reads a whole envelope from r and returns its verified content.
func Decode(r io.Reader, ci Cipher) ([]byte, Sum, error) {
	d, err := NewReader(r, ci)
	if err != nil {
		return nil, Sum{}, err
	}
	var out bytes.Buffer
	if _, err := io.Copy(&out, d); err != nil {
		return nil, Sum{}, err
	}
	return out.Bytes(), d.Sum(), nil
}

// tailReader passes its input through except for the trailer (the last
// hold bytes), which it holds back, and hashes what it passes (the stored
// bytes, with the header).
type tailReader struct {
	r       io.Reader
	version byte
	hold    int
	buf     []byte // buf[off:] is read but not yet returned; its last hold bytes are held
	off     int
	err     error   // sticky error from r
	stored  *Hasher // header and every byte returned so far
}

func newTailReader(r io.Reader, hdr [headerSize]byte) *tailReader {
	t := &tailReader{r: r, version: hdr[3], hold: trailerSize(hdr[3]), buf: make([]byte, 0, 64<<10), stored: NewHasher()}
	t.stored.Write(hdr[:])
	return t
}

func (t *tailReader) Read(p []byte) (int, error) {
	for len(t.buf)-t.off <= t.hold && t.err == nil {
		// Move the held bytes to the front and refill.
		n := copy(t.buf[:cap(t.buf)], t.buf[t.off:])
		t.buf, t.off = t.buf[:n], 0
		m, err := t.r.Read(t.buf[n:cap(t.buf)])
		t.buf = t.buf[:n+m]
		if err != nil {
			t.err = err
		}
	}
	avail := len(t.buf) - t.off - t.hold
	if avail <= 0 {
		return 0, t.err
	}
	n := copy(p, t.buf[t.off:t.off+avail])
	t.stored.Write(p[:n])
	t.off += n
	return n, nil
}

// trailerInfo is what a trailer records.
type trailerInfo struct {
	content Sum
	stored  Sum  // version 2 only
	checked bool // the stored bytes were checked against stored
}

// finish parses the held-back trailer once the input is exhausted, and
// checks the stored bytes against it (version 2).
func (t *tailReader) finish() (trailerInfo, error) {
	if t.err != io.EOF {
		if t.err == nil {
			return trailerInfo{}, fmt.Errorf("%w: object continues past its end", ErrCorrupt)
		}
		return trailerInfo{}, t.err
	}
	tr := t.buf[t.off:]
	magic := trailerMagicV2[:]
	if t.version == 1 {
		magic = trailerMagicV1[:]
	}
	if len(tr) != t.hold || !bytes.Equal(tr[t.hold-8:], magic) {
		return trailerInfo{}, fmt.Errorf("%w: missing trailer (truncated?)", ErrCorrupt)
	}
	le := binary.LittleEndian
	info := trailerInfo{content: Sum{Size: int64(le.Uint64(tr[0:8])), XXH64: le.Uint64(tr[8:16])}}
	if t.version == 1 {
		return info, nil
	}
	info.stored = Sum{Size: int64(le.Uint64(tr[16:24])), XXH64: le.Uint64(tr[24:32])}
	if got := storedSum(t.stored, tr[:16]); got != info.stored {
		return trailerInfo{}, fmt.Errorf("%w: stored bytes are %d with checksum %s, trailer says %d with %s",
			ErrCorrupt, got.Size, got, info.stored.Size, info.stored)
	}
	info.checked = true
	return info, nil
}

// Stored describes an envelope as it lies in the repository, checked
// without decoding it (CheckStored).
type Stored struct {
	Version   int  // envelope format version
	Encrypted bool // the body is encrypted
	Content   Sum  // the content's size and checksum, as the trailer records them
	// Verified is true when the stored bytes matched the stored checksum
	// (version 2). A version 1 envelope has none: only its framing (magic,
	// trailer) was checked.
	Verified bool
	// Size is the length of the whole envelope, trailer included.
	Size int64
}

// CheckStored reads a whole envelope without decoding its body: it checks
// the framing and, for version 2, that the stored bytes match their
// checksum, and returns what the trailer records about the content. It
// needs no key: a writer that cannot decrypt can still prove that what it
// stored is intact. Damage is an error wrapping ErrCorrupt; a transport
// failure is returned as it is.
func CheckStored(r io.Reader) (Stored, error) {
	hdr, err := parseHeader(r)
	if err != nil {
		return Stored{}, err
	}
	tail := newTailReader(r, hdr)
	buf := make([]byte, 64<<10)
	size := int64(headerSize + tail.hold)
	for {
		n, err := tail.Read(buf)
		size += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return Stored{}, err
		}
	}
	info, err := tail.finish()
	if err != nil {
		return Stored{}, err
	}
	return Stored{Version: int(hdr[3]), Encrypted: hdr[5]&FlagEncrypted != 0, Content: info.content, Verified: info.checked,
		Size: size}, nil
}

// readHeader fills hdr. Only a clean end of the stream (io.EOF from r) is
// corruption (the object is shorter than its header); any other error is
// the transport's, returned as it is so that it can be retried.
func readHeader(r io.Reader, hdr []byte) error {
	n := 0
	for n < len(hdr) {
		m, err := r.Read(hdr[n:])
		n += m
		if n == len(hdr) {
			return nil
		}
		if err == io.EOF {
			return fmt.Errorf("%w: shorter than its header", ErrCorrupt)
		}
		if err != nil {
			return fmt.Errorf("reading object header: %w", err)
		}
	}
	return nil
}
