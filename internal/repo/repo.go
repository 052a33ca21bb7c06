// Package repo is the pgkeep repository: the object layout, the identity
// record, and reading and writing objects as verified envelopes on top of a
// storage.Storage. docs/design.md specifies the format; this package is the
// only code that knows object keys.
package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/pgkeep/pgkeep/internal/config"
	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/storage/local"
	"github.com/pgkeep/pgkeep/internal/storage/s3"
)

// FormatVersion is the repository format this pgkeep writes and the newest
// it reads.
const FormatVersion = 1

// IdentityKey is the key of the identity record, the first object written
// to a repository.
const IdentityKey = "pgkeep.json"

var (
	// ErrNoRepository means the location holds no pgkeep repository yet.
	ErrNoRepository = errors.New("no pgkeep repository here")
	// ErrForeignCluster means the data comes from another cluster than the
	// repository's.
	ErrForeignCluster = errors.New("repository belongs to another cluster")
	// ErrConflict means an object exists under the key with other content.
	ErrConflict = errors.New("an object with different content already exists")
)

// Identity is the repository's identity record (pgkeep.json). It is written
// once, on first use, and never changed.
type Identity struct {
	Format           int       `json:"format"`
	SystemIdentifier uint64    `json:"-"`
	SystemIDString   string    `json:"system_identifier"` // decimal; JSON numbers lose uint64 precision
	PGMajor          int       `json:"pg_major"`
	WalSegSize       uint64    `json:"wal_segment_size"`
	CreatedAt        time.Time `json:"created_at"`
	CreatedBy        string    `json:"created_by"`
}

// Repo is an open repository.
type Repo struct {
	st   storage.Storage
	comp envelope.Compression
}

// Options configures Open.
type Options struct {
	Retry storage.RetryPolicy
}

// OpenStorage builds the storage stack for a repository URL: the backend,
// wrapped in retries with backoff.
func OpenStorage(ctx context.Context, cfg *config.Config, policy storage.RetryPolicy) (storage.Storage, error) {
	var backend storage.Storage
	switch cfg.Repo.Scheme {
	case "file":
		st, err := local.New(cfg.Repo.Path)
		if err != nil {
			return nil, fmt.Errorf("opening repository %s: %w", cfg.Repo, err)
		}
		backend = st
	case "s3":
		st, err := s3.New(ctx, s3.Config{
			Bucket:    cfg.Repo.Bucket,
			Prefix:    cfg.Repo.Prefix,
			Region:    cfg.S3.Region,
			Endpoint:  cfg.S3.Endpoint,
			PathStyle: cfg.S3.PathStyle,
			CABundle:  cfg.S3.CABundle,
			Profile:   cfg.S3.Profile,
		})
		if err != nil {
			return nil, fmt.Errorf("opening repository %s: %w", cfg.Repo, err)
		}
		backend = st
	default:
		return nil, fmt.Errorf("unsupported repository scheme %q", cfg.Repo.Scheme)
	}
	return storage.NewRetrying(backend, policy), nil
}

// Open opens the repository described by cfg. It does not check that a
// repository exists there; Identity does.
func Open(ctx context.Context, cfg *config.Config, policy storage.RetryPolicy) (*Repo, error) {
	st, err := OpenStorage(ctx, cfg, policy)
	if err != nil {
		return nil, err
	}
	return New(st, cfg.Compression), nil
}

// New returns a Repo on st that compresses new objects with comp.
func New(st storage.Storage, comp envelope.Compression) *Repo {
	return &Repo{st: st, comp: comp}
}

// Storage returns the underlying store.
func (r *Repo) Storage() storage.Storage { return r.st }

// Location describes the repository for messages.
func (r *Repo) Location() string { return r.st.Location() }

// Compression returns the compression for new objects.
func (r *Repo) Compression() envelope.Compression { return r.comp }

// Identity reads the identity record. It returns an error wrapping
// ErrNoRepository if there is none, and refuses formats newer than
// FormatVersion.
func (r *Repo) Identity(ctx context.Context) (*Identity, error) {
	data, _, err := r.GetObject(ctx, IdentityKey)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s has no %s", ErrNoRepository, r.st.Location(), IdentityKey)
	}
	if err != nil {
		return nil, fmt.Errorf("reading repository identity: %w", err)
	}
	return parseIdentity(data)
}

func parseIdentity(data []byte) (*Identity, error) {
	var id Identity
	if err := json.Unmarshal(data, &id); err != nil {
		return nil, fmt.Errorf("%w: identity record is not valid JSON: %v", envelope.ErrCorrupt, err)
	}
	if id.Format > FormatVersion {
		return nil, fmt.Errorf("repository format %d is newer than this pgkeep understands (%d); upgrade pgkeep", id.Format, FormatVersion)
	}
	if id.Format < 1 {
		return nil, fmt.Errorf("%w: identity record has no format version", envelope.ErrCorrupt)
	}
	sid, err := strconv.ParseUint(id.SystemIDString, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: identity record has a bad system identifier %q", envelope.ErrCorrupt, id.SystemIDString)
	}
	id.SystemIdentifier = sid
	return &id, nil
}

// EnsureIdentity creates the identity record from want if the repository
// has none, and otherwise checks that the existing one describes the same
// cluster. A mismatch returns an error wrapping ErrForeignCluster that names
// both clusters.
func (r *Repo) EnsureIdentity(ctx context.Context, want Identity) (*Identity, error) {
	have, err := r.Identity(ctx)
	if errors.Is(err, ErrNoRepository) {
		want.Format = FormatVersion
		want.SystemIDString = strconv.FormatUint(want.SystemIdentifier, 10)
		if want.CreatedAt.IsZero() {
			want.CreatedAt = time.Now().UTC()
		}
		data, err := json.MarshalIndent(&want, "", "  ")
		if err != nil {
			return nil, err
		}
		_, err = r.PutObject(ctx, IdentityKey, data)
		if err == nil {
			return &want, nil
		}
		if !errors.Is(err, ErrConflict) {
			return nil, fmt.Errorf("creating repository identity: %w", err)
		}
		// Someone else created it first; compare with theirs.
		have, err = r.Identity(ctx)
	}
	if err != nil {
		return nil, err
	}
	return have, have.Matches(want)
}

// Matches reports whether other describes the same cluster.
func (id *Identity) Matches(other Identity) error {
	if id.SystemIdentifier != other.SystemIdentifier {
		return fmt.Errorf("%w: the repository holds cluster %d (PostgreSQL %d) but this is cluster %d; use a separate repository (or prefix) per cluster",
			ErrForeignCluster, id.SystemIdentifier, id.PGMajor, other.SystemIdentifier)
	}
	if other.PGMajor != 0 && id.PGMajor != other.PGMajor {
		return fmt.Errorf("%w: the repository holds PostgreSQL %d WAL but this cluster runs PostgreSQL %d; start a new repository after a major upgrade",
			ErrForeignCluster, id.PGMajor, other.PGMajor)
	}
	if other.WalSegSize != 0 && id.WalSegSize != other.WalSegSize {
		return fmt.Errorf("%w: the repository holds WAL segments of %d bytes but this cluster uses %d",
			ErrForeignCluster, id.WalSegSize, other.WalSegSize)
	}
	return nil
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
func (r *Repo) PutObject(ctx context.Context, key string, content []byte) (PutResult, error) {
	var buf bytes.Buffer
	buf.Grow(len(content)/2 + envelope.Overhead)
	sum, err := envelope.Encode(&buf, content, r.comp)
	if err != nil {
		return PutResult{}, fmt.Errorf("encoding %s: %w", key, err)
	}
	return r.PutEncoded(ctx, key, buf.Bytes(), sum)
}

// PutEncoded stores an already encoded envelope whose content has checksum
// sum, with PutObject's write-once semantics.
func (r *Repo) PutEncoded(ctx context.Context, key string, encoded []byte, sum envelope.Sum) (PutResult, error) {
	res := PutResult{Sum: sum, Stored: int64(len(encoded))}
	err := r.st.Put(ctx, key, bytes.NewReader(encoded), int64(len(encoded)))
	if err == nil {
		return res, nil
	}
	if !errors.Is(err, storage.ErrExists) {
		return PutResult{}, fmt.Errorf("storing %s: %w", key, err)
	}
	var existing envelope.Sum
	err = r.ReadObject(ctx, key, func(rd io.Reader) error {
		_, err := io.Copy(io.Discard, rd)
		return err
	}, func(s envelope.Sum) { existing = s })
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
func (r *Repo) GetObject(ctx context.Context, key string) ([]byte, envelope.Sum, error) {
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
func (r *Repo) ReadObject(ctx context.Context, key string, fn func(io.Reader) error, done func(envelope.Sum)) error {
	err := r.st.Get(ctx, key, func(rd io.Reader) error {
		d, err := envelope.NewReader(rd)
		if err != nil {
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

// WALKey returns the key of an archived WAL file (segment, .partial,
// .backup or .history) given its valid PostgreSQL name. All files of a
// timeline share the prefix wal/<timeline>/, so retention and listing can
// work timeline by timeline.
func WALKey(name string) string {
	return WALPrefix + name[:8] + "/" + name
}

// WALPrefix is the prefix of every archived WAL file.
const WALPrefix = "wal/"
