package local

import (
	"errors"
	"io"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Objects of directMin bytes or more are written with O_DIRECT: from
// Put's own (reused) buffer to the disk, past the page cache. A WAL
// pusher writes the repository once and reads it back rarely (a restore,
// a verify), so buffered writes would only fill memory with pages nobody
// reads again, evicting the database's own. On the VMs we measured,
// where every page the page cache takes for the first time costs as much
// as compressing it, direct writes also take a third of a WAL segment's
// archiving CPU off. File systems that refuse O_DIRECT (tmpfs, some
// network and FUSE ones) are written through the page cache as before.
// Durability is unchanged: the file is fsynced either way (O_DIRECT alone
// promises nothing about the device's cache or the file's metadata).
const directMin = 256 << 10

// directAlign is the alignment O_DIRECT wants of buffers, offsets and
// lengths: 4096 covers every logical block size in use.
const directAlign = 4096

// alignedBuf returns a slice of n bytes of b whose start is aligned to
// directAlign; b must have directAlign bytes to spare.
func alignedBuf(b []byte, n int) []byte {
	off := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (directAlign - 1))
	if off != 0 {
		off = directAlign - off
	}
	return b[off : off+n]
}

// setDirect turns O_DIRECT on or off for f. It reports whether the file
// system took it.
func setDirect(f *os.File, on bool) bool {
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		return false
	}
	if on {
		fl |= unix.O_DIRECT
	} else {
		fl &^= unix.O_DIRECT
	}
	_, err = unix.FcntlInt(f.Fd(), unix.F_SETFL, fl)
	return err == nil
}

// copyDirect copies r to the new, empty file f, in chunks of len(buf)
// (a multiple of directAlign, aligned) with O_DIRECT where the file
// system allows, the last unaligned bytes through the page cache. It
// returns the bytes copied, at most limit (reading stops there).
func copyDirect(f *os.File, r io.Reader, buf []byte, limit int64) (int64, error) {
	direct := setDirect(f, true)
	var n int64
	for n < limit {
		chunk := buf[:min(int64(len(buf)), limit-n)]
		k, rerr := io.ReadFull(r, chunk)
		if k > 0 {
			if err := writeChunk(f, chunk[:k], n, &direct); err != nil {
				return n, err
			}
			n += int64(k)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
	return n, nil
}

// writeChunk writes p at offset off: its aligned head directly while
// direct holds, and the rest buffered (turning direct off for good: only
// the last chunk of an object has a tail). A file system that takes the
// flag but refuses the write (EINVAL) gets it written buffered.
func writeChunk(f *os.File, p []byte, off int64, direct *bool) error {
	if *direct {
		head := len(p) &^ (directAlign - 1)
		if head > 0 {
			_, err := f.WriteAt(p[:head], off)
			if err == nil {
				p, off = p[head:], off+int64(head)
			} else if !errors.Is(err, syscall.EINVAL) {
				return err
			}
		}
		if len(p) > 0 {
			setDirect(f, false)
			*direct = false
		}
	}
	if len(p) == 0 {
		return nil
	}
	_, err := f.WriteAt(p, off)
	return err
}
