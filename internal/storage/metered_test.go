package storage_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/storage/local"
)

type countMeter struct {
	mu     sync.Mutex
	bytes  int64
	failed []string
}

func (m *countMeter) Uploaded(key string, n int64) { m.mu.Lock(); m.bytes += n; m.mu.Unlock() }
func (m *countMeter) UploadFailed(key string, err error) {
	m.mu.Lock()
	m.failed = append(m.failed, storage.ErrorKind(err))
	m.mu.Unlock()
}

// TestMetered: stored bytes are counted, an existing object is not a
// failure, a canceled Put is one of kind "canceled".
func TestMetered(t *testing.T) {
	be, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := &countMeter{}
	s := storage.NewMetered(be, m)
	ctx := context.Background()
	if err := s.Put(ctx, "a/b", bytes.NewReader(make([]byte, 1000)), 1000); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, "a/b", bytes.NewReader(make([]byte, 10)), 10); !errors.Is(err, storage.ErrExists) {
		t.Fatalf("second put: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	s.Put(cctx, "a/c", bytes.NewReader(make([]byte, 10)), 10)
	if m.bytes != 1000 {
		t.Fatalf("counted %d bytes uploaded, want 1000", m.bytes)
	}
	if err := s.Put(ctx, "a/d", bytes.NewReader(make([]byte, 5)), 10); err == nil {
		t.Fatal("a short body was stored")
	}
	if len(m.failed) < 1 || m.failed[len(m.failed)-1] == "" {
		t.Fatalf("failures %v", m.failed)
	}
	for _, k := range m.failed[:len(m.failed)-1] {
		if k != "canceled" {
			t.Fatalf("failures %v: want the canceled put counted as canceled", m.failed)
		}
	}
	if got := storage.ErrorKind(storage.Permanent(errors.New("x"))); got != "permanent" {
		t.Fatalf("ErrorKind(permanent) = %s", got)
	}
	if got := storage.ErrorKind(errors.New("reset")); got != "transient" {
		t.Fatalf("ErrorKind(other) = %s", got)
	}
}
