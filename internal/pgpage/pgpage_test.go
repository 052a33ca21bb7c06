package pgpage

import (
	"os"
	"testing"
)

// testdata/heap_15 is a heap relation written by PostgreSQL 15 with data
// checksums on (3000 rows, after a checkpoint), relation segment 0.
func TestVerifyRealPages(t *testing.T) {
	data, err := os.ReadFile("testdata/heap_15")
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 2*Size || len(data)%Size != 0 {
		t.Fatalf("fixture has %d bytes", len(data))
	}
	for blk := 0; blk < len(data)/Size; blk++ {
		page := data[blk*Size : (blk+1)*Size]
		if err := Verify(page, uint32(blk)); err != nil {
			t.Fatalf("block %d of a healthy relation: %v", blk, err)
		}
		if PageLSN(page) == 0 {
			t.Fatalf("block %d has no LSN", blk)
		}
		// The same page at another block number fails: the block number
		// is part of the checksum.
		if err := Verify(page, uint32(blk)+1); err == nil {
			t.Fatalf("block %d verified at the wrong block number", blk)
		}
		// So does any flipped bit.
		bad := append([]byte(nil), page...)
		bad[4000] ^= 0x10
		if err := Verify(bad, uint32(blk)); err == nil {
			t.Fatalf("block %d: corruption not detected", blk)
		}
	}
}

func TestNewPages(t *testing.T) {
	zero := make([]byte, Size)
	if err := Verify(zero, 7); err != nil {
		t.Fatalf("all-zero new page: %v", err)
	}
	zero[100] = 1
	if err := Verify(zero, 7); err == nil {
		t.Fatal("non-zero page with pd_upper 0 accepted")
	}
	if err := Verify(make([]byte, 100), 0); err == nil {
		t.Fatal("short page accepted")
	}
}

func FuzzVerify(f *testing.F) {
	data, _ := os.ReadFile("testdata/heap_15")
	if len(data) >= Size {
		f.Add(data[:Size], uint32(0))
	}
	f.Fuzz(func(t *testing.T, page []byte, blk uint32) {
		if len(page) > 2*Size {
			return
		}
		if err := Verify(page, blk); err == nil && len(page) != Size {
			t.Fatal("accepted a page of the wrong size")
		}
	})
}
