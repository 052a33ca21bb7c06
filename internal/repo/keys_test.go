package repo

import (
	"bytes"
	"context"
	"testing"
)

// Streamed pieces are listed as pieces of their segment; names pgkeep does
// not write under streamed/ are strays.
func TestStreamedPieceKeys(t *testing.T) {
	ctx := context.Background()
	r, _ := newLocal(t)
	if _, err := r.EnsureIdentity(ctx, facts); err != nil {
		t.Fatal(err)
	}
	p := Piece{Segment: "000000020000000100000003", Start: 0x1000, End: 0x1000000}
	k := StreamedPiece(p)
	if k.String() != "wal/00000002/streamed/000000020000000100000003/00001000-01000000" {
		t.Fatalf("key %s", k)
	}
	if q, ok := ParsePiece(p.String()); !ok || q != p {
		t.Fatalf("ParsePiece(%s) = %+v %v", p, q, ok)
	}
	for _, bad := range []string{
		"000000020000000100000003/00001000-00001000", // empty
		"000000020000000100000003/00002000-00001000", // backwards
		"000000020000000100000003/00001000-0000100",  // short
		"000000020000000100000003/0000a000-00001000", // lower case
		"00000002000000010000000/00001000-00002000",  // not a segment
	} {
		if _, ok := ParsePiece(bad); ok {
			t.Errorf("ParsePiece accepted %q", bad)
		}
	}
	if _, err := r.PutObject(ctx, k, bytes.Repeat([]byte{1}, int(p.Size()))); err != nil {
		t.Fatal(err)
	}
	// A piece filed under another timeline's folder is a stray.
	if _, err := r.PutObject(ctx, Key{"wal/00000001/streamed/000000020000000100000003/00000000-00000010"}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	l, err := r.Scan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pieces, strays int
	for _, o := range l.WAL {
		switch {
		case o.Piece != nil && *o.Piece == p && !o.Stray && o.Kind == 0:
			pieces++
		case o.Stray:
			strays++
		}
	}
	if pieces != 1 || strays != 1 {
		t.Fatalf("listing: %d pieces, %d strays: %+v", pieces, strays, l.WAL)
	}
}
