package s3

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/pgtest"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/storage/storagetest"
)

func newStore(t *testing.T, mc *pgtest.MinIO, bucket, prefix string) *Store {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", mc.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", mc.SecretKey)
	s, err := New(context.Background(), Config{Bucket: bucket, Prefix: prefix, Region: mc.Region, Endpoint: mc.Endpoint, PathStyle: true, PartSize: 5 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	mc := pgtest.StartMinIO(t)
	n := 0
	storagetest.Run(t, func(t *testing.T) storage.Storage {
		n++
		// Alternate between a bucket root and a prefix.
		if n%2 == 0 {
			return newStore(t, mc, mc.NewBucket(t), "")
		}
		return newStore(t, mc, mc.NewBucket(t), "some/prefix")
	}, storagetest.Options{LargeSize: 12 << 20})
}

func TestErrors(t *testing.T) {
	mc := pgtest.StartMinIO(t)
	ctx := context.Background()
	put := func(s *Store) error { return s.Put(ctx, "k", bytes.NewReader([]byte("v")), 1) }

	t.Run("wrong credentials", func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", "wrong")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "wrongwrongwrong")
		s, _ := New(ctx, Config{Bucket: mc.Bucket, Region: mc.Region, Endpoint: mc.Endpoint, PathStyle: true})
		err := put(s)
		if err == nil || !storage.IsPermanent(err) || !strings.Contains(err.Error(), "credentials") {
			t.Fatalf("want a permanent error about credentials, got %v", err)
		}
		if strings.Contains(err.Error(), "wrongwrongwrong") {
			t.Fatal("error leaks the secret key")
		}
	})
	t.Run("missing bucket", func(t *testing.T) {
		s := newStore(t, mc, "no-such-bucket-pgkeep", "")
		err := put(s)
		if err == nil || !storage.IsPermanent(err) || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("want a permanent 'does not exist', got %v", err)
		}
		if _, err := s.Stat(ctx, "k"); errors.Is(err, storage.ErrNotFound) {
			t.Fatal("a missing bucket must not read as 'object not found'")
		}
	})
	t.Run("unreachable endpoint is transient", func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", "x")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "y")
		s, _ := New(ctx, Config{Bucket: "b", Region: "us-east-1", Endpoint: "http://127.0.0.1:1", PathStyle: true})
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		err := s.Get(cctx, "k", nil)
		if err == nil || storage.IsPermanent(err) || errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("want a transient error, got %v", err)
		}
	})
	t.Run("location has no secrets", func(t *testing.T) {
		s := newStore(t, mc, mc.Bucket, "p")
		if loc := s.Location(); strings.Contains(loc, mc.SecretKey) || !strings.HasPrefix(loc, "s3://"+mc.Bucket+"/p") {
			t.Fatalf("Location() = %q", loc)
		}
	})
}

// TestSelfSignedTLS: a store with a self-signed certificate works with
// the CA bundle setting and is refused without it.
func TestSelfSignedTLS(t *testing.T) {
	mc := pgtest.StartMinIOTLS(t)
	ctx := context.Background()
	t.Setenv("AWS_ACCESS_KEY_ID", mc.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", mc.SecretKey)
	cfg := Config{Bucket: mc.Bucket, Region: mc.Region, Endpoint: mc.Endpoint, PathStyle: true, CABundle: mc.CAFile}
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "tls/k", bytes.NewReader([]byte("v")), 1); err != nil {
		t.Fatalf("with the CA bundle: %v", err)
	}
	cfg.CABundle = ""
	s, _ = New(ctx, cfg)
	err = s.Put(ctx, "tls/k2", bytes.NewReader([]byte("v")), 1)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without the CA bundle the certificate must be refused, got %v", err)
	}
}

func TestUntrustedCertificateIsPermanent(t *testing.T) {
	mc := pgtest.StartMinIOTLS(t)
	t.Setenv("AWS_ACCESS_KEY_ID", mc.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", mc.SecretKey)
	s, _ := New(context.Background(), Config{Bucket: mc.Bucket, Region: mc.Region, Endpoint: mc.Endpoint, PathStyle: true})
	err := s.Put(context.Background(), "k", bytes.NewReader([]byte("v")), 1)
	if !storage.IsPermanent(err) || !strings.Contains(err.Error(), "s3-ca-bundle") {
		t.Fatalf("want a permanent error suggesting s3-ca-bundle, got %v", err)
	}
}
