package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pgkeep/pgkeep/internal/crypt"
	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/storage"
)

// FormatVersion is the repository format this pgkeep writes and the newest
// it reads.
const FormatVersion = 1

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
// once, on first use, and never changed (but for RepairIdentity). It is
// stored in the clear in an encrypted repository: writers without the
// secret key read it.
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

// Identity reads the identity record. It returns an error wrapping
// ErrNoRepository if there is none, and refuses formats newer than
// FormatVersion.
func (r *Repo) Identity(ctx context.Context) (*Identity, error) {
	data, _, err := r.getPlain(ctx, identityKey)
	if errors.Is(err, storage.ErrNotFound) {
		// A repair interrupted between removing the old record and
		// writing the new one left the new one beside it.
		data, _, err = r.getPlain(ctx, repairKey)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, fmt.Errorf("%w: %s has no %s", ErrNoRepository, r.st.Location(), identityKey)
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

// Adopt uses an identity record read earlier (a copy kept by the caller)
// instead of reading it from the repository, and sets up encryption from it
// as Identity does. The copy must be the record as Identity returned it,
// marshalled to JSON.
func (r *Repo) Adopt(ctx context.Context, record []byte) (*Identity, error) {
	id, err := parseIdentity(record)
	if err != nil {
		return nil, err
	}
	if err := r.configure(ctx, id); err != nil {
		return nil, err
	}
	return id, nil
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
				KeyObject:             repoKey(strings.TrimPrefix(crypt.Fingerprint(key.Recipient()), "x25519:")).s,
				RecipientFingerprints: r.recipients.Fingerprints()}
			if _, err := r.putPlain(ctx, Key{enc.KeyObject}, wrapped); err != nil {
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
		_, err = r.putPlain(ctx, identityKey, data)
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

// RepairIdentity completes an identity record that lacks facts (see
// Incomplete) with facts read from the cluster itself (pg_control). The
// record's system identifier must match; everything else it holds (its
// creation, the encryption setup) is kept. This is the one place pgkeep
// replaces an object: the completed record is first stored under
// repairKey, then pgkeep.json is removed and written anew, then repairKey
// is removed, so that an interruption at any point leaves a complete
// record readable (Identity falls back to repairKey) and never lets a
// writer create a new repository, with a new key, over the old one.
func (r *Repo) RepairIdentity(ctx context.Context, facts Identity) (*Identity, error) {
	have, err := r.Identity(ctx)
	if err != nil {
		return nil, err
	}
	if have.Incomplete() == nil {
		if _, err := r.st.Stat(ctx, identityKey.s); errors.Is(err, storage.ErrNotFound) {
			// An interrupted repair: finish it below.
		} else if err != nil {
			return nil, err
		} else {
			r.st.Delete(ctx, repairKey.s)
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
	if _, err := r.putPlain(ctx, repairKey, data); err != nil && !errors.Is(err, ErrConflict) {
		return nil, fmt.Errorf("storing the repaired identity record: %w", err)
	} else if err != nil {
		// A repair record from an earlier try: it must say the same.
		old, _, gerr := r.getPlain(ctx, repairKey)
		if gerr != nil {
			return nil, gerr
		}
		prev, perr := parseIdentity(old)
		if perr != nil || prev.SystemIdentifier != fixed.SystemIdentifier || prev.PGMajor != fixed.PGMajor || prev.WalSegSize != fixed.WalSegSize {
			return nil, fmt.Errorf("%s from an earlier repair disagrees with this cluster; inspect it and remove it by hand", repairKey)
		}
		data = old
	}
	if err := r.st.Delete(ctx, identityKey.s); err != nil {
		return nil, fmt.Errorf("removing the incomplete identity record: %w", err)
	}
	if _, err := r.putPlain(ctx, identityKey, data); err != nil {
		return nil, fmt.Errorf("writing the repaired identity record (the repository stays readable through %s): %w", repairKey, err)
	}
	if err := r.st.Delete(ctx, repairKey.s); err != nil {
		return nil, fmt.Errorf("removing %s after the repair: %w", repairKey, err)
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

// ErrKeys means the encryption keys given do not fit the repository.
var ErrKeys = errors.New("encryption keys do not fit the repository")

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
		if !strings.HasPrefix(enc.KeyObject, keysPrefix) || storage.ValidateKey(enc.KeyObject) != nil {
			return fmt.Errorf("%w: the identity record names the repository key %q, outside %s", envelope.ErrCorrupt, enc.KeyObject, keysPrefix)
		}
		wrapped, _, err := r.getPlain(ctx, Key{enc.KeyObject})
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
