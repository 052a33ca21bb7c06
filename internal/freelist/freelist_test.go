package freelist

import (
	"runtime"
	"testing"
)

// Objects put back come out again, across garbage collections, up to Max.
func TestReuseAcrossCollections(t *testing.T) {
	made := 0
	l := &List[*[]byte]{New: func() *[]byte { made++; b := make([]byte, 1<<20); return &b }, Max: 2}
	a, b, c := l.Get(), l.Get(), l.Get()
	if made != 3 {
		t.Fatalf("made %d, want 3", made)
	}
	l.Put(a)
	l.Put(b)
	l.Put(c) // over Max: dropped
	runtime.GC()
	runtime.GC()
	got := map[*[]byte]bool{l.Get(): true, l.Get(): true}
	if !got[a] || !got[b] || made != 3 {
		t.Fatalf("after two collections: reused %v, made %d", got, made)
	}
	l.Get()
	if made != 4 {
		t.Fatalf("an empty list made %d objects in all, want 4", made)
	}
}
