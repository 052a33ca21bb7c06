package crypt

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgkeep/pgkeep/internal/envelope"
)

func write(t *testing.T, name, content string) string {
	p := filepath.Join(t.TempDir(), name)
	os.WriteFile(p, []byte(content), 0o600)
	return p
}

func TestWrapUnwrapAndObjects(t *testing.T) {
	id, rec, err := GenerateKeyPair()
	if err != nil {
		t.Fatal(err)
	}
	r, err := LoadRecipients(write(t, "r", "# c\n"+rec+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	ids, err := LoadIdentities(write(t, "i", id+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Fingerprints()[0] != ids.fps[0] || !strings.HasPrefix(r.Fingerprints()[0], "x25519:") {
		t.Fatalf("fingerprints %v %v", r.Fingerprints(), ids.fps)
	}
	key, _ := NewRepoKey()
	wrapped, err := key.Wrap(r)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(wrapped, []byte(key.id.String())) {
		t.Fatal("the wrapped key holds the secret in the clear")
	}
	got, err := Unwrap(wrapped, ids, r.Fingerprints())
	if err != nil || got.Recipient() != key.Recipient() {
		t.Fatalf("unwrap: %v", err)
	}

	// Objects through the envelope.
	writer, _ := NewCipher(key.Recipient(), nil, errors.New("no identity"))
	reader, _ := NewCipher(key.Recipient(), got, nil)
	var buf bytes.Buffer
	content := bytes.Repeat([]byte("secret page "), 5000)
	if _, err := envelope.Encode(&buf, content, envelope.Compression{Codec: envelope.Zstd}, writer); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(buf.Bytes(), []byte("secret page")) {
		t.Fatal("plaintext in the encrypted object")
	}
	if _, _, err := envelope.Decode(bytes.NewReader(buf.Bytes()), nil); !errors.Is(err, envelope.ErrEncrypted) {
		t.Fatalf("decode without a cipher: %v", err)
	}
	if _, _, err := envelope.Decode(bytes.NewReader(buf.Bytes()), writer); !errors.Is(err, envelope.ErrEncrypted) {
		t.Fatalf("decode without the key: %v", err)
	}
	out, _, err := envelope.Decode(bytes.NewReader(buf.Bytes()), reader)
	if err != nil || !bytes.Equal(out, content) {
		t.Fatalf("decode: %v", err)
	}
	// Tampering is caught.
	bad := bytes.Clone(buf.Bytes())
	bad[len(bad)/2] ^= 1
	if _, _, err := envelope.Decode(bytes.NewReader(bad), reader); !errors.Is(err, envelope.ErrCorrupt) {
		t.Fatalf("tampered object: %v", err)
	}
	// The stored bytes are checked, and the trailer read, without the key.
	if st, err := envelope.CheckStored(bytes.NewReader(buf.Bytes())); err != nil || st.Content != sumOf(content) || !st.Verified || !st.Encrypted {
		t.Fatalf("trailer: %+v %v", st, err)
	}
	if _, err := envelope.CheckStored(bytes.NewReader(bad)); !errors.Is(err, envelope.ErrCorrupt) {
		t.Fatalf("damaged ciphertext passed the keyless check: %v", err)
	}

	// A wrong identity names both sides.
	otherID, _, _ := GenerateKeyPair()
	other, _ := LoadIdentities(write(t, "o", otherID))
	_, err = Unwrap(wrapped, other, r.Fingerprints())
	if !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), r.Fingerprints()[0]) || !strings.Contains(err.Error(), other.fps[0]) {
		t.Fatalf("wrong identity: %v", err)
	}
	if strings.Contains(err.Error(), otherID) {
		t.Fatal("the error leaks the secret key")
	}
}

func TestPassphrase(t *testing.T) {
	r, err := LoadRecipients(write(t, "p", "passphrase:open sesame\n"))
	if err != nil || r.Fingerprints()[0] != PassphraseFingerprint {
		t.Fatalf("%v %v", r, err)
	}
	key, _ := NewRepoKey()
	wrapped, _ := key.Wrap(r)
	ids, _ := LoadIdentities(write(t, "i", "passphrase:open sesame"))
	if _, err := Unwrap(wrapped, ids, r.Fingerprints()); err != nil {
		t.Fatal(err)
	}
	bad, _ := LoadIdentities(write(t, "b", "passphrase:wrong"))
	_, err = Unwrap(wrapped, bad, r.Fingerprints())
	if !errors.Is(err, ErrWrongKey) || strings.Contains(err.Error(), "open sesame") || strings.Contains(err.Error(), "wrong") && strings.Contains(err.Error(), "passphrase:wrong") {
		t.Fatalf("wrong passphrase: %v", err)
	}
}

func TestBadFiles(t *testing.T) {
	_, rec, _ := GenerateKeyPair()
	for name, content := range map[string]string{
		"empty":            "# nothing\n",
		"junk":             "hello\n",
		"mixed":            rec + "\npassphrase:x\n",
		"empty passphrase": "passphrase:\n",
	} {
		if _, err := LoadRecipients(write(t, "r", content)); err == nil {
			t.Errorf("recipients %s accepted", name)
		}
	}
	if _, err := LoadIdentities(write(t, "i", rec)); err == nil {
		t.Error("a public key accepted as an identity")
	}
	if _, err := LoadRecipients("/nonexistent"); err == nil {
		t.Error("missing file accepted")
	}
}

// sumOf is the content sum of p.
func sumOf(p []byte) envelope.Sum {
	h := envelope.NewHasher()
	h.Write(p)
	return h.Sum()
}
