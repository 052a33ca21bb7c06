package walarchive

import (
	"context"
	"fmt"

	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/wal"
	"github.com/pgkeep/pgkeep/internal/walrec"
	"github.com/pgkeep/pgkeep/internal/walsum"
)

// A segment's push also records which blocks its records touch (a WAL
// summary, package walsum), so that an incremental backup reads only the
// blocks that changed. The summary is made on the same single read of the
// segment that encodes it, and stored beside it (repo.Summary), after the
// segment itself: the segment is what archiving promises; a summary that
// could not be stored only makes a later incremental backup read more.

// segmentSummary summarizes a segment as it is read.
type segmentSummary struct {
	p *walrec.Parser
	z *walsum.Summarizer
}

// newSegmentSummary returns the summarizer for segment name, or nil when
// name is not a segment of the repository's size.
func newSegmentSummary(name string, id *repo.Identity) *segmentSummary {
	seg, err := wal.ParseSegmentName(name, id.WalSegSize)
	if err != nil {
		return nil
	}
	z := walsum.NewSummarizer(id.PGMajor)
	return &segmentSummary{p: z.Parser(wal.SegmentStartLSN(seg.No, id.WalSegSize)), z: z}
}

// Write feeds the segment's bytes (in order).
func (s *segmentSummary) Write(p []byte) (int, error) { return s.p.Write(p) }

// finish returns the summary of what was written.
func (s *segmentSummary) finish() (*walsum.Summary, error) { return s.z.Finish() }

// storeSummary stores the summary of segment name, write-once (the same
// segment always gives the same bytes, so a second push is identical).
func storeSummary(ctx context.Context, r *repo.Repo, name string, s *segmentSummary) error {
	sum, err := s.finish()
	if err != nil {
		return fmt.Errorf("summarizing %s: %w", name, err)
	}
	if _, err := r.PutObject(ctx, repo.Summary(name), sum.Encode()); err != nil {
		return fmt.Errorf("storing the summary of %s: %w", name, err)
	}
	return nil
}
