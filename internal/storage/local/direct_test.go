package local

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/pgkeep/pgkeep/internal/storage"
)

// Objects of every size around the O_DIRECT boundaries come back byte for
// byte, on a file system that takes O_DIRECT (the test's temp directory)
// and on one that refuses it (tmpfs, when /dev/shm is one), and a body
// longer or shorter than declared stores nothing.
func TestPutDirect(t *testing.T) {
	roots := map[string]string{"disk": t.TempDir()}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "pgkeep-direct-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			roots["tmpfs"] = d
		}
	}
	sizes := []int{directMin - 1, directMin, directMin + 1, copyBufSize - 1, copyBufSize, copyBufSize + 1,
		copyBufSize + directAlign, 3*copyBufSize + 123, 16 << 20}
	ctx := context.Background()
	for fsName, root := range roots {
		s, err := New(root)
		if err != nil {
			t.Fatal(err)
		}
		for i, size := range sizes {
			data := make([]byte, size)
			for j := range data {
				data[j] = byte(rand.IntN(256))
			}
			key := "obj/" + fsName + string(rune('a'+i))
			if err := s.Put(ctx, key, bytes.NewReader(data), int64(size)); err != nil {
				t.Fatalf("%s: put %d bytes: %v", fsName, size, err)
			}
			var got []byte
			if err := s.Get(ctx, key, func(r io.Reader) error { got, err = io.ReadAll(r); return err }); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("%s: %d bytes stored, %d read back, equal %v", fsName, size, len(got), bytes.Equal(got, data))
			}
			// One byte more or less than declared: refused, nothing stored.
			for _, body := range [][]byte{append(data, 1), data[:size-1]} {
				err := s.Put(ctx, key+"-bad", bytes.NewReader(body), int64(size))
				if err == nil || !storage.IsPermanent(err) {
					t.Fatalf("%s: body of %d bytes declared as %d: %v", fsName, len(body), size, err)
				}
				if _, err := s.Stat(ctx, key+"-bad"); !errors.Is(err, storage.ErrNotFound) {
					t.Fatalf("%s: a refused put left an object: %v", fsName, err)
				}
			}
		}
		if left := tempFiles(t, root); len(left) > 0 {
			t.Fatalf("%s: temporary files left: %v", fsName, left)
		}
	}
}
