// Package envelope defines the byte format of every object pgkeep stores:
// a fixed header naming the codec, the compressed content, and a trailer
// carrying the content's size and checksum. Readers verify the trailer when
// they reach the end, so no caller can consume unverified content by
// accident: Reader.Read returns the checksum error instead of io.EOF.
//
// Layout (all integers little-endian):
//
//	header  (8 bytes):  "PGK" 0x01 | codec (1) | flags (1) | reserved (2, zero)
//	body:               content compressed with codec
//	trailer (24 bytes): content size (8) | xxh64 of content (8) | "PGKEND01"
//
// The 0x01 in the magic is the envelope format version; readers refuse any
// other. Flag bit 0 (FlagEncrypted) means the body is an age stream (see
// package crypt) whose plaintext is the compressed content; the trailer is
// the same (size and xxh64 of the content), so writers can compare content
// without the key. Other flags must be zero.
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
	headerSize  = 8
	trailerSize = 24
	// Overhead is the number of bytes an envelope adds around the body.
	Overhead = headerSize + trailerSize
)

var (
	headerMagic  = [4]byte{'P', 'G', 'K', 0x01}
	trailerMagic = [8]byte{'P', 'G', 'K', 'E', 'N', 'D', '0', '1'}
)

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

// SumOf returns the checksum of p.
func SumOf(p []byte) Sum { return Sum{Size: int64(len(p)), XXH64: xxhash.Sum64(p)} }

// Writer encodes content into an envelope written to an underlying writer.
// Close MUST be called to write the trailer; until then the output is not a
// valid envelope.
type Writer struct {
	w     io.Writer
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
	copy(hdr[:4], headerMagic[:])
	hdr[4] = byte(c.Codec)
	if ci != nil {
		hdr[5] = FlagEncrypted
	}
	if _, err := w.Write(hdr[:]); err != nil {
		return nil, fmt.Errorf("writing object header: %w", err)
	}
	ew := &Writer{w: w, comp: c, h: NewHasher()}
	body := w
	if ci != nil {
		cw, err := ci.Encrypt(w)
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
	var tr [trailerSize]byte
	binary.LittleEndian.PutUint64(tr[0:8], uint64(sum.Size))
	binary.LittleEndian.PutUint64(tr[8:16], sum.XXH64)
	copy(tr[16:], trailerMagic[:])
	if _, err := e.w.Write(tr[:]); err != nil {
		e.err = fmt.Errorf("writing object trailer: %w", err)
		return Sum{}, e.err
	}
	e.err = errors.New("envelope writer closed")
	return sum, nil
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
	codec Codec
	tail  *tailReader
	dec   decompressor
	h     *Hasher
	sum   Sum
	done  bool
	err   error
}

// NewReader reads and checks the header from r; ci decrypts encrypted
// objects (nil: an encrypted object is an ErrEncrypted error).
func NewReader(r io.Reader, ci Cipher) (*Reader, error) {
	var hdr [headerSize]byte
	if err := readHeader(r, hdr[:]); err != nil {
		return nil, err
	}
	if !bytes.Equal(hdr[:3], headerMagic[:3]) {
		return nil, fmt.Errorf("%w: not a pgkeep object (bad magic)", ErrCorrupt)
	}
	if hdr[3] != headerMagic[3] {
		return nil, fmt.Errorf("object format version %d is not supported by this pgkeep (knows %d); upgrade pgkeep", hdr[3], headerMagic[3])
	}
	codec := Codec(hdr[4])
	if !codec.valid() {
		return nil, fmt.Errorf("%w: unknown codec %d", ErrCorrupt, hdr[4])
	}
	if hdr[5]&^FlagEncrypted != 0 {
		return nil, fmt.Errorf("object has flags %#x that this pgkeep does not support; upgrade pgkeep", hdr[5])
	}
	tail := &tailReader{r: r, buf: make([]byte, 0, 64<<10)}
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
	return &Reader{codec: codec, tail: tail, dec: dec, h: NewHasher()}, nil
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
	tr := d.tail.trailer()
	if len(tr) != trailerSize || !bytes.Equal(tr[16:], trailerMagic[:]) {
		return fmt.Errorf("%w: missing trailer (truncated?)", ErrCorrupt)
	}
	want := Sum{Size: int64(binary.LittleEndian.Uint64(tr[0:8])), XXH64: binary.LittleEndian.Uint64(tr[8:16])}
	got := d.h.Sum()
	if got != want {
		return fmt.Errorf("%w: content is %d bytes with checksum %s, trailer says %d bytes with %s",
			ErrCorrupt, got.Size, got, want.Size, want)
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

// tailReader passes its input through except for the last trailerSize
// bytes, which it holds back.
type tailReader struct {
	r   io.Reader
	buf []byte // buf[off:] is read but not yet returned; its last trailerSize bytes are held
	off int
	err error // sticky error from r
}

func (t *tailReader) Read(p []byte) (int, error) {
	for len(t.buf)-t.off <= trailerSize && t.err == nil {
		// Move the held bytes to the front and refill.
		n := copy(t.buf[:cap(t.buf)], t.buf[t.off:])
		t.buf, t.off = t.buf[:n], 0
		m, err := t.r.Read(t.buf[n:cap(t.buf)])
		t.buf = t.buf[:n+m]
		if err != nil {
			t.err = err
		}
	}
	avail := len(t.buf) - t.off - trailerSize
	if avail <= 0 {
		return 0, t.err
	}
	n := copy(p, t.buf[t.off:t.off+avail])
	t.off += n
	return n, nil
}

// trailer returns the held-back bytes once the input is exhausted.
func (t *tailReader) trailer() []byte {
	if t.err != io.EOF {
		return nil
	}
	return t.buf[t.off:]
}

// ReadTrailer reads a whole envelope without decoding its body and returns
// the content size and checksum its trailer records. It checks the framing
// (header magic, trailer magic) but not the body: use a Reader for that.
func ReadTrailer(r io.Reader) (Sum, error) {
	var hdr [headerSize]byte
	if err := readHeader(r, hdr[:]); err != nil {
		return Sum{}, err
	}
	if !bytes.Equal(hdr[:4], headerMagic[:]) {
		return Sum{}, fmt.Errorf("%w: not a pgkeep object (bad magic)", ErrCorrupt)
	}
	tail := &tailReader{r: r, buf: make([]byte, 0, 64<<10)}
	if _, err := io.Copy(io.Discard, tail); err != nil {
		return Sum{}, err
	}
	tr := tail.trailer()
	if len(tr) != trailerSize || !bytes.Equal(tr[16:], trailerMagic[:]) {
		return Sum{}, fmt.Errorf("%w: missing trailer (truncated?)", ErrCorrupt)
	}
	return Sum{Size: int64(binary.LittleEndian.Uint64(tr[0:8])), XXH64: binary.LittleEndian.Uint64(tr[8:16])}, nil
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
