// Package repo is the pgkeep repository: the object layout (keys.go: the
// only code that builds or parses object keys), the identity record and the
// encryption it sets up (identity.go), and reading and writing objects as
// verified, write-once envelopes on top of a storage.Storage.
// docs/design.md specifies the format.
//
// The storage stack a Repo sits on is composed by its caller (cmd/pgkeep):
// repo never reads the configuration.
package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/pgkeep/pgkeep/internal/crypt"
	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/storage"
)

var (
	// ErrNoRepository means the location holds no pgkeep repository yet.
	ErrNoRepository = errors.New("no pgkeep repository here")
	// ErrForeignCluster means the data comes from another cluster than the
	// repository's.
	ErrForeignCluster = errors.New("repository belongs to another cluster")
	// ErrConflict means an object exists under the key with other content.
	ErrConflict = errors.New("an object with different content already exists")
)

// Repo is an open repository.
type Repo struct {
	st            storage.Storage
	comp, walComp envelope.Compression

	recipients *crypt.Recipients // writers' keys, or nil
	identities *crypt.Identities // readers' keys, or nil

	mu         sync.Mutex
	configured bool
	cipher     *crypt.Cipher // nil: not encrypted
}

// Options configures New.
type Options struct {
	// Compression is the codec of new objects, WALCompression that of
	// WAL objects (archived segments, streamed pieces).
	Compression, WALCompression envelope.Compression
	// Recipients are the operator's encryption recipients: they create an
	// encrypted repository and must match an existing one's. nil: none.
	Recipients *crypt.Recipients
	// Identities open an encrypted repository's key, for reading. nil:
	// this process can write but not read encrypted objects.
	Identities *crypt.Identities
}

// New returns the repository on st. It does not check that a repository
// exists there; Identity does.
func New(st storage.Storage, opts Options) *Repo {
	return &Repo{st: st, comp: opts.Compression, walComp: opts.WALCompression, recipients: opts.Recipients, identities: opts.Identities}
}

// Location describes the repository for messages.
func (r *Repo) Location() string { return r.st.Location() }

// Compression returns the compression for new objects.
func (r *Repo) Compression() envelope.Compression { return r.comp }

// WALCompression returns the compression for new WAL objects.
func (r *Repo) WALCompression() envelope.Compression { return r.walComp }

// Encrypted reports whether objects are encrypted (after the identity was
// read) and whether this process can decrypt them.
func (r *Repo) Encrypted() (encrypted, canRead bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cipher != nil, r.cipher == nil || r.identities != nil
}

// envCipher returns the cipher as an envelope.Cipher, nil when plaintext.
func (r *Repo) envCipher() envelope.Cipher {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cipher == nil {
		return nil
	}
	return r.cipher
}

// Cipher returns the cipher for new objects (nil for a plaintext
// repository). Call it after Identity or EnsureIdentity.
func (r *Repo) Cipher() envelope.Cipher { return r.envCipher() }

// getPlain reads an object that is never encrypted.
func (r *Repo) getPlain(ctx context.Context, key Key) ([]byte, envelope.Sum, error) {
	var out []byte
	var sum envelope.Sum
	err := r.readObject(ctx, key, nil, func(rd io.Reader) error {
		data, err := io.ReadAll(rd)
		out = data
		return err
	}, func(s envelope.Sum) { sum = s })
	return out, sum, err
}

// PutPlainObject stores content under key, once, as PutObject does, but
// never encrypted, also in an encrypted repository: for the metadata that
// writers and readers without the key must read (docs/design.md §10).
func (r *Repo) PutPlainObject(ctx context.Context, key Key, content []byte) (PutResult, error) {
	if err := r.ensureConfigured(ctx); err != nil {
		return PutResult{}, err
	}
	return r.putPlain(ctx, key, content)
}

// putPlain stores an object that is never encrypted.
func (r *Repo) putPlain(ctx context.Context, key Key, content []byte) (PutResult, error) {
	var buf bytes.Buffer
	sum, err := envelope.Encode(&buf, content, r.comp, nil)
	if err != nil {
		return PutResult{}, err
	}
	return r.putEncoded(ctx, key, buf.Bytes(), sum)
}

// PutResult describes a write.
type PutResult struct {
	Sum     envelope.Sum // of the content
	Stored  int64        // bytes stored, envelope included
	Existed bool         // an identical object was already there
}

// PutObject stores content under key, once. If an object already exists
// there with identical content (a retry after an ambiguous failure, or a
// re-push), it succeeds with Existed set; if its content differs, or it is
// unreadable, it returns an error wrapping ErrConflict and changes nothing.
func (r *Repo) PutObject(ctx context.Context, key Key, content []byte) (PutResult, error) {
	if err := r.ensureConfigured(ctx); err != nil {
		return PutResult{}, err
	}
	var buf bytes.Buffer
	buf.Grow(len(content)/2 + envelope.Overhead)
	sum, err := envelope.Encode(&buf, content, r.comp, r.envCipher())
	if err != nil {
		return PutResult{}, fmt.Errorf("encoding %s: %w", key, err)
	}
	return r.PutEncoded(ctx, key, buf.Bytes(), sum)
}

// PutEncoded stores an already encoded envelope whose content has checksum
// sum, with PutObject's write-once semantics. Encode it with Cipher().
func (r *Repo) PutEncoded(ctx context.Context, key Key, encoded []byte, sum envelope.Sum) (PutResult, error) {
	return r.putEncoded(ctx, key, encoded, sum)
}

func (r *Repo) putEncoded(ctx context.Context, key Key, encoded []byte, sum envelope.Sum) (PutResult, error) {
	return r.PutEncodedAt(ctx, key, bytes.NewReader(encoded), int64(len(encoded)), sum)
}

// PutEncodedAt is PutEncoded for an envelope of size bytes read through
// encoded (which a retry reads again from the start).
func (r *Repo) PutEncodedAt(ctx context.Context, key Key, encoded io.ReaderAt, size int64, sum envelope.Sum) (PutResult, error) {
	res := PutResult{Sum: sum, Stored: size}
	err := r.st.Put(ctx, key.s, io.NewSectionReader(encoded, 0, size), size)
	if err == nil {
		return res, nil
	}
	if !errors.Is(err, storage.ErrExists) {
		return PutResult{}, fmt.Errorf("storing %s: %w", key, err)
	}
	existing, err := r.StoredSum(ctx, key)
	if err != nil {
		if errors.Is(err, envelope.ErrCorrupt) {
			return PutResult{}, fmt.Errorf("%w: %s exists but is unreadable (%v); it is left as it is", ErrConflict, key, err)
		}
		return PutResult{}, fmt.Errorf("comparing with existing %s: %w", key, err)
	}
	if existing != sum {
		return PutResult{}, fmt.Errorf("%w: %s is already archived with %d bytes (checksum %s), the new file has %d bytes (checksum %s); nothing was overwritten",
			ErrConflict, key, existing.Size, existing, sum.Size, sum)
	}
	res.Existed = true
	return res, nil
}

// GetObject reads and verifies the object under key.
func (r *Repo) GetObject(ctx context.Context, key Key) ([]byte, envelope.Sum, error) {
	var out []byte
	var sum envelope.Sum
	err := r.ReadObject(ctx, key, func(rd io.Reader) error {
		data, err := io.ReadAll(rd)
		if err != nil {
			return err
		}
		out = data
		return nil
	}, func(s envelope.Sum) { sum = s })
	return out, sum, err
}

// ReadObject calls fn with the verified content of the object under key.
// fn MUST read to io.EOF: the checksum is verified at the end of the
// content, and a mismatch is returned by the reader's final Read. Like
// storage.Get, fn may be called again after a transient failure and must
// start from scratch. done, if not nil, receives the verified checksum.
func (r *Repo) ReadObject(ctx context.Context, key Key, fn func(io.Reader) error, done func(envelope.Sum)) error {
	if err := r.ensureConfigured(ctx); err != nil {
		return err
	}
	return r.readObject(ctx, key, r.envCipher(), fn, done)
}

func (r *Repo) readObject(ctx context.Context, key Key, ci envelope.Cipher, fn func(io.Reader) error, done func(envelope.Sum)) error {
	err := r.st.Get(ctx, key.s, func(rd io.Reader) error {
		d, err := envelope.NewReader(rd, ci)
		if err != nil {
			if errors.Is(err, envelope.ErrEncrypted) {
				return storage.Permanent(err)
			}
			return classifyRead(err)
		}
		tr := &trackingReader{r: d}
		if err := fn(tr); err != nil {
			if tr.err != nil && errors.Is(err, tr.err) {
				return classifyRead(err)
			}
			// fn's own failure (a full disk, say): retrying cannot help.
			return storage.Permanent(err)
		}
		// Make sure the content was verified even if fn stopped early.
		if _, err := io.Copy(io.Discard, d); err != nil {
			return classifyRead(err)
		}
		if done != nil {
			done(d.Sum())
		}
		return nil
	})
	if errors.Is(err, envelope.ErrCorrupt) {
		return fmt.Errorf("object %s in %s: %w", key, r.st.Location(), err)
	}
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("reading %s: %w", key, err)
	}
	return err
}

// classifyRead marks corruption as permanent; transport errors stay
// retryable.
func classifyRead(err error) error {
	if errors.Is(err, envelope.ErrCorrupt) {
		return storage.Permanent(err)
	}
	return err
}

// trackingReader remembers the last error its reader returned, so that
// ReadObject can tell the reader's failures from fn's own.
type trackingReader struct {
	r   io.Reader
	err error
}

func (t *trackingReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

// StoredSum returns the content size and checksum of the object under key,
// verified against what is stored. When this process can decrypt the
// object (always, in a plaintext repository) the whole content is read and
// checked. Otherwise the stored bytes are checked against their own
// checksum (envelope version 2), which proves them intact without the key;
// a version 1 object has no such checksum and its trailer is taken as it
// is. Damage is an error wrapping envelope.ErrCorrupt.
func (r *Repo) StoredSum(ctx context.Context, key Key) (envelope.Sum, error) {
	if enc, canRead := r.Encrypted(); !enc || canRead {
		var sum envelope.Sum
		err := r.ReadObject(ctx, key, func(rd io.Reader) error {
			_, err := io.Copy(io.Discard, rd)
			return err
		}, func(s envelope.Sum) { sum = s })
		return sum, err
	}
	st, err := r.CheckStored(ctx, key)
	return st.Content, err
}

// CheckStored checks the stored bytes of the object under key without
// decoding it and without a key (see envelope.CheckStored).
func (r *Repo) CheckStored(ctx context.Context, key Key) (envelope.Stored, error) {
	var st envelope.Stored
	err := r.st.Get(ctx, key.s, func(rd io.Reader) error {
		s, err := envelope.CheckStored(rd)
		st = s
		return classifyRead(err)
	})
	if errors.Is(err, envelope.ErrCorrupt) {
		return st, fmt.Errorf("object %s in %s: %w", key, r.st.Location(), err)
	}
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return st, fmt.Errorf("reading %s: %w", key, err)
	}
	return st, err
}
