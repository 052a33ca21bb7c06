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
	var chosen []*catalog.Manifest
	for _, m := range cat.Backups {
		if opts.BackupID == "" || m.ID == opts.BackupID {
			chosen = append(chosen, m)
		}
	}
	if opts.BackupID != "" && len(chosen) == 0 {
		return nil, fmt.Errorf("%w: %s", catalog.ErrNoSuchBackup, opts.BackupID)
	}
	byBackup, err := v.backups(ctx, chosen, cat, opts)
	if err != nil {
		return nil, err
	}
	for _, m := range chosen {
		rep.Backups = append(rep.Backups, byBackup[m.ID])
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

// use is one data object as the backups verified refer to it: a
// backup's own, or an earlier backup's an incremental one refers to.
type use struct {
	key    repo.Key
	obj    catalog.Object     // as the first manifest naming it describes it
	by     []string           // the backups that need it
	pieces []usedPiece        // what they say it holds
	bad    map[string]Problem // per backup: a description that disagrees
}

type usedPiece struct {
	piece catalog.Piece
	file  string
	by    string
}

// backups checks the objects of the backups ms, each object once however
// many backups of a chain refer to it, every piece any of them says it
// holds (chunk by chunk for the parts incremental backups refer to), and
// the WAL from each backup's start to the end of the archive.
func (v *verifier) backups(ctx context.Context, ms []*catalog.Manifest, cat *catalog.Catalog, opts Options) (map[string]BackupReport, error) {
	complete := map[string]bool{}
	for _, m := range cat.Backups {
		complete[m.ID] = true
	}
	reports := map[string]*BackupReport{}
	uses := map[catalog.ObjectRef]*use{}
	var order []catalog.ObjectRef
	for _, m := range ms {
		br := &BackupReport{ID: m.ID, Problems: []Problem{}}
		reports[m.ID] = br
		for _, dep := range m.DependsOn() {
			if !complete[dep] {
				br.Problems = append(br.Problems, Problem{Object: repo.Manifest(dep).String(), Kind: "missing",
					Detail: fmt.Sprintf("incremental backup %s depends on backup %s, which is not complete in the repository", m.ID, dep)})
			}
		}
		for _, o := range m.Objects {
			ref := catalog.ObjectRef{Backup: o.Backup, Seq: o.Seq}
			if ref.Backup == "" {
				ref.Backup = m.ID
			}
			u := uses[ref]
			if u == nil {
				u = &use{key: repo.Data(ref.Backup, ref.Seq), obj: o, bad: map[string]Problem{}}
				uses[ref] = u
				order = append(order, ref)
			} else if u.obj.Size != o.Size || u.obj.XXH64 != o.XXH64 {
				u.bad[m.ID] = Problem{Object: u.key.String(), Kind: "corrupt",
					Detail: fmt.Sprintf("the manifest of %s describes it as %s (%d bytes), another as %s (%d bytes)", m.ID, o.XXH64, o.Size, u.obj.XXH64, u.obj.Size)}
			}
			u.by = append(u.by, m.ID)
			br.Objects++
			br.Bytes += o.Stored
		}
		for _, f := range m.Files {
			for _, p := range f.Pieces {
				ref := catalog.ObjectRef{Backup: p.ObjectOf(m.ID), Seq: p.Object}
				if u := uses[ref]; u != nil {
					u.pieces = append(u.pieces, usedPiece{p, f.Path, m.ID})
				}
			}
		}
	}
	var total int64
	for _, ref := range order {
		total += uses[ref].obj.Stored
	}
	opts.Progress.Begin("verify backups", total)
	problems := make([]map[string]Problem, len(order))
	_, err := check(ctx, len(order), opts.Workers, func(ctx context.Context, i int) *Problem {
		u := uses[order[i]]
		defer opts.Progress.Advance(u.obj.Stored)
		problems[i] = v.use(ctx, u)
		return nil
	})
	opts.Progress.End()
	if err != nil {
		return nil, err
	}
	for i, ref := range order {
		u := uses[ref]
		for _, id := range u.by {
			if p, ok := u.bad[id]; ok {
				reports[id].Problems = append(reports[id].Problems, p)
			} else if p, ok := problems[i][id]; ok {
				reports[id].Problems = append(reports[id].Problems, p)
			}
		}
	}
	out := map[string]BackupReport{}
	for _, m := range ms {
		br := reports[m.ID]
		c := cat.WAL.ChainFrom(cat.Histories, m.Timeline, m.Start(), 0)
		br.WALFrom, br.WALTo = c.First, c.Last
		br.Problems = append(br.Problems, walProblems(c, m)...)
		out[m.ID] = *br
	}
	return out, nil
}

// use checks one object and the pieces the backups say it holds, and
// returns the problem each backup that needs it has (none: empty).
func (v *verifier) use(ctx context.Context, u *use) map[string]Problem {
	out := map[string]Problem{}
	all := func(p *Problem) map[string]Problem {
		for _, id := range u.by {
			out[id] = *p
		}
		return out
	}
	if !v.canRead || len(u.pieces) == 0 {
		// Without the key (or the contents): the stored bytes, and the
		// content sum the trailer holds against the manifest's summary.
		sum, err := v.object(ctx, u.key)
		if p := problemOf(u.key, err); p != nil {
			return all(p)
		}
		if sum.String() != u.obj.XXH64 || sum.Size != u.obj.Size {
			return all(&Problem{Object: u.key.String(), Kind: "corrupt", Detail: fmt.Sprintf("holds content %s (%d bytes), the manifest says %s (%d bytes)", sum, sum.Size, u.obj.XXH64, u.obj.Size)})
		}
		return out
	}
	ps := u.pieces
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].piece.Offset < ps[j].piece.Offset })
	var got envelope.Sum
	err := v.r.ReadObject(ctx, u.key, func(rd io.Reader) error {
		clear(out)
		// Pieces of different backups may overlap (an incremental one
		// refers to part of its parent's piece): read the object once,
		// keeping what the pieces still to be checked need.
		var buf []byte
		var bufAt int64 // object offset of buf[0]
		for _, up := range ps {
			p := up.piece
			end := p.Offset + p.Size
			if have := bufAt + int64(len(buf)); end > have {
				if p.Offset > have {
					if _, err := io.CopyN(io.Discard, rd, p.Offset-have); err != nil {
						return err
					}
					buf, bufAt = buf[:0], p.Offset
				} else {
					buf = buf[p.Offset-bufAt:]
					bufAt = p.Offset
				}
				more := make([]byte, end-(bufAt+int64(len(buf))))
				if _, err := io.ReadFull(rd, more); err != nil {
					return err
				}
				buf = append(buf, more...)
			}
			if p.Offset < bufAt {
				return fmt.Errorf("%w: pieces out of order", envelope.ErrCorrupt)
			}
			check := catalog.NewPieceCheck(p)
			check.Write(buf[p.Offset-bufAt : end-bufAt])
			if err := check.Verify(); err != nil {
				if _, seen := out[up.by]; !seen {
					out[up.by] = Problem{Object: u.key.String(), Kind: "corrupt", Detail: fmt.Sprintf("bytes of %s at %d: %v", up.file, p.FileOffset, err)}
				}
			}
		}
		_, err := io.Copy(io.Discard, rd)
		return err
	}, func(s envelope.Sum) { got = s })
	if p := problemOf(u.key, err); p != nil {
		return all(p)
	}
	if got.String() != u.obj.XXH64 || got.Size != u.obj.Size {
		return all(&Problem{Object: u.key.String(), Kind: "corrupt", Detail: fmt.Sprintf("content checksum %s, the manifest says %s", got, u.obj.XXH64)})
	}
	return out
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
