package pgpage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"
)

// Fixtures: relation segment 0 of tables written by PostgreSQL 15 with
// data checksums on, copied after a checkpoint.
//
//	heap_15   a heap
//	btree_15  a B-tree index (metapage first; special space on every page)
func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 2*Size || len(data)%Size != 0 {
		t.Fatalf("%s has %d bytes", name, len(data))
	}
	return data
}

// restamp stores the right checksum for blkno in page.
func restamp(page []byte, blkno uint32) {
	binary.LittleEndian.PutUint16(page[8:], Checksum(page, blkno))
}

func TestVerifyRealPages(t *testing.T) {
	for _, name := range []string{"heap_15", "btree_15"} {
		data := readFixture(t, name)
		for blk := 0; blk < len(data)/Size; blk++ {
			page := data[blk*Size : (blk+1)*Size]
			if err := Verify(page, uint32(blk)); err != nil {
				t.Fatalf("%s block %d of a healthy relation: %v", name, blk, err)
			}
			h, err := ParsePageHeader(page)
			if err != nil || h.LSN == 0 || h.LSN != PageLSN(page) || h.Upper == 0 {
				t.Fatalf("%s block %d header: %+v, %v", name, blk, h, err)
			}
			if name == "btree_15" && h.Special != Size-16 {
				t.Errorf("btree block %d: special space at %d, want %d", blk, h.Special, Size-16)
			}
			// The block number is part of the checksum.
			var pe *PageError
			if err := Verify(page, uint32(blk)+1); !errors.As(err, &pe) || !errors.Is(err, ErrChecksum) ||
				pe.Found != h.Checksum || pe.Expected != Checksum(page, uint32(blk)+1) || pe.Block != uint32(blk)+1 || pe.LSN != h.LSN {
				t.Fatalf("%s block %d verified at the wrong block number: %v", name, blk, err)
			}
			// So is every byte, including pd_flags and pd_lsn but not the
			// checksum field itself.
			for _, off := range []int{0, 7, 10, 11, 12, 23, 24, 4000, Size - 1} {
				bad := bytes.Clone(page)
				bad[off] ^= 0x10
				if err := Verify(bad, uint32(blk)); !errors.Is(err, ErrChecksum) {
					t.Fatalf("%s block %d: flipped byte %d not detected: %v", name, blk, off, err)
				}
			}
			if Checksum(page, uint32(blk)) == 0 {
				t.Fatal("checksum 0")
			}
		}
	}
}

func TestChecksumIgnoresStoredChecksum(t *testing.T) {
	page := bytes.Clone(readFixture(t, "heap_15")[:Size])
	want := Checksum(page, 0)
	binary.LittleEndian.PutUint16(page[8:], 0xBEEF)
	if got := Checksum(page, 0); got != want {
		t.Fatalf("checksum depends on pd_checksum: %d vs %d", got, want)
	}
}

func TestChecksumOtherBlockSizes(t *testing.T) {
	// Every valid block size works, with the same algorithm.
	for _, size := range []int{1 << 10, 2 << 10, 4 << 10, 16 << 10, 32 << 10} {
		page := make([]byte, size)
		for i := range page {
			page[i] = byte(i * 7)
		}
		binary.LittleEndian.PutUint16(page[14:], 100) // pd_upper
		binary.LittleEndian.PutUint16(page[12:], 24)  // pd_lower
		binary.LittleEndian.PutUint16(page[16:], uint16(size&0xFFF8))
		page[10], page[11] = 0, 0 // pd_flags
		if size == 32<<10 {
			binary.LittleEndian.PutUint16(page[16:], 32760)
		}
		restamp(page, 5)
		if err := Verify(page, 5); err != nil {
			t.Errorf("%d-byte page: %v", size, err)
		}
	}
	for _, n := range []int{0, 100, 129, Size + 1} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Checksum of %d bytes did not panic", n)
				}
			}()
			Checksum(make([]byte, n), 0)
		}()
	}
}

func TestHeaderSanity(t *testing.T) {
	orig := readFixture(t, "btree_15")[Size : 2*Size]
	for name, edit := range map[string]func([]byte){
		"unknown flag":      func(p []byte) { p[10] |= 0x08 },
		"lower above upper": func(p []byte) { binary.LittleEndian.PutUint16(p[12:], binary.LittleEndian.Uint16(p[14:])+1) },
		"upper above special": func(p []byte) {
			binary.LittleEndian.PutUint16(p[14:], binary.LittleEndian.Uint16(p[16:])+8)
		},
		"special beyond page": func(p []byte) { binary.LittleEndian.PutUint16(p[16:], Size+8) },
		"special unaligned":   func(p []byte) { binary.LittleEndian.PutUint16(p[16:], Size-12) },
	} {
		page := bytes.Clone(orig)
		edit(page)
		restamp(page, 1)
		var pe *PageError
		if err := Verify(page, 1); !errors.Is(err, ErrBadHeader) || !errors.As(err, &pe) || pe.Detail == "" {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Valid flags are fine.
	page := bytes.Clone(orig)
	page[10] |= FlagHasFreeLines | FlagPageFull | FlagAllVisible
	restamp(page, 1)
	if err := Verify(page, 1); err != nil {
		t.Errorf("valid flags: %v", err)
	}
}

func TestTornPage(t *testing.T) {
	data := readFixture(t, "heap_15")
	// The first half of block 1 with the second half of block 2: what a
	// reader may see while PostgreSQL writes the page.
	torn := append(bytes.Clone(data[Size:Size+Size/2]), data[2*Size+Size/2:3*Size]...)
	err := Verify(torn, 1)
	var pe *PageError
	if !errors.As(err, &pe) || pe.LSN != PageLSN(data[Size:]) {
		t.Fatalf("torn page: %v", err)
	}
	// The error carries the LSN as read, from the page's first bytes, for
	// the torn-page rule: a backup that started at or before that LSN
	// skips the page instead of reporting it.
}

func BenchmarkChecksum(b *testing.B) {
	page := readFixture(b, "heap_15")[:Size]
	b.SetBytes(Size)
	for i := 0; b.Loop(); i++ {
		Checksum(page, uint32(i))
	}
}

func FuzzVerify(f *testing.F) {
	for _, name := range []string{"heap_15", "btree_15"} {
		data := readFixture(f, name)
		f.Add(data[:Size], uint32(0))
		f.Add(data[Size:2*Size], uint32(1))
	}
	f.Add(make([]byte, Size), uint32(7))
	f.Add(make([]byte, 1024), uint32(0))
	f.Add([]byte{1, 2, 3}, uint32(0))
	f.Fuzz(func(t *testing.T, page []byte, blk uint32) {
		t0 := time.Now()
		defer func() {
			if d := time.Since(t0); d > 50*time.Millisecond {
				fh, _ := os.OpenFile("/tmp/pkp/slow.log", os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
				fmt.Fprintf(fh, "len %d blk %d took %v\n", len(page), blk, d)
				fh.Close()
			}
		}()
		if len(page) > 32<<10 {
			return
		}
		h, herr := ParsePageHeader(page)
		_ = PageLSN(page)
		err := Verify(page, blk)
		if err == nil {
			if !ValidBlockSize(len(page)) {
				t.Fatalf("accepted a %d-byte page", len(page))
			}
			if herr != nil || (!allZero(page) && h.Checksum != Checksum(page, blk)) {
				t.Fatal("accepted a page whose checksum does not match")
			}
			return
		}
		var pe *PageError
		if !errors.As(err, &pe) || pe.Block != blk || pe.Error() == "" {
			t.Fatalf("error is not a *PageError for the block: %v", err)
		}
		if ValidBlockSize(len(page)) && errors.Is(err, ErrChecksum) {
			// Stamping the computed checksum fixes a checksum failure
			// unless the header is also bad.
			fixed := bytes.Clone(page)
			restamp(fixed, blk)
			if err := Verify(fixed, blk); err != nil && !errors.Is(err, ErrBadHeader) {
				t.Fatalf("restamped page: %v", err)
			}
		}
	})
}
