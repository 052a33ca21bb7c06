package e2e

import (
	"os"
	"syscall"
)

func ownerOf(st os.FileInfo) (int, int) {
	s := st.Sys().(*syscall.Stat_t)
	return int(s.Uid), int(s.Gid)
}
