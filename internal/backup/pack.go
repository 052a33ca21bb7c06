package backup

import "sort"

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

// pack assigns spans (whole files, or the changed runs of relation files
// an incremental backup copies; sorted largest first) to data objects of
// at most objectSize content bytes. A span larger than an object is split
// at multiples of objectSize from its start (spans start at chunk
// boundaries and objectSize is a multiple of the chunk size, so pieces
// hold whole chunks and pages); smaller spans are bundled, so a data
// directory with thousands of small files yields few objects. Empty spans
// get no piece. pack is pure: the same input always gives the same plan.
func pack(spans []pieceJob, objectSize int64) []objectJob {
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
	for _, sp := range spans {
		if sp.size == 0 {
			continue
		}
		off, end := sp.offset, sp.offset+sp.size
		for end-off > objectSize {
			flush()
			jobs = append(jobs, objectJob{seq: len(jobs), pieces: []pieceJob{{file: sp.file, offset: off, size: objectSize}}, size: objectSize})
			off += objectSize
		}
		add(pieceJob{file: sp.file, offset: off, size: end - off})
	}
	flush()
	return jobs
}

// wholeFiles returns one span per file.
func wholeFiles(files []srcFile) []pieceJob {
	spans := make([]pieceJob, len(files))
	for i, f := range files {
		spans[i] = pieceJob{file: i, size: f.size}
	}
	return spans
}

// sortSpans orders spans largest first, then by file and offset.
func sortSpans(spans []pieceJob) {
	sort.Slice(spans, func(i, j int) bool {
		a, b := spans[i], spans[j]
		if a.size != b.size {
			return a.size > b.size
		}
		if a.file != b.file {
			return a.file < b.file
		}
		return a.offset < b.offset
	})
}
