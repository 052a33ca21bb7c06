package walarchive

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/pgkeep/pgkeep/internal/freelist"

	"github.com/pgkeep/pgkeep/internal/envelope"
)

// Streaming encoding of WAL files. A segment is read in chunks small enough
// to stay in the CPU cache, and each chunk is hashed and compressed while it
// is there: one pass over memory instead of three (read, hash, compress a
// 16 MiB buffer). On these machines that is 2 to 3 times less CPU per
// segment, which is what a WAL backlog drains at.

// chunkSize is the read size: it fits in the L2/L3 cache with room for the
// compressor's state.
const chunkSize = 1 << 20

// headSize is how much of the file's start is kept for identification (the
// long page header of a segment is 40 bytes).
const headSize = 64

var chunkPool = freelist.List[*[]byte]{New: func() *[]byte { b := make([]byte, chunkSize); return &b }}

// outChunk is the unit of the encoded envelope's buffer.
const outChunk = 1 << 20

// outPool's chunks outlive garbage collections (package freelist): a
// pusher uploading segment after segment reuses the same memory. Two
// workers' envelopes of barely compressible segments fit.
var outPool = freelist.List[*[]byte]{New: func() *[]byte { b := make([]byte, outChunk); return &b }, Max: 40}

// chunkedBuffer holds an encoded envelope in 1 MiB chunks from a pool:
// memory grows with what is written, is never copied to grow, and a
// compressed segment touches only the pages it needs (fresh pages are what
// a short-lived wal-push pays most for: presizing for the whole segment
// cost as much as compressing it). It is read back through ReadAt.
type chunkedBuffer struct {
	chunks []*[]byte
	n      int64
}

func (b *chunkedBuffer) Write(p []byte) (int, error) {
	written := len(p)
	for len(p) > 0 {
		off := int(b.n % outChunk)
		if off == 0 && int(b.n/outChunk) == len(b.chunks) {
			b.chunks = append(b.chunks, outPool.Get())
		}
		c := *b.chunks[b.n/outChunk]
		k := copy(c[off:], p)
		p = p[k:]
		b.n += int64(k)
	}
	return written, nil
}

// Len is the number of bytes written.
func (b *chunkedBuffer) Len() int64 { return b.n }

// ReadAt implements io.ReaderAt over what was written.
func (b *chunkedBuffer) ReadAt(p []byte, off int64) (int, error) {
	if off >= b.n {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && off < b.n {
		c := *b.chunks[off/outChunk]
		k := copy(p[n:], c[off%outChunk:min(int64(outChunk), b.n-off/outChunk*outChunk)])
		n += k
		off += int64(k)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// release returns the chunks to the pool.
func (b *chunkedBuffer) release() {
	for _, c := range b.chunks {
		outPool.Put(c)
	}
	b.chunks, b.n = nil, 0
}

// fileID identifies one version of a file without reading it: a write
// changes mtime and ctime, a rename changes ctime, recycling gives another
// name. A look-ahead record holds the fileID of what it uploaded.
type fileID struct {
	Dev, Ino     uint64
	Size         int64
	MTime, CTime int64 // nanoseconds
}

func idOf(fi os.FileInfo) (fileID, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, false
	}
	return fileID{
		Dev: uint64(st.Dev), Ino: uint64(st.Ino), Size: st.Size,
		MTime: st.Mtim.Sec*1e9 + st.Mtim.Nsec, CTime: st.Ctim.Sec*1e9 + st.Ctim.Nsec,
	}, true
}

// encodedFile is a WAL file encoded as one envelope, ready to store.
type encodedFile struct {
	buf  *chunkedBuffer // the envelope; release returns it to the pool
	sum  envelope.Sum   // of the content
	head []byte         // the first bytes of the content
	id   fileID         // the file as it was read (zero if unknown)
}

func (e *encodedFile) release() {
	if e.buf != nil {
		e.buf.release()
	}
	e.buf = nil
}

// errChanged means the file changed while it was read.
var errChanged = errors.New("the file changed while it was read")

// encodeOpen reads the open file f once from its start, in cache-sized
// chunks, hashing and compressing each chunk into an envelope. It fails
// with errChanged if the file's identity changed during the read.
// tee, if not nil, sees every byte read too (the WAL summarizer), on the
// same pass.
func encodeOpen(f *os.File, comp envelope.Compression, ci envelope.Cipher, tee io.Writer) (*encodedFile, error) {
	path := f.Name()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("reading WAL file: %w", err)
	}
	before, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading WAL file: %w", err)
	}
	out := &chunkedBuffer{}
	enc := &encodedFile{buf: out}
	ok := false
	defer func() {
		if !ok {
			enc.release()
		}
	}()
	w, err := envelope.NewWriter(out, comp, ci)
	if err != nil {
		return nil, err
	}
	bp := chunkPool.Get()
	defer chunkPool.Put(bp)
	chunk := *bp
	for {
		n, rerr := io.ReadFull(f, chunk)
		if n > 0 {
			if len(enc.head) < headSize {
				enc.head = append(enc.head, chunk[:min(n, headSize-len(enc.head))]...)
			}
			if _, err := w.Write(chunk[:n]); err != nil {
				return nil, err
			}
			if tee != nil {
				tee.Write(chunk[:n])
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("reading WAL file: %w", rerr)
		}
	}
	if enc.sum, err = w.Close(); err != nil {
		return nil, err
	}
	after, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading WAL file: %w", err)
	}
	idBefore, known := idOf(before)
	idAfter, _ := idOf(after)
	if idBefore != idAfter || enc.sum.Size != after.Size() {
		return nil, fmt.Errorf("%s: %w", path, errChanged)
	}
	if known {
		enc.id = idAfter
	}
	ok = true
	return enc, nil
}
