package progress

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLines(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	l := NewLines(&lockedWriter{w: &buf, mu: &mu}, 10*time.Millisecond)
	l.Begin("backup x", 1<<20)
	for i := 0; i < 4; i++ {
		l.Advance(256 << 10)
		time.Sleep(15 * time.Millisecond)
	}
	l.Logf("WARNING: %s", "something")
	l.End()
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if !strings.Contains(out, "backup x: 1.0 MiB of 1.0 MiB (100%)") || !strings.Contains(out, " done") || !strings.Contains(out, "WARNING: something") {
		t.Fatalf("output:\n%s", out)
	}
	if strings.Count(out, "\n") < 3 {
		t.Fatalf("no periodic lines:\n%s", out)
	}
}

func TestBar(t *testing.T) {
	var buf bytes.Buffer
	b := NewBar(&buf)
	b.Begin("restore y", 4096)
	b.Advance(4096)
	b.Logf("a line")
	b.End()
	if !strings.Contains(buf.String(), "restore y") || !strings.Contains(buf.String(), "a line") {
		t.Fatalf("output: %q", buf.String())
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
