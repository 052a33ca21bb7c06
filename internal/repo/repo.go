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
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pgkeep/pgkeep/internal/config"
	"github.com/pgkeep/pgkeep/internal/crypt"
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

// Encryption describes an encrypted repository (see package crypt).
type Encryption struct {
	Scheme string `json:"scheme"` // "age-x25519"
	// RepoRecipient is the repository key's public half: every object is
	// encrypted to it.
	RepoRecipient string `json:"repository_recipient"`
	// KeyObject holds the repository key's secret half, encrypted to the
	// operator's recipients.
	KeyObject string `json:"key_object"`
	// RecipientFingerprints name the operator's recipients.
	RecipientFingerprints []string `json:"recipient_fingerprints"`
}

// Identity is the repository's identity record (pgkeep.json). It is written
// once, on first use, and never changed. It is the one object stored in the
// clear in an encrypted repository: writers without the secret key read it.
type Identity struct {
	Format           int         `json:"format"`
	SystemIdentifier uint64      `json:"-"`
	SystemIDString   string      `json:"system_identifier"` // decimal; JSON numbers lose uint64 precision
	PGMajor          int         `json:"pg_major"`
	WalSegSize       uint64      `json:"wal_segment_size"`
	CreatedAt        time.Time   `json:"created_at"`
	CreatedBy        string      `json:"created_by"`
	Encryption       *Encryption `json:"encryption,omitempty"`
}

// Repo is an open repository.
type Repo struct {
	st   storage.Storage
	comp envelope.Compression

	recipients *crypt.Recipients // writers' keys, or nil
	identities *crypt.Identities // readers' keys, or nil

	mu         sync.Mutex
	configured bool
	cipher     *crypt.Cipher // nil: not encrypted
}

// ErrKeys means the encryption keys given do not fit the repository.
var ErrKeys = errors.New("encryption keys do not fit the repository")

// SetKeys gives the repository the operator's encryption keys: recipients
// (for creating an encrypted repository and checking writers) and
// identities (for reading). Either may be nil.
func (r *Repo) SetKeys(recipients *crypt.Recipients, identities *crypt.Identities) {
	r.recipients, r.identities = recipients, identities
}

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

// ensureConfigured reads the identity record once, so that encryption is
// set up before any other object is read or written.
func (r *Repo) ensureConfigured(ctx context.Context) error {
	r.mu.Lock()
	done := r.configured
	r.mu.Unlock()
	if done {
		return nil
	}
	_, err := r.Identity(ctx)
	if errors.Is(err, ErrNoRepository) {
		return nil // nothing to configure yet; EnsureIdentity creates it
	}
	return err
}

// configure sets up encryption from the identity record.
func (r *Repo) configure(ctx context.Context, id *Identity) error {
	r.mu.Lock()
	if r.configured {
		r.mu.Unlock()
		return nil
	}
	r.mu.Unlock()
	enc := id.Encryption
	if enc == nil {
		if r.recipients != nil {
			return fmt.Errorf("%w: %s is not encrypted, but age recipients were given; keep encrypted backups in a new repository", ErrKeys, r.st.Location())
		}
		r.mu.Lock()
		r.configured = true
		r.mu.Unlock()
		return nil
	}
	if r.recipients != nil && strings.Join(r.recipients.Fingerprints(), ",") != strings.Join(enc.RecipientFingerprints, ",") {
		return fmt.Errorf("%w: the repository was set up for recipients %s, but the recipients file names %s; refusing to write",
			ErrKeys, strings.Join(enc.RecipientFingerprints, ", "), strings.Join(r.recipients.Fingerprints(), ", "))
	}
	var key *crypt.RepoKey
	missing := fmt.Errorf("the repository is encrypted for %s", strings.Join(enc.RecipientFingerprints, ", "))
	if r.identities != nil {
		wrapped, _, err := r.getPlain(ctx, enc.KeyObject)
		if err != nil {
			return fmt.Errorf("reading the repository key %s: %w", enc.KeyObject, err)
		}
		key, err = crypt.Unwrap(wrapped, r.identities, enc.RecipientFingerprints)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrKeys, err)
		}
	}
	c, err := crypt.NewCipher(enc.RepoRecipient, key, missing)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.cipher, r.configured = c, true
	r.mu.Unlock()
	return nil
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
	data, _, err := r.getPlain(ctx, IdentityKey)
	if errors.Is(err, storage.ErrNotFound) {
		// A repair interrupted between removing the old record and
		// writing the new one left the new one beside it.
		data, _, err = r.getPlain(ctx, RepairKey)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("%w: %s has no %s", ErrNoRepository, r.st.Location(), IdentityKey)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("reading repository identity: %w", err)
	}
	id, err := parseIdentity(data)
	if err != nil {
		return nil, err
	}
	if err := r.configure(ctx, id); err != nil {
		return nil, err
	}
	return id, nil
}

// getPlain reads an object that is never encrypted.
func (r *Repo) getPlain(ctx context.Context, key string) ([]byte, envelope.Sum, error) {
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
func (r *Repo) PutPlainObject(ctx context.Context, key string, content []byte) (PutResult, error) {
	if err := r.ensureConfigured(ctx); err != nil {
		return PutResult{}, err
	}
	return r.putPlain(ctx, key, content)
}

// putPlain stores an object that is never encrypted.
func (r *Repo) putPlain(ctx context.Context, key string, content []byte) (PutResult, error) {
	var buf bytes.Buffer
	sum, err := envelope.Encode(&buf, content, r.comp, nil)
	if err != nil {
		return PutResult{}, err
	}
	return r.putEncoded(ctx, key, buf.Bytes(), sum)
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
		// The record is written once and every later push is checked
		// against it: it must only ever hold facts.
		if err := want.complete(); err != nil {
			return nil, fmt.Errorf("%w: cannot create the repository's identity record at %s: %v", ErrUnknownCluster, r.st.Location(), err)
		}
		if r.recipients != nil {
			key, err := crypt.NewRepoKey()
			if err != nil {
				return nil, err
			}
			wrapped, err := key.Wrap(r.recipients)
			if err != nil {
				return nil, err
			}
			enc := &Encryption{Scheme: "age-x25519", RepoRecipient: key.Recipient(),
				KeyObject:             "keys/" + strings.TrimPrefix(crypt.Fingerprint(key.Recipient()), "x25519:") + ".age",
				RecipientFingerprints: r.recipients.Fingerprints()}
			if _, err := r.putPlain(ctx, enc.KeyObject, wrapped); err != nil {
				return nil, fmt.Errorf("storing the repository key: %w", err)
			}
			want.Encryption = enc
		}
		want.Format = FormatVersion
		want.SystemIDString = strconv.FormatUint(want.SystemIdentifier, 10)
		if want.CreatedBy == "" {
			host, _ := os.Hostname()
			want.CreatedBy = "pgkeep on " + host
		}
		if want.CreatedAt.IsZero() {
			want.CreatedAt = time.Now().UTC()
		}
		data, err := json.MarshalIndent(&want, "", "  ")
		if err != nil {
			return nil, err
		}
		_, err = r.putPlain(ctx, IdentityKey, data)
		if err == nil {
			if err := r.configure(ctx, &want); err != nil {
				return nil, err
			}
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

// ErrUnknownCluster means a push or backup could not establish the facts
// the identity record must hold (system identifier, major version, WAL
// segment size), so the repository is not created from it.
var ErrUnknownCluster = errors.New("the cluster's identity is not known")

// complete reports which facts of a new identity record are unknown.
func (id *Identity) complete() error {
	var missing []string
	if id.SystemIdentifier == 0 {
		missing = append(missing, "system identifier")
	}
	if id.PGMajor == 0 {
		missing = append(missing, "PostgreSQL major version")
	}
	if id.WalSegSize == 0 {
		missing = append(missing, "WAL segment size")
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("the %s of the cluster is unknown; point pgkeep at the data directory (PGDATA or --pgdata) so it can read pg_control", strings.Join(missing, " and "))
}

// Incomplete reports what the record lacks: an older pgkeep could write the
// record from a segment pushed without PGDATA, with pg_major 0.
// 'pgkeep identity --repair' completes it.
func (id *Identity) Incomplete() error {
	if id.PGMajor == 0 || id.WalSegSize == 0 {
		return fmt.Errorf("the repository's identity record is incomplete (pg_major %d, wal_segment_size %d: written from a segment whose cluster was not known); run 'pgkeep identity --repair' on the database host to complete it",
			id.PGMajor, id.WalSegSize)
	}
	return nil
}

// RepairKey holds a completed identity record while RepairIdentity replaces
// an incomplete one; readers use it when pgkeep.json is missing.
const RepairKey = "pgkeep.json.repair"

// RepairIdentity completes an identity record that lacks facts (see
// Incomplete) with facts read from the cluster itself (pg_control). The
// record's system identifier must match; everything else it holds (its
// creation, the encryption setup) is kept. This is the one place pgkeep
// replaces an object: the completed record is first stored under
// RepairKey, then pgkeep.json is removed and written anew, then RepairKey
// is removed, so that an interruption at any point leaves a complete
// record readable (Identity falls back to RepairKey) and never lets a
// writer create a new repository, with a new key, over the old one.
func (r *Repo) RepairIdentity(ctx context.Context, facts Identity) (*Identity, error) {
	have, err := r.Identity(ctx)
	if err != nil {
		return nil, err
	}
	if have.Incomplete() == nil {
		if _, err := r.st.Stat(ctx, IdentityKey); errors.Is(err, storage.ErrNotFound) {
			// An interrupted repair: finish it below.
		} else if err != nil {
			return nil, err
		} else {
			r.st.Delete(ctx, RepairKey)
			return have, have.Matches(facts)
		}
	}
	if err := facts.complete(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnknownCluster, err)
	}
	if have.SystemIdentifier != facts.SystemIdentifier {
		return nil, fmt.Errorf("%w: the repository holds cluster %d but this is cluster %d; nothing was changed",
			ErrForeignCluster, have.SystemIdentifier, facts.SystemIdentifier)
	}
	if have.WalSegSize != 0 && have.WalSegSize != facts.WalSegSize {
		return nil, fmt.Errorf("%w: the repository holds WAL segments of %d bytes but this cluster uses %d; nothing was changed",
			ErrForeignCluster, have.WalSegSize, facts.WalSegSize)
	}
	fixed := *have
	fixed.PGMajor, fixed.WalSegSize = facts.PGMajor, facts.WalSegSize
	fixed.Format = FormatVersion
	data, err := json.MarshalIndent(&fixed, "", "  ")
	if err != nil {
		return nil, err
	}
	if _, err := r.putPlain(ctx, RepairKey, data); err != nil && !errors.Is(err, ErrConflict) {
		return nil, fmt.Errorf("storing the repaired identity record: %w", err)
	} else if err != nil {
		// A repair record from an earlier try: it must say the same.
		old, _, gerr := r.getPlain(ctx, RepairKey)
		if gerr != nil {
			return nil, gerr
		}
		prev, perr := parseIdentity(old)
		if perr != nil || prev.SystemIdentifier != fixed.SystemIdentifier || prev.PGMajor != fixed.PGMajor || prev.WalSegSize != fixed.WalSegSize {
			return nil, fmt.Errorf("%s from an earlier repair disagrees with this cluster; inspect it and remove it by hand", RepairKey)
		}
		data = old
	}
	if err := r.st.Delete(ctx, IdentityKey); err != nil {
		return nil, fmt.Errorf("removing the incomplete identity record: %w", err)
	}
	if _, err := r.putPlain(ctx, IdentityKey, data); err != nil {
		return nil, fmt.Errorf("writing the repaired identity record (the repository stays readable through %s): %w", RepairKey, err)
	}
	if err := r.st.Delete(ctx, RepairKey); err != nil {
		return nil, fmt.Errorf("removing %s after the repair: %w", RepairKey, err)
	}
	return &fixed, nil
}

// Matches reports whether other describes the same cluster.
func (id *Identity) Matches(other Identity) error {
	if err := id.Incomplete(); err != nil && id.SystemIdentifier == other.SystemIdentifier {
		return fmt.Errorf("%w: %v", ErrForeignCluster, err)
	}
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
func (r *Repo) PutEncoded(ctx context.Context, key string, encoded []byte, sum envelope.Sum) (PutResult, error) {
	return r.putEncoded(ctx, key, encoded, sum)
}

func (r *Repo) putEncoded(ctx context.Context, key string, encoded []byte, sum envelope.Sum) (PutResult, error) {
	res := PutResult{Sum: sum, Stored: int64(len(encoded))}
	err := r.st.Put(ctx, key, bytes.NewReader(encoded), int64(len(encoded)))
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
	if err := r.ensureConfigured(ctx); err != nil {
		return err
	}
	return r.readObject(ctx, key, r.envCipher(), fn, done)
}

func (r *Repo) readObject(ctx context.Context, key string, ci envelope.Cipher, fn func(io.Reader) error, done func(envelope.Sum)) error {
	err := r.st.Get(ctx, key, func(rd io.Reader) error {
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

// WALKey returns the key of an archived WAL file (segment, .partial,
// .backup or .history) given its valid PostgreSQL name. All files of a
// timeline share the prefix wal/<timeline>/, so retention and listing can
// work timeline by timeline.
func WALKey(name string) string {
	return WALPrefix + name[:8] + "/" + name
}

// WALPrefix is the prefix of every archived WAL file.
const WALPrefix = "wal/"

// StoredSum returns the content size and checksum of the object under key,
// verified against what is stored. When this process can decrypt the
// object (always, in a plaintext repository) the whole content is read and
// checked. Otherwise the stored bytes are checked against their own
// checksum (envelope version 2), which proves them intact without the key;
// a version 1 object has no such checksum and its trailer is taken as it
// is. Damage is an error wrapping envelope.ErrCorrupt.
func (r *Repo) StoredSum(ctx context.Context, key string) (envelope.Sum, error) {
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
func (r *Repo) CheckStored(ctx context.Context, key string) (envelope.Stored, error) {
	var st envelope.Stored
	err := r.st.Get(ctx, key, func(rd io.Reader) error {
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
