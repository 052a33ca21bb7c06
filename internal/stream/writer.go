// Package stream receives WAL from a PostgreSQL server over the physical
// replication protocol and stores it in the repository as it arrives
// (docs/design.md §17): the bytes received since the last upload as a
// write-once streamed piece, at least every stream interval while WAL
// arrives, and each segment whole once it is complete, exactly as wal-push
// stores it. The position it reports to the server as written, flushed
// and applied is the end of the WAL durably in the repository, so the
// replication slot never lets the server recycle WAL that is not stored,
// and a synchronous commit waits for its WAL to be in the object store.
package stream

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/wal"
	"github.com/pgkeep/pgkeep/internal/walarchive"
)

// Events are what a Writer and a Session report that an operator cares
// about. Implementations must be safe for concurrent use.
type Events interface {
	// SegmentStored: a completed segment is stored whole (existed: an
	// identical one was there, from archive_command say).
	SegmentStored(name string, stored int64, existed bool)
	// Durable: the WAL up to lsn is durably in the repository.
	Durable(lsn wal.LSN)
	// Warn: something the operator should know that does not stop
	// streaming.
	Warn(msg string)
}

// Writer buffers the WAL of one timeline as it is received, from the start
// of a segment on, and stores it. Write is called by the receiver, Flush
// by the uploader; they may run concurrently.
type Writer struct {
	r       *repo.Repo
	id      *repo.Identity
	tli     wal.TimeLineID
	segSize uint64
	ev      Events

	start wal.LSN // where streaming starts

	mu      sync.Mutex
	segs    []*segment // received and not yet all stored, oldest first; the last is being received
	recv    wal.LSN    // end of the WAL received
	durable wal.LSN    // end of the WAL durably in the repository
	wake    chan struct{}

	whole chan *segment // completed segments to store whole
	done  chan error    // the whole-segment storer's end
	mem   *sync.Pool
}

// segment is one segment's bytes as received.
type segment struct {
	no     uint64
	buf    []byte // the segment, from offset 0
	recv   uint64 // bytes received: buf[:recv] is valid
	stored uint64 // bytes durably in the repository as pieces: [0, stored)
}

// maxBuffered bounds the segments held in memory (received, not yet all
// stored, or waiting to be stored whole): the receiver waits beyond it,
// which holds the server back instead of growing without bound.
const maxBuffered = 4

// NewWriter returns a Writer for timeline tli that starts at the first byte
// of segment startNo, of which the repository already holds the first
// stored bytes in pieces (those are not uploaded again). id is the
// repository's identity.
func NewWriter(r *repo.Repo, id *repo.Identity, tli wal.TimeLineID, startNo, stored uint64, ev Events) *Writer {
	segSize := id.WalSegSize
	w := &Writer{r: r, id: id, tli: tli, segSize: segSize, ev: ev,
		wake:  make(chan struct{}, 1),
		whole: make(chan *segment, maxBuffered),
		done:  make(chan error, 1),
		mem:   &sync.Pool{New: func() any { return make([]byte, segSize) }},
	}
	start := wal.SegmentStartLSN(startNo, segSize)
	w.start, w.recv = start, start
	w.durable = start + wal.LSN(min(stored, segSize))
	w.segs = []*segment{{no: startNo, buf: w.mem.Get().([]byte), stored: min(stored, segSize)}}
	return w
}

// Start returns where the server must start sending: the first byte of the
// start segment.
func (w *Writer) Start() wal.LSN { return w.start }

// Received returns the end of the WAL received.
func (w *Writer) Received() wal.LSN {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.recv
}

// Durable returns the end of the WAL durably in the repository.
func (w *Writer) Durable() wal.LSN {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.durable
}

// Wake is signalled whenever new WAL is received.
func (w *Writer) Wake() <-chan struct{} { return w.wake }

// Pending reports whether WAL was received that is not stored yet.
func (w *Writer) Pending() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.segs {
		if s.recv > s.stored {
			return true
		}
	}
	return false
}

// Buffered returns how many segments are held in memory.
func (w *Writer) buffered() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.segs) + len(w.whole)
}

// Write adds WAL received from the server, which must continue exactly
// where the WAL received so far ends. It waits (until ctx ends) while
// maxBuffered segments are held in memory.
func (w *Writer) Write(ctx context.Context, at wal.LSN, data []byte) error {
	w.mu.Lock()
	if at != w.recv {
		w.mu.Unlock()
		return fmt.Errorf("the server sent WAL at %s, but the WAL received ends at %s", at, w.recv)
	}
	for len(data) > 0 {
		var cur *segment
		if n := len(w.segs); n > 0 && w.segs[n-1].recv < w.segSize {
			cur = w.segs[n-1]
		} else {
			w.mu.Unlock()
			if err := w.waitRoom(ctx); err != nil {
				return err
			}
			w.mu.Lock()
			cur = &segment{no: wal.SegmentOf(w.recv, w.segSize), buf: w.mem.Get().([]byte)}
			w.segs = append(w.segs, cur)
		}
		n := copy(cur.buf[cur.recv:], data)
		cur.recv += uint64(n)
		w.recv += wal.LSN(n)
		data = data[n:]
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return nil
}

// waitRoom waits until fewer than maxBuffered segments are in memory.
func (w *Writer) waitRoom(ctx context.Context) error {
	for w.buffered() >= maxBuffered {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// Flush stores what was received and is not stored yet, as one piece per
// segment it touches, in order, and hands completed segments to the
// whole-segment storer. It returns the durable end. Only one Flush runs at
// a time (the uploader's).
func (w *Writer) Flush(ctx context.Context) (wal.LSN, error) {
	type job struct {
		s        *segment
		from, to uint64
	}
	w.mu.Lock()
	var jobs []job
	for _, s := range w.segs {
		jobs = append(jobs, job{s, s.stored, s.recv})
	}
	w.mu.Unlock()
	for _, j := range jobs {
		if j.to > j.from {
			// buf[from:to] no longer changes: the receiver only appends.
			p := repo.Piece{Segment: wal.SegmentName(w.tli, j.s.no, w.segSize), Start: j.from, End: j.to}
			if _, err := walarchive.StorePiece(ctx, w.r, p, j.s.buf[j.from:j.to]); err != nil {
				return w.Durable(), err
			}
		}
		w.mu.Lock()
		if j.to > j.from {
			j.s.stored = j.to
			w.durable = wal.SegmentStartLSN(j.s.no, w.segSize) + wal.LSN(j.to)
		}
		complete := j.s.recv == w.segSize && j.s.stored == w.segSize && len(w.segs) > 0 && w.segs[0] == j.s
		if complete {
			w.segs = w.segs[1:]
		}
		durable := w.durable
		w.mu.Unlock()
		if j.to > j.from && w.ev != nil {
			w.ev.Durable(durable)
		}
		if complete {
			select {
			case w.whole <- j.s:
			case <-ctx.Done():
				return w.Durable(), ctx.Err()
			}
		}
	}
	return w.Durable(), nil
}

// StoreWhole runs the whole-segment storer until the writer is closed
// (Close) or storing fails. It stores each completed segment under its
// normal name, as wal-push would.
func (w *Writer) StoreWhole(ctx context.Context) error {
	for s := range w.whole {
		name := wal.SegmentName(w.tli, s.no, w.segSize)
		res, err := walarchive.StoreSegment(ctx, w.r, w.id, name, s.buf)
		if err != nil {
			// Keep draining so Flush never blocks on a dead storer; the
			// session ends with this error and resumes from the
			// repository, whose pieces hold the segment meanwhile.
			for range w.whole {
			}
			return err
		}
		w.mem.Put(s.buf)
		if w.ev != nil {
			w.ev.SegmentStored(name, res.Stored, res.Existed)
		}
	}
	return nil
}

// Close ends the whole-segment storer after the segments handed to it.
func (w *Writer) Close() { close(w.whole) }
