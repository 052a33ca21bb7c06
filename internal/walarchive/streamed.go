package walarchive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/wal"
)

// Streamed WAL (docs/design.md §17). The agent stores what it receives as
// write-once pieces, each the bytes [start, end) of one segment, and each
// completed segment whole, exactly as wal-push stores it. Fetch serves a
// segment the repository holds only in pieces by assembling them.

// encodeBytes encodes content as one envelope, in cache-sized chunks like
// encodeFile: the same content sum wal-push computes for the same bytes.
func encodeBytes(content []byte, comp envelope.Compression, ci envelope.Cipher) (*encodedFile, error) {
	out := &chunkedBuffer{}
	enc := &encodedFile{buf: out}
	w, err := envelope.NewWriter(out, comp, ci)
	if err != nil {
		enc.release()
		return nil, err
	}
	for off := 0; off < len(content); off += chunkSize {
		if _, err := w.Write(content[off:min(off+chunkSize, len(content))]); err != nil {
			enc.release()
			return nil, err
		}
	}
	if enc.sum, err = w.Close(); err != nil {
		enc.release()
		return nil, err
	}
	enc.head = content[:min(len(content), headSize)]
	return enc, nil
}

// StorePiece stores the WAL bytes data as piece p, write-once, encrypted
// like a segment in an encrypted repository. An identical piece already
// there is success; different bytes under its name are an error wrapping
// repo.ErrConflict.
func StorePiece(ctx context.Context, r *repo.Repo, p repo.Piece, data []byte) (repo.PutResult, error) {
	if uint64(len(data)) != p.Size() {
		return repo.PutResult{}, fmt.Errorf("storing streamed piece %s: %d bytes for a %d-byte range", p, len(data), p.Size())
	}
	enc, err := encodeBytes(data, r.WALCompression(), r.Cipher())
	if err != nil {
		return repo.PutResult{}, fmt.Errorf("encoding streamed piece %s: %w", p, err)
	}
	defer enc.release()
	res, err := r.PutEncodedAt(ctx, repo.StreamedPiece(p), enc.buf, enc.buf.Len(), enc.sum)
	if err != nil {
		return res, fmt.Errorf("storing streamed piece %s: %w", p, err)
	}
	return res, nil
}

// StoreSegment stores a complete segment received from the server under
// its normal name, exactly as wal-push stores the same file: its page
// header is checked against the repository's cluster, and an identical
// segment already archived (by archive_command, say) is success.
// id is the repository's identity record.
func StoreSegment(ctx context.Context, r *repo.Repo, id *repo.Identity, name string, data []byte) (PushResult, error) {
	if uint64(len(data)) != id.WalSegSize {
		return PushResult{}, fmt.Errorf("storing streamed segment %s: %d bytes, the repository's segments are %d", name, len(data), id.WalSegSize)
	}
	if err := checkHeader(name, data, id); err != nil {
		return PushResult{}, err
	}
	enc, err := encodeBytes(data, r.WALCompression(), r.Cipher())
	if err != nil {
		return PushResult{}, fmt.Errorf("encoding streamed segment %s: %w", name, err)
	}
	defer enc.release()
	key := repo.WAL(name)
	res, err := r.PutEncodedAt(ctx, key, enc.buf, enc.buf.Len(), enc.sum)
	if err != nil {
		if errors.Is(err, repo.ErrConflict) {
			return PushResult{}, fmt.Errorf("refusing to store streamed segment %s: %w", name, err)
		}
		return PushResult{}, fmt.Errorf("storing streamed segment %s: %w", name, err)
	}
	out := PushResult{Name: name, Key: key, Size: enc.sum.Size, Stored: res.Stored, Existed: res.Existed}
	// Its WAL summary, as wal-push stores one (summary.go).
	if sum := newSegmentSummary(name, id); sum != nil {
		sum.Write(data)
		out.SummaryErr = storeSummary(ctx, r, name, sum)
	}
	return out, nil
}

// checkHeader checks the long page header at the start of a segment's
// bytes against the repository's identity (as Push does for a file).
func checkHeader(name string, data []byte, id *repo.Identity) error {
	hdr, err := wal.ParseSegmentHeader(data)
	if err != nil {
		return fmt.Errorf("streamed segment %s: %w", name, err)
	}
	if err := id.Matches(repo.Identity{SystemIdentifier: hdr.SysID, PGMajor: hdr.Major, WalSegSize: uint64(hdr.SegSize)}); err != nil {
		return fmt.Errorf("refusing to store streamed segment %s (cluster identified by its page header): %w", name, err)
	}
	return nil
}

// StoreHistory stores a timeline history file the agent received from the
// server (TIMELINE_HISTORY), in the clear as wal-push stores history files.
// An identical file already there is success; a different one is refused.
func StoreHistory(ctx context.Context, r *repo.Repo, name string, content []byte) (repo.PutResult, error) {
	if k, err := wal.Classify(name); err != nil || k != wal.KindTimelineHistory {
		return repo.PutResult{}, fmt.Errorf("%q is not a timeline history file name", name)
	}
	if _, err := wal.ParseHistory(content); err != nil {
		return repo.PutResult{}, fmt.Errorf("timeline history file %s from the server: %w", name, err)
	}
	res, err := r.PutPlainObject(ctx, repo.WAL(name), content)
	if err != nil {
		return res, fmt.Errorf("storing timeline history file %s: %w", name, err)
	}
	return res, nil
}

// assemble writes the segment that the streamed pieces s hold into dest:
// every piece read and verified, the bytes past the streamed end zero-filled
// to the segment size (as PostgreSQL accepts a partial segment from
// pg_receivewal), written to a temporary file and renamed into place. s
// must tile the segment from 0 without a hole.
func assemble(ctx context.Context, r *repo.Repo, s *catalog.StreamedSegment, dest string, id *repo.Identity) error {
	buf := make([]byte, id.WalSegSize)
	have, _, _ := catalog.Tile(s.Pieces)
	for _, p := range s.Pieces {
		key := repo.StreamedPiece(p)
		err := r.ReadObject(ctx, key, func(rd io.Reader) error {
			n, err := io.ReadFull(rd, buf[p.Start:p.End])
			if err != nil {
				return fmt.Errorf("piece holds %d bytes, its name says %d: %w", n, p.Size(), err)
			}
			return nil
		}, nil)
		if err != nil {
			return fmt.Errorf("fetching %s from its streamed pieces: %w", s.Segment, err)
		}
	}
	if have >= headSize {
		if err := checkHeader(s.Segment, buf, id); err != nil {
			return err
		}
	}
	tmp := dest + ".pgkeep-partial"
	if err := os.WriteFile(tmp, buf, 0o600); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("fetching %s from its streamed pieces: %w", s.Segment, err)
	}
	if err := os.Rename(tmp, dest); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("fetching %s: %w", s.Segment, err)
	}
	return nil
}

// ReadSegment returns the content of segment name: stored whole, or
// assembled from its streamed pieces (zero-filled past the streamed end).
// It returns an error wrapping storage.ErrNotFound when neither is there.
func ReadSegment(ctx context.Context, r *repo.Repo, ix *catalog.WALIndex, name string) ([]byte, error) {
	data, _, err := r.GetObject(ctx, repo.WAL(name))
	if err == nil || ix == nil {
		return data, err
	}
	seg, perr := wal.ParseSegmentName(name, ix.SegSize)
	if perr != nil {
		return nil, err
	}
	s := ix.Timeline(uint32(seg.TLI)).StreamedAt(seg.No)
	if s == nil {
		return nil, err
	}
	buf := make([]byte, ix.SegSize)
	for _, p := range s.Pieces {
		if rerr := r.ReadObject(ctx, repo.StreamedPiece(p), func(rd io.Reader) error {
			_, err := io.ReadFull(rd, buf[p.Start:p.End])
			return err
		}, nil); rerr != nil {
			return nil, fmt.Errorf("reading %s from its streamed pieces: %w", name, rerr)
		}
	}
	return buf, nil
}
