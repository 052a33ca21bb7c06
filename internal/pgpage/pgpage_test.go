package pgpage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"testing/iotest"
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
			if err != nil || h.PageSize() != Size || h.LayoutVersion() != 4 || h.LSN == 0 || h.LSN != PageLSN(page) || h.Upper == 0 || IsNew(page) {
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

func TestNewPages(t *testing.T) {
	zero := make([]byte, Size)
	if err := Verify(zero, 7); err != nil || !IsNew(zero) {
		t.Fatalf("all-zero new page: %v", err)
	}
	zero[100] = 1
	if err := Verify(zero, 7); !errors.Is(err, ErrNewNotZeros) {
		t.Fatalf("non-zero page with pd_upper 0: %v", err)
	}
	for _, n := range []int{0, 100, Size - 1, Size + 1, 3 * 1024, 64 << 10} {
		if err := Verify(make([]byte, n), 0); !errors.Is(err, ErrPageSize) {
			t.Errorf("%d-byte page: %v", n, err)
		}
	}
	if _, err := ParsePageHeader(make([]byte, 23)); err == nil {
		t.Error("23-byte header parsed")
	}
	if PageLSN(make([]byte, 7)) != 0 || IsNew(make([]byte, 7)) {
		t.Error("short slices")
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

func TestVerifyFile(t *testing.T) {
	data := readFixture(t, "heap_15")
	n := len(data) / Size
	type result struct {
		blk uint32
		err error
	}
	collect := func(r io.Reader, segNo uint32) ([]result, error) {
		var got []result
		err := VerifyFile(r, segNo, Size, func(blk uint32, err error) { got = append(got, result{blk, err}) })
		return got, err
	}

	got, err := collect(bytes.NewReader(data), 0)
	if err != nil || len(got) != n {
		t.Fatalf("%d results, %v", len(got), err)
	}
	for i, r := range got {
		if r.blk != uint32(i) || r.err != nil {
			t.Errorf("block %d: %+v", i, r)
		}
	}

	// The same pages as segment 2: block numbers start at 2*131072, so
	// the stored checksums no longer match ...
	got, err = collect(bytes.NewReader(data), 2)
	if err != nil || len(got) != n || got[0].blk != 262144 || !errors.Is(got[0].err, ErrChecksum) {
		t.Fatalf("segment 2: %+v, %v", got, err)
	}
	// ... until they are stamped for those block numbers; a zero page and
	// a corrupt page in between.
	seg2 := bytes.Clone(data)
	for i := 0; i < n; i++ {
		restamp(seg2[i*Size:(i+1)*Size], uint32(262144+i))
	}
	clear(seg2[3*Size : 4*Size])
	seg2[5*Size+5000] ^= 1
	got, err = collect(iotest.OneByteReader(bytes.NewReader(seg2)), 2)
	if err != nil || len(got) != n {
		t.Fatalf("segment 2 stamped: %d results, %v", len(got), err)
	}
	for i, r := range got {
		if r.blk != uint32(262144+i) || (i == 5) != (r.err != nil) {
			t.Errorf("segment 2 block %d: %+v", i, r)
		}
	}
	var pe *PageError
	if !errors.As(got[5].err, &pe) || pe.Block != 262144+5 {
		t.Errorf("corrupt block: %v", got[5].err)
	}

	// Other block sizes scale the segment's first block.
	var first uint32
	if err := VerifyFile(bytes.NewReader(make([]byte, 4096)), 3, 4096, func(blk uint32, err error) { first = blk }); err != nil || first != 3*262144 {
		t.Errorf("4 KiB blocks: first block %d, %v", first, err)
	}

	// A partial block at the end.
	got, err = collect(bytes.NewReader(data[:2*Size+100]), 0)
	if !errors.Is(err, ErrPartialBlock) || len(got) != 2 {
		t.Errorf("partial block: %d results, %v", len(got), err)
	}
	// A read error.
	boom := errors.New("boom")
	got, err = collect(io.MultiReader(bytes.NewReader(data[:Size]), iotest.ErrReader(boom)), 0)
	if !errors.Is(err, boom) || len(got) != 1 {
		t.Errorf("read error: %d results, %v", len(got), err)
	}
	// An empty file, a bad block size, a segment number beyond the block
	// number space.
	if got, err := collect(bytes.NewReader(nil), 0); err != nil || len(got) != 0 {
		t.Errorf("empty file: %v", err)
	}
	if err := VerifyFile(bytes.NewReader(data), 0, 1000, func(uint32, error) {}); err == nil {
		t.Error("block size 1000 accepted")
	}
	if err := VerifyFile(bytes.NewReader(data), 1<<15, Size, func(uint32, error) {}); err == nil {
		t.Error("segment 32768 accepted")
	}
	if err := VerifyBlocks(bytes.NewReader(data), 0xFFFFFFFE-1, Size, func(uint32, error) {}); err == nil {
		t.Error("blocks past MaxBlockNumber accepted")
	}
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
		_ = IsNew(page)
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

func FuzzVerifyBlocks(f *testing.F) {
	data := readFixture(f, "heap_15")
	f.Add(data[:2*Size+10], uint32(0), uint8(3))
	f.Add([]byte{}, uint32(0xFFFFFFFE), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, first uint32, sizeShift uint8) {
		blockSize := 1024 << (sizeShift % 6) // 1 KiB to 32 KiB
		calls := 0
		next := uint64(first)
		err := VerifyBlocks(bytes.NewReader(data), first, blockSize, func(blk uint32, _ error) {
			if uint64(blk) != next {
				t.Fatalf("block %d, want %d", blk, next)
			}
			next++
			calls++
		})
		whole := len(data) / blockSize
		switch {
		case uint64(first)+uint64(whole) > 0xFFFFFFFF:
			if err == nil {
				t.Fatal("ran past MaxBlockNumber")
			}
		case calls != whole:
			t.Fatalf("%d calls for %d blocks", calls, whole)
		case len(data)%blockSize != 0 && !errors.Is(err, ErrPartialBlock):
			t.Fatalf("partial block: %v", err)
		case len(data)%blockSize == 0 && err != nil:
			t.Fatal(err)
		}
	})
}
