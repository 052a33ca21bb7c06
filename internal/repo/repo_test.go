package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pgkeep/pgkeep/internal/crypt"
	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/storage/local"
)

func newLocal(t *testing.T) (*Repo, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "repo")
	st, err := local.New(root)
	if err != nil {
		t.Fatal(err)
	}
	return New(st, Options{Compression: envelope.Compression{Codec: envelope.Zstd}}), root
}

var facts = Identity{SystemIdentifier: 7441071349612345678, PGMajor: 15, WalSegSize: 16 << 20}

// TestIdentityOnlyFromFacts: a repository is never created from unknown
// values, and a record that lacks facts is refused with the repair named.
func TestIdentityOnlyFromFacts(t *testing.T) {
	ctx := context.Background()
	r, root := newLocal(t)
	unknown := facts
	unknown.PGMajor = 0
	if _, err := r.EnsureIdentity(ctx, unknown); !errors.Is(err, ErrUnknownCluster) || !strings.Contains(err.Error(), "PGDATA") {
		t.Fatalf("identity from an unknown major: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, identityKey.s)); err == nil {
		t.Fatal("an identity record was written from unknown values")
	}

	// A record an older pgkeep wrote with pg_major 0.
	poisoned := facts
	poisoned.PGMajor = 0
	poisoned.Format = FormatVersion
	writeRecord(t, r, identityKey, poisoned)
	_, err := r.EnsureIdentity(ctx, facts)
	if !errors.Is(err, ErrForeignCluster) || !strings.Contains(err.Error(), "identity --repair") {
		t.Fatalf("push against a poisoned record: %v", err)
	}

	// The repair checks the cluster and completes the record.
	other := facts
	other.SystemIdentifier++
	if _, err := r.RepairIdentity(ctx, other); !errors.Is(err, ErrForeignCluster) {
		t.Fatalf("repair from another cluster: %v", err)
	}
	id, err := r.RepairIdentity(ctx, facts)
	if err != nil || id.PGMajor != 15 {
		t.Fatalf("repair: %+v %v", id, err)
	}
	if _, err := os.Stat(filepath.Join(root, repairKey.s)); err == nil {
		t.Fatal("repair record left behind")
	}
	r2, _ := reopen(t, root)
	if _, err := r2.EnsureIdentity(ctx, facts); err != nil {
		t.Fatalf("push after the repair: %v", err)
	}
	if _, err := r2.RepairIdentity(ctx, facts); err != nil {
		t.Fatalf("a second repair of a complete record: %v", err)
	}
}

// TestRepairInterrupted: a repair killed after removing the old record
// leaves the repaired one readable, and writers never create a new
// repository over it.
func TestRepairInterrupted(t *testing.T) {
	ctx := context.Background()
	r, root := newLocal(t)
	fixed := facts
	fixed.Format = FormatVersion
	writeRecord(t, r, repairKey, fixed)
	r2, _ := reopen(t, root)
	id, err := r2.Identity(ctx)
	if err != nil || id.PGMajor != 15 {
		t.Fatalf("reading through the repair record: %+v %v", id, err)
	}
	other := facts
	other.SystemIdentifier++
	if _, err := r2.EnsureIdentity(ctx, other); !errors.Is(err, ErrForeignCluster) {
		t.Fatalf("a writer of another cluster during an interrupted repair: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, identityKey.s)); err == nil {
		t.Fatal("a writer created a new identity record over an interrupted repair")
	}
	if _, err := r2.RepairIdentity(ctx, facts); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, identityKey.s)); err != nil {
		t.Fatal("the repair was not finished")
	}
}

func writeRecord(t *testing.T, r *Repo, key Key, id Identity) {
	t.Helper()
	id.SystemIDString = strconv.FormatUint(id.SystemIdentifier, 10)
	data, err := json.Marshal(&id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.putPlain(context.Background(), key, data); err != nil {
		t.Fatal(err)
	}
}

func reopen(t *testing.T, root string) (*Repo, storage.Storage) {
	st, err := local.New(root)
	if err != nil {
		t.Fatal(err)
	}
	return New(st, Options{Compression: envelope.Compression{Codec: envelope.Zstd}}), st
}

// TestWriterVerifiesCiphertext: in an encrypted repository a writer with
// only the recipients checks the stored bytes of what it stored (the
// backup's wait for its WAL, identical re-pushes), so damage to the
// ciphertext is caught without the key.
func TestWriterVerifiesCiphertext(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	_, pub, _ := crypt.GenerateKeyPair()
	os.WriteFile(filepath.Join(dir, "pub"), []byte(pub+"\n"), 0o600)
	rec, err := crypt.LoadRecipients(filepath.Join(dir, "pub"))
	if err != nil {
		t.Fatal(err)
	}
	_, root := newLocal(t)
	st, _ := local.New(root)
	r := New(st, Options{Compression: envelope.Compression{Codec: envelope.Zstd}, Recipients: rec})
	if _, err := r.EnsureIdentity(ctx, facts); err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte("pgkeep WAL "), 100000)
	key := WAL("000000010000000000000001")
	if _, err := r.PutObject(ctx, key, content); err != nil {
		t.Fatal(err)
	}
	if sum, err := r.StoredSum(ctx, key); err != nil || sum != sumOf(content) {
		t.Fatalf("stored sum of an intact object: %v %v", sum, err)
	}
	path := filepath.Join(root, filepath.FromSlash(key.String()))
	data, _ := os.ReadFile(path)
	data[len(data)/2] ^= 1
	os.Chmod(path, 0o600)
	os.WriteFile(path, data, 0o600)
	if _, err := r.StoredSum(ctx, key); !errors.Is(err, envelope.ErrCorrupt) {
		t.Fatalf("damaged ciphertext passed a recipients-only check: %v", err)
	}
	// An identical re-push finds the damage instead of trusting the trailer.
	if _, err := r.PutObject(ctx, key, content); !errors.Is(err, ErrConflict) {
		t.Fatalf("re-push over a damaged object: %v", err)
	}
}

// sumOf is the content sum of p.
func sumOf(p []byte) envelope.Sum {
	h := envelope.NewHasher()
	h.Write(p)
	return h.Sum()
}
