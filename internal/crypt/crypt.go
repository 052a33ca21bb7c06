// Package crypt is pgkeep's client-side encryption, built on age
// (filippo.io/age).
//
// An encrypted repository has its own X25519 key pair, the repository key.
// Every object is encrypted to the repository key's public half, which the
// identity record holds in the clear, so encrypting is one fast X25519
// operation per object. The repository key's secret half is stored once,
// encrypted to the operator's recipients (X25519 public keys, or a
// passphrase), in keys/FINGERPRINT.age. Readers unwrap it with their
// identity file, once per process, and decrypt objects with it.
package crypt

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"filippo.io/age"

	"github.com/pgkeep/pgkeep/internal/envelope"
)

// passphrasePrefix marks a passphrase line in a recipients or identity file.
const passphrasePrefix = "passphrase:"

// PassphraseFingerprint stands for a passphrase recipient. Nothing derived
// from the passphrase is ever recorded, so nothing helps guess it.
const PassphraseFingerprint = "passphrase"

// scryptWorkFactor is the log2 scrypt cost for passphrase-wrapped keys:
// paid once per process that reads the repository.
const scryptWorkFactor = 16

// Fingerprint names an X25519 recipient without revealing anything: the
// first 16 hex digits of the SHA-256 of its age1... string.
func Fingerprint(recipient string) string {
	sum := sha256.Sum256([]byte(recipient))
	return "x25519:" + hex.EncodeToString(sum[:8])
}

// Recipients are who can open a repository's key: what writers configure.
type Recipients struct {
	list []age.Recipient
	fps  []string
}

// LoadRecipients reads a recipients file: one age1... public key per line,
// or a single line "passphrase:SECRET". '#' starts a comment.
func LoadRecipients(path string) (*Recipients, error) {
	lines, err := readLines(path)
	if err != nil {
		return nil, fmt.Errorf("reading recipients file: %w", err)
	}
	r := &Recipients{}
	for i, l := range lines {
		if pass, ok := strings.CutPrefix(l, passphrasePrefix); ok {
			if len(lines) != 1 || pass == "" {
				return nil, fmt.Errorf("recipients file %s line %d: a passphrase must be the only recipient and not empty", path, i+1)
			}
			sr, err := age.NewScryptRecipient(pass)
			if err != nil {
				return nil, err
			}
			sr.SetWorkFactor(scryptWorkFactor)
			r.list = append(r.list, sr)
			r.fps = append(r.fps, PassphraseFingerprint)
			continue
		}
		x, err := age.ParseX25519Recipient(l)
		if err != nil {
			return nil, fmt.Errorf("recipients file %s line %d: not an age public key (age1...) or passphrase:... line", path, i+1)
		}
		r.list = append(r.list, x)
		r.fps = append(r.fps, Fingerprint(x.String()))
	}
	if len(r.list) == 0 {
		return nil, fmt.Errorf("recipients file %s names no recipient", path)
	}
	sort.Strings(r.fps)
	return r, nil
}

// Fingerprints lists the recipients' fingerprints, sorted.
func (r *Recipients) Fingerprints() []string { return append([]string(nil), r.fps...) }

// Identities are what readers configure to open a repository's key.
type Identities struct {
	list []age.Identity
	fps  []string
}

// LoadIdentities reads an identity file: AGE-SECRET-KEY-1... lines (as
// written by pgkeep key generate or age-keygen), or "passphrase:SECRET".
func LoadIdentities(path string) (*Identities, error) {
	lines, err := readLines(path)
	if err != nil {
		return nil, fmt.Errorf("reading identity file: %w", err)
	}
	ids := &Identities{}
	for i, l := range lines {
		if pass, ok := strings.CutPrefix(l, passphrasePrefix); ok {
			si, err := age.NewScryptIdentity(pass)
			if err != nil {
				return nil, err
			}
			ids.list = append(ids.list, si)
			ids.fps = append(ids.fps, PassphraseFingerprint)
			continue
		}
		x, err := age.ParseX25519Identity(l)
		if err != nil {
			return nil, fmt.Errorf("identity file %s line %d: not an age secret key (AGE-SECRET-KEY-1...) or passphrase:... line", path, i+1)
		}
		ids.list = append(ids.list, x)
		ids.fps = append(ids.fps, Fingerprint(x.Recipient().String()))
	}
	if len(ids.list) == 0 {
		return nil, fmt.Errorf("identity file %s holds no key", path)
	}
	return ids, nil
}

func readLines(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

// RepoKey is a repository's own key pair.
type RepoKey struct{ id *age.X25519Identity }

// NewRepoKey generates a repository key.
func NewRepoKey() (*RepoKey, error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, err
	}
	return &RepoKey{id: id}, nil
}

// Recipient is the public half, recorded in the identity record.
func (k *RepoKey) Recipient() string { return k.id.Recipient().String() }

// Wrap encrypts the secret half to the operator's recipients.
func (k *RepoKey) Wrap(r *Recipients) ([]byte, error) {
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r.list...)
	if err != nil {
		return nil, fmt.Errorf("encrypting the repository key: %w", err)
	}
	io.WriteString(w, k.id.String())
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ErrWrongKey means the identity file opens none of the repository's
// recipients.
var ErrWrongKey = errors.New("wrong key")

// Unwrap opens a wrapped repository key with the reader's identities.
// expected lists the fingerprints the repository was set up with, for the
// error message.
func Unwrap(wrapped []byte, ids *Identities, expected []string) (*RepoKey, error) {
	r, err := age.Decrypt(bytes.NewReader(wrapped), ids.list...)
	if err != nil {
		var nomatch *age.NoIdentityMatchError
		if errors.As(err, &nomatch) || errors.Is(err, age.ErrIncorrectIdentity) {
			return nil, fmt.Errorf("%w: the identity file holds %s, but the repository was encrypted for %s",
				ErrWrongKey, strings.Join(ids.fps, ", "), strings.Join(expected, ", "))
		}
		return nil, fmt.Errorf("opening the repository key: %w", err)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("opening the repository key: %w", err)
	}
	id, err := age.ParseX25519Identity(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("the repository key is damaged: %w", err)
	}
	return &RepoKey{id: id}, nil
}

// Cipher encrypts objects to a repository key and, when it has the secret
// half, decrypts them. It implements envelope.Cipher.
type Cipher struct {
	to   age.Recipient
	from age.Identity // nil: cannot decrypt
	// Missing explains why decryption is impossible, for the error.
	Missing error
}

// NewCipher returns a Cipher for the repository's public key; key may be
// nil for a writer that cannot read.
func NewCipher(recipient string, key *RepoKey, missing error) (*Cipher, error) {
	to, err := age.ParseX25519Recipient(recipient)
	if err != nil {
		return nil, fmt.Errorf("the repository's public key %q is damaged: %w", recipient, err)
	}
	c := &Cipher{to: to, Missing: missing}
	if key != nil {
		c.from = key.id
	}
	return c, nil
}

// Encrypt starts an age stream to the repository key.
func (c *Cipher) Encrypt(dst io.Writer) (io.WriteCloser, error) { return age.Encrypt(dst, c.to) }

// Decrypt opens an age stream.
func (c *Cipher) Decrypt(src io.Reader) (io.Reader, error) {
	if c.from == nil {
		return nil, fmt.Errorf("%w (%v)", envelope.ErrEncrypted, c.Missing)
	}
	return age.Decrypt(src, c.from)
}

// GenerateKeyPair makes a new X25519 identity for pgkeep key generate: the
// identity file text and the public key.
func GenerateKeyPair() (identity, recipient string, err error) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return "", "", err
	}
	return id.String(), id.Recipient().String(), nil
}
