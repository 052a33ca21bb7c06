package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"hash/crc32"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/pgkeep/pgkeep/internal/pgtest"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/storage/storagetest"
)

// checksumProxy is an HTTPS proxy in front of a real MinIO (over TLS, so
// uploads are signed UNSIGNED-PAYLOAD and only the upload checksum guards
// the body). It records the checksum headers of each PUT, and can damage
// a PUT's body, drop the CRC32C echo from answers (a store that ignores
// the header) or replace their ETag.
type checksumProxy struct {
	srv *httptest.Server

	mu        sync.Mutex
	puts      []http.Header // request headers of each PUT
	damage    bool          // flip a byte of the next PUT's body
	dropEcho  bool          // answer without x-amz-checksum-crc32c
	fakeETag  string        // answer with this ETag ("" : MinIO's)
	refuseCRC bool          // answer 400 to a PUT with a CRC32C, as a store that does not know the header
	sawDamage bool
}

func newChecksumProxy(t *testing.T, mc *pgtest.MinIO) (*checksumProxy, Config) {
	t.Helper()
	target, err := url.Parse(mc.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	p := &checksumProxy{}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // loopback, test only
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method != http.MethodPut {
			return nil
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.dropEcho {
			resp.Header.Del("X-Amz-Checksum-Crc32c")
			resp.Header.Del("X-Amz-Checksum-Type")
		}
		if p.fakeETag != "" && resp.StatusCode == http.StatusOK {
			resp.Header.Set("ETag", `"`+p.fakeETag+`"`)
		}
		return nil
	}
	p.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			p.mu.Lock()
			p.puts = append(p.puts, r.Header.Clone())
			if p.refuseCRC && r.Header.Get("X-Amz-Checksum-Crc32c") != "" {
				p.mu.Unlock()
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusBadRequest)
				io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidArgument</Code><Message>x-amz-checksum-crc32c is not supported</Message></Error>`)
				return
			}
			if p.damage && r.ContentLength > 100 {
				p.damage, p.sawDamage = false, true
				r.Body = &flipReader{r: r.Body, at: 50}
			}
			p.mu.Unlock()
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	ca := filepath.Join(t.TempDir(), "proxy.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", mc.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", mc.SecretKey)
	return p, Config{Bucket: mc.Bucket, Region: mc.Region, Endpoint: p.srv.URL, PathStyle: true, CABundle: ca}
}

// lastPut returns the headers of the last PUT the proxy saw.
func (p *checksumProxy) lastPut(t *testing.T) http.Header {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.puts) == 0 {
		t.Fatal("the proxy saw no PUT")
	}
	return p.puts[len(p.puts)-1]
}

func (p *checksumProxy) set(f func(p *checksumProxy)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

// flipReader inverts the byte at offset at.
type flipReader struct {
	r   io.ReadCloser
	off int64
	at  int64
}

func (f *flipReader) Read(b []byte) (int, error) {
	n, err := f.r.Read(b)
	if f.at >= f.off && f.at < f.off+int64(n) {
		b[f.at-f.off] ^= 0xff
	}
	f.off += int64(n)
	return n, err
}

func (f *flipReader) Close() error { return f.r.Close() }

// TestUploadChecksum: a single-request upload carries a CRC32C, not a
// Content-MD5, and the store refuses a body damaged on the way; a store
// that does not echo the CRC32C gets Content-MD5 from then on, and an
// upload whose ETag is not the MD5 of what was sent is not taken as
// stored.
func TestUploadChecksum(t *testing.T) {
	mc := pgtest.StartMinIOTLS(t)
	ctx := context.Background()
	p, cfg := newChecksumProxy(t, mc)
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 300<<10)
	rand.Read(body)

	if err := s.Put(ctx, "crc/a", bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	h := p.lastPut(t)
	if h.Get("X-Amz-Checksum-Crc32c") != crc32cBase64(body) || h.Get("Content-Md5") != "" {
		t.Fatalf("PUT headers: x-amz-checksum-crc32c %q (want %q), Content-MD5 %q (want none)",
			h.Get("X-Amz-Checksum-Crc32c"), crc32cBase64(body), h.Get("Content-Md5"))
	}
	if got := storagetest.Get(t, s, "crc/a"); !bytes.Equal(got, body) {
		t.Fatal("read back differs")
	}

	// Damaged in transit: refused, retryable, nothing stored.
	p.set(func(p *checksumProxy) { p.damage = true })
	err = s.Put(ctx, "crc/damaged", bytes.NewReader(body), int64(len(body)))
	p.mu.Lock()
	damaged := p.sawDamage
	p.mu.Unlock()
	if !damaged {
		t.Fatal("the proxy damaged nothing")
	}
	if err == nil || storage.IsPermanent(err) {
		t.Fatalf("a body damaged in transit: want a transient error, got %v", err)
	}
	if _, err := s.Stat(ctx, "crc/damaged"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("after a refused damaged body: Stat = %v, want not found", err)
	}
	// The retry stores it.
	if err := s.Put(ctx, "crc/damaged", bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}

	// A store that does not echo the CRC32C: this upload stands (its
	// ETag is the body's MD5), the next ones carry Content-MD5.
	p.set(func(p *checksumProxy) { p.dropEcho = true })
	if err := s.Put(ctx, "crc/noecho1", bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "crc/noecho2", bytes.NewReader(body[:1000]), 1000); err != nil {
		t.Fatal(err)
	}
	h = p.lastPut(t)
	if h.Get("Content-Md5") != md5Base64(body[:1000]) || h.Get("X-Amz-Checksum-Crc32c") != "" {
		t.Fatalf("after an answer without the echo: Content-MD5 %q (want %q), x-amz-checksum-crc32c %q (want none)",
			h.Get("Content-Md5"), md5Base64(body[:1000]), h.Get("X-Amz-Checksum-Crc32c"))
	}

	// No echo and an ETag that is not the MD5 of what was sent: a
	// transient error, never success (the retry finds the object and
	// compares its content: repo.PutEncodedAt).
	s2, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.set(func(p *checksumProxy) { p.fakeETag = "0123456789abcdef0123456789abcdef" })
	err = s2.Put(ctx, "crc/badetag", bytes.NewReader(body), int64(len(body)))
	if err == nil || storage.IsPermanent(err) {
		t.Fatalf("an ETag that is not the body's MD5: want a transient error, got %v", err)
	}
	if !s2.md5Only.Load() {
		t.Fatal("the store did not switch to Content-MD5")
	}

	// A store that refuses the CRC32C header: the same upload goes again
	// with a Content-MD5, and so do the next ones.
	s3b, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.set(func(p *checksumProxy) { p.fakeETag, p.dropEcho, p.refuseCRC = "", false, true })
	if err := s3b.Put(ctx, "crc/refused", bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatalf("a store refusing the CRC32C header: %v", err)
	}
	if h := p.lastPut(t); h.Get("Content-Md5") != md5Base64(body) {
		t.Fatalf("after a refused CRC32C: Content-MD5 %q, want %q", h.Get("Content-Md5"), md5Base64(body))
	}
	if got := storagetest.Get(t, s3b, "crc/refused"); !bytes.Equal(got, body) {
		t.Fatal("read back differs")
	}
	p.mu.Lock()
	before := len(p.puts)
	p.mu.Unlock()
	if err := s3b.Put(ctx, "crc/refused2", bytes.NewReader(body[:1000]), 1000); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	after := len(p.puts)
	p.mu.Unlock()
	if after != before+1 {
		t.Fatalf("after the switch an upload took %d PUTs, want 1", after-before)
	}
}

// md5Base64 is the Content-MD5 header value of b.
func md5Base64(b []byte) string {
	sum := md5.Sum(b)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// crc32cBase64 is the x-amz-checksum-crc32c header value of b.
func crc32cBase64(b []byte) string {
	var sum [4]byte
	binary.BigEndian.PutUint32(sum[:], crc32.Checksum(b, castagnoli))
	return base64.StdEncoding.EncodeToString(sum[:])
}
