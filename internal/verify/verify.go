// Package verify re-reads what a repository keeps and checks it: every
// object's checksum and decompression, every manifest piece, and the
// continuity of the WAL chain from each backup to the end of the archive.
package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync/atomic"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/progress"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/wal"
	"golang.org/x/sync/errgroup"
)

// Problem is one thing that is wrong, named precisely.
type Problem struct {
	Object string `json:"object"` // key of the damaged or missing object
	Kind   string `json:"kind"`   // "corrupt", "missing", "gap", "unreadable"
	Detail string `json:"detail"`
}

func (p Problem) String() string { return fmt.Sprintf("%s: %s: %s", p.Object, p.Kind, p.Detail) }

// BackupReport is the result for one backup.
type BackupReport struct {
	ID       string    `json:"id"`
	Objects  int       `json:"objects_checked"`
	Bytes    int64     `json:"bytes_checked"`
	WALFrom  string    `json:"wal_from"`
	WALTo    string    `json:"wal_to"`
	Problems []Problem `json:"problems"`
}

// Report is the result of a verification.
type Report struct {
	Backups     []BackupReport `json:"backups"`
	WALChecked  int            `json:"wal_files_checked"`
	WALProblems []Problem      `json:"wal_problems"`
	// ContentChecked is false in an encrypted repository verified without
	// the identity: every object's stored bytes were checked against their
	// stored checksum and against the manifests, but nothing was decrypted.
	ContentChecked bool `json:"content_checked"`
	// FramingOnly counts objects that could be checked only for their
	// framing: written by an older pgkeep (envelope version 1, no stored
	// checksum), encrypted, and verified without the identity.
	FramingOnly int  `json:"framing_only_objects"`
	OK          bool `json:"ok"`
}

// Problems lists every problem found.
func (r *Report) Problems() []Problem {
	var out []Problem
	for _, b := range r.Backups {
		out = append(out, b.Problems...)
	}
	return append(out, r.WALProblems...)
}

// Options configures Run.
type Options struct {
	BackupID string // "" : all complete backups
	Workers  int
	Progress progress.Reporter
}

// Run verifies the repository. An error means verification could not be
// carried out (the repository is unreachable); damage is reported in the
// Report, whose OK is false then.
func Run(ctx context.Context, r *repo.Repo, opts Options) (*Report, error) {
	if opts.Progress == nil {
		opts.Progress = progress.Nop{}
	}
	if opts.Workers < 1 {
		opts.Workers = 1
	}
	cat, err := catalog.Load(ctx, r)
	if err != nil {
		return nil, err
	}
	_, canRead := r.Encrypted()
	rep := &Report{Backups: []BackupReport{}, WALProblems: []Problem{}, ContentChecked: canRead}
	v := &verifier{r: r, canRead: canRead}
	found := false
	for _, m := range cat.Backups {
		if opts.BackupID != "" && m.ID != opts.BackupID {
			continue
		}
		found = true
		rep.Backups = append(rep.Backups, v.backup(ctx, m, cat, opts))
	}
	if opts.BackupID != "" && !found {
		return nil, fmt.Errorf("%w: %s", catalog.ErrNoSuchBackup, opts.BackupID)
	}
	// Every archived WAL file, read back in full.
	segSize := cat.Identity.WalSegSize
	objs := cat.WAL.Objects
	opts.Progress.Begin("verify WAL", int64(len(objs)))
	problems, err := check(ctx, len(objs), opts.Workers, func(ctx context.Context, i int) *Problem {
		defer opts.Progress.Advance(1)
		o := objs[i]
		if o.Stray {
			return &Problem{Object: o.Key.String(), Kind: "foreign", Detail: "not a WAL file name pgkeep writes"}
		}
		sum, err := v.object(ctx, o.Key)
		if p := problemOf(o.Key, err); p != nil {
			return p
		}
		if o.Kind == wal.KindSegment && uint64(sum.Size) != segSize {
			return &Problem{Object: o.Key.String(), Kind: "corrupt", Detail: fmt.Sprintf("segment is %d bytes, not %d", sum.Size, segSize)}
		}
		if o.Piece != nil && uint64(sum.Size) != o.Piece.Size() {
			return &Problem{Object: o.Key.String(), Kind: "corrupt", Detail: fmt.Sprintf("streamed piece holds %d bytes, its name says %d", sum.Size, o.Piece.Size())}
		}
		return nil
	})
	opts.Progress.End()
	if err != nil {
		return nil, err
	}
	rep.WALChecked = len(objs)
	rep.WALProblems = append(rep.WALProblems, problems...)
	rep.FramingOnly = int(v.framingOnly.Load())
	rep.OK = len(rep.Problems()) == 0
	return rep, nil
}

// verifier checks objects: in full when it can decrypt them, else their
// stored bytes.
type verifier struct {
	r           *repo.Repo
	canRead     bool
	framingOnly atomic.Int64
}

// object checks the object under key and returns its content's sum: read
// and decoded in full when this process can decrypt it; otherwise its
// stored bytes checked against their checksum (an older object without one
// counts as framing only).
func (v *verifier) object(ctx context.Context, key repo.Key) (envelope.Sum, error) {
	if !v.canRead {
		st, err := v.r.CheckStored(ctx, key)
		if err == nil && !st.Verified {
			v.framingOnly.Add(1)
		}
		return st.Content, err
	}
	var sum envelope.Sum
	err := v.r.ReadObject(ctx, key, func(rd io.Reader) error { _, err := io.Copy(io.Discard, rd); return err }, func(s envelope.Sum) { sum = s })
	return sum, err
}

// backup checks one backup's objects and the WAL from its start to the end
// of the archive.
func (v *verifier) backup(ctx context.Context, m *catalog.Manifest, cat *catalog.Catalog, opts Options) BackupReport {
	br := BackupReport{ID: m.ID, Problems: []Problem{}}
	type span struct {
		offset, size int64
		sum          string
		file         string
	}
	spans := map[int][]span{}
	for _, f := range m.Files {
		for _, p := range f.Pieces {
			spans[p.Object] = append(spans[p.Object], span{p.Offset, p.Size, p.XXH64, f.Path})
		}
	}
	what := "verify backup " + m.ID
	if m.Sealed {
		what += " (stored bytes)"
	}
	opts.Progress.Begin(what, m.Stored)
	problems, err := check(ctx, len(m.Objects), opts.Workers, func(ctx context.Context, i int) *Problem {
		o := m.Objects[i]
		key := repo.Data(m.ID, o.Seq)
		defer opts.Progress.Advance(o.Stored)
		if m.Sealed {
			// Without the key: the stored bytes, and the content sum the
			// trailer holds against the manifest's summary.
			sum, err := v.object(ctx, key)
			if p := problemOf(key, err); p != nil {
				return p
			}
			if sum.String() != o.XXH64 || sum.Size != o.Size {
				return &Problem{Object: key.String(), Kind: "corrupt", Detail: fmt.Sprintf("holds content %s (%d bytes), the manifest says %s (%d bytes)", sum, sum.Size, o.XXH64, o.Size)}
			}
			return nil
		}
		ss := spans[o.Seq]
		sort.Slice(ss, func(i, j int) bool { return ss[i].offset < ss[j].offset })
		var got envelope.Sum
		var pieceErr *Problem
		err := v.r.ReadObject(ctx, key, func(rd io.Reader) error {
			pieceErr = nil
			var pos int64
			for _, s := range ss {
				if s.offset > pos {
					if _, err := io.CopyN(io.Discard, rd, s.offset-pos); err != nil {
						return err
					}
				}
				h := envelope.NewHasher()
				if _, err := io.CopyN(h, rd, s.size); err != nil {
					return err
				}
				if h.Sum().String() != s.sum && pieceErr == nil {
					pieceErr = &Problem{Object: key.String(), Kind: "corrupt", Detail: fmt.Sprintf("bytes of %s do not match the manifest", s.file)}
				}
				pos = s.offset + s.size
			}
			return nil
		}, func(s envelope.Sum) { got = s })
		if p := problemOf(key, err); p != nil {
			return p
		}
		if got.String() != o.XXH64 || got.Size != o.Size {
			return &Problem{Object: key.String(), Kind: "corrupt", Detail: fmt.Sprintf("content checksum %s, the manifest says %s", got, o.XXH64)}
		}
		return pieceErr
	})
	opts.Progress.End()
	if err != nil {
		br.Problems = append(br.Problems, Problem{Object: repo.Manifest(m.ID).String(), Kind: "unreadable", Detail: err.Error()})
	}
	br.Objects = len(m.Objects)
	br.Bytes = m.Stored
	br.Problems = append(br.Problems, problems...)
	c := cat.WAL.ChainFrom(cat.Histories, m.Timeline, m.Start(), 0)
	br.WALFrom, br.WALTo = c.First, c.Last
	br.Problems = append(br.Problems, walProblems(c, m)...)
	return br
}

// walProblems checks the WAL from the backup's start to the end of the
// archive (the chain c), following timeline history as recovery does.
func walProblems(c catalog.Chain, m *catalog.Manifest) []Problem {
	var out []Problem
	switch {
	case c.Last == "":
		out = append(out, Problem{Object: repo.WAL(c.First).String(), Kind: "missing", Detail: "the backup's first WAL segment is not in the repository"})
	case c.End < m.Stop():
		out = append(out, Problem{Object: repo.WAL(c.Missing).String(), Kind: "missing",
			Detail: fmt.Sprintf("needed to make backup %s consistent (WAL %s..%s)", m.ID, m.StartWAL, m.StopWAL)})
	case c.Missing != "" && c.Hole != "":
		out = append(out, Problem{Object: repo.WAL(c.Missing).String(), Kind: "gap",
			Detail: fmt.Sprintf("%s: recovery from backup %s stops at %s, short of the newest archived segment %s (timeline %d)", c.Hole, m.ID, c.Last, c.Newest, c.Target)})
	case c.Missing != "":
		out = append(out, Problem{Object: repo.WAL(c.Missing).String(), Kind: "gap",
			Detail: fmt.Sprintf("missing (to %s): recovery from backup %s stops at %s, short of the newest archived segment %s (timeline %d)", c.MissingTo, m.ID, c.Last, c.Newest, c.Target)})
	}
	return out
}

// problemOf turns a read error into a Problem (nil for none).
func problemOf(key repo.Key, err error) *Problem {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, storage.ErrNotFound):
		return &Problem{Object: key.String(), Kind: "missing", Detail: "not in the repository"}
	case errors.Is(err, envelope.ErrCorrupt):
		return &Problem{Object: key.String(), Kind: "corrupt", Detail: err.Error()}
	default:
		return &Problem{Object: key.String(), Kind: "unreadable", Detail: err.Error()}
	}
}

// check runs fn for 0..n-1 with at most workers at once and collects the
// problems in index order. It fails only when ctx ends.
func check(ctx context.Context, n, workers int, fn func(context.Context, int) *Problem) ([]Problem, error) {
	out := make([]*Problem, n)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for i := range n {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			out[i] = fn(gctx, i)
			return nil
		})
	}
	g.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var ps []Problem
	for _, p := range out {
		if p != nil {
			ps = append(ps, *p)
		}
	}
	return ps, nil
}
