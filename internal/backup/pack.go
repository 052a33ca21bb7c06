package backup

// pieceJob is a byte range of one file assigned to a data object.
type pieceJob struct {
	file   int   // index into the file list
	offset int64 // in the file
	size   int64 // planned; the file may have shrunk by the time it is read
}

// objectJob is one data object to build: the pieces it concatenates.
type objectJob struct {
	seq    int
	pieces []pieceJob
	size   int64 // planned content size
}

// pack assigns files (sorted largest first) to data objects of at most
// objectSize content bytes. A file larger than an object is split at
// multiples of objectSize (which is a multiple of the page size, so pieces
// hold whole pages); smaller files are bundled, so a data directory with
// thousands of small files yields few objects. Empty files get no piece.
// pack is pure: the same input always gives the same plan.
func pack(files []srcFile, objectSize int64) []objectJob {
	var jobs []objectJob
	var cur *objectJob
	flush := func() {
		if cur != nil && len(cur.pieces) > 0 {
			jobs = append(jobs, *cur)
		}
		cur = nil
	}
	add := func(p pieceJob) {
		if cur == nil || cur.size+p.size > objectSize {
			flush()
			cur = &objectJob{seq: len(jobs)}
		}
		cur.pieces = append(cur.pieces, p)
		cur.size += p.size
	}
	for i, f := range files {
		if f.size == 0 {
			continue
		}
		off := int64(0)
		for f.size-off > objectSize {
			flush()
			jobs = append(jobs, objectJob{seq: len(jobs), pieces: []pieceJob{{file: i, offset: off, size: objectSize}}, size: objectSize})
			off += objectSize
		}
		add(pieceJob{file: i, offset: off, size: f.size - off})
	}
	flush()
	return jobs
}
