package pgpage

import (
	"errors"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/pgkeep/pgkeep/internal/pgversion"
)

// testdata/majors/N/heap and btree are segment 0 of a table of 500 rows
// and of its primary key, written by PostgreSQL N with data checksums on
// (internal/pgtest TestGenerateFixtures). The page format and checksum
// algorithm are the same from 12 to 18; these prove it on each major's
// own pages.
func TestEveryMajorPages(t *testing.T) {
	for _, major := range pgversion.Majors() {
		for _, kind := range []string{"heap", "btree"} {
			name := filepath.Join("majors", strconv.Itoa(major), kind)
			t.Run(strconv.Itoa(major)+"/"+kind, func(t *testing.T) {
				data := readFixture(t, name)
				for blk := 0; blk < len(data)/Size; blk++ {
					page := data[blk*Size : (blk+1)*Size]
					if err := Verify(page, uint32(blk)); err != nil {
						t.Fatalf("block %d: %v", blk, err)
					}
					h, err := ParsePageHeader(page)
					if err != nil || h.LSN == 0 || h.Upper == 0 {
						t.Fatalf("block %d header: %+v, %v", blk, h, err)
					}
					if kind == "btree" && h.Special != Size-16 {
						t.Errorf("block %d: special space at %d, want %d", blk, h.Special, Size-16)
					}
					if kind == "heap" && h.Special != Size {
						t.Errorf("heap block %d: special space at %d", blk, h.Special)
					}
					if err := Verify(page, uint32(blk)+1); !errors.Is(err, ErrChecksum) {
						t.Fatalf("block %d verified as block %d: %v", blk, blk+1, err)
					}
				}
			})
		}
	}
}
