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
	"strings"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/progress"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/storage"
	"github.com/pgkeep/pgkeep/internal/wal"
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
	OK          bool           `json:"ok"`
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
	id, err := r.Identity(ctx)
	if err != nil {
		return nil, err
	}
	entries, err := catalog.Scan(ctx, r.Storage())
	if err != nil {
		return nil, err
	}
	rep := &Report{Backups: []BackupReport{}, WALProblems: []Problem{}}
	ix, err := catalog.ScanWAL(ctx, r.Storage(), id.WalSegSize)
	if err != nil {
		return nil, err
	}
	hist, err := catalog.LoadHistories(ctx, r, ix)
	if err != nil {
		return nil, err
	}
	found := false
	for _, e := range entries {
		if !e.Complete || (opts.BackupID != "" && e.ID != opts.BackupID) {
			continue
		}
		found = true
		rep.Backups = append(rep.Backups, verifyBackup(ctx, r, e.ID, ix, hist, opts))
	}
	if opts.BackupID != "" && !found {
		return nil, fmt.Errorf("%w: %s", catalog.ErrNoSuchBackup, opts.BackupID)
	}
	// Every archived WAL file, read back in full.
	var walKeys []string
	err = r.Storage().List(ctx, repo.WALPrefix, func(oi storage.ObjectInfo) error {
		walKeys = append(walKeys, oi.Key)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing WAL: %w", err)
	}
	opts.Progress.Begin("verify WAL", int64(len(walKeys)))
	problems := parallel(ctx, walKeys, opts.Workers, func(key string) *Problem {
		defer opts.Progress.Advance(1)
		name := key[strings.LastIndex(key, "/")+1:]
		if _, err := wal.Classify(name); err != nil {
			return &Problem{Object: key, Kind: "foreign", Detail: "not a WAL file name pgkeep writes"}
		}
		var sum envelope.Sum
		err := r.ReadObject(ctx, key, func(rd io.Reader) error { _, err := io.Copy(io.Discard, rd); return err }, func(s envelope.Sum) { sum = s })
		if p := problemOf(key, err); p != nil {
			return p
		}
		if k, _ := wal.Classify(name); k == wal.KindSegment && uint64(sum.Size) != id.WalSegSize {
			return &Problem{Object: key, Kind: "corrupt", Detail: fmt.Sprintf("segment is %d bytes, not %d", sum.Size, id.WalSegSize)}
		}
		return nil
	})
	opts.Progress.End()
	rep.WALChecked = len(walKeys)
	rep.WALProblems = append(rep.WALProblems, problems...)
	rep.OK = len(rep.Problems()) == 0
	return rep, nil
}

// verifyBackup checks one backup's objects and the WAL from its start to
// the end of the archive.
func verifyBackup(ctx context.Context, r *repo.Repo, id string, ix *catalog.WALIndex, hist catalog.Histories, opts Options) BackupReport {
	br := BackupReport{ID: id, Problems: []Problem{}}
	m, err := catalog.ReadManifest(ctx, r, id)
	if err != nil {
		br.Problems = append(br.Problems, *problemOf(catalog.ManifestKey(id), err))
		return br
	}
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
	seqs := make([]string, 0, len(m.Objects))
	byKey := map[string]catalog.Object{}
	for _, o := range m.Objects {
		k := catalog.DataKey(id, o.Seq)
		seqs = append(seqs, k)
		byKey[k] = o
	}
	opts.Progress.Begin("verify backup "+id, m.Stored)
	problems := parallel(ctx, seqs, opts.Workers, func(key string) *Problem {
		o := byKey[key]
		ss := spans[o.Seq]
		sort.Slice(ss, func(i, j int) bool { return ss[i].offset < ss[j].offset })
		var got envelope.Sum
		var pieceErr *Problem
		err := r.ReadObject(ctx, key, func(rd io.Reader) error {
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
					pieceErr = &Problem{Object: key, Kind: "corrupt", Detail: fmt.Sprintf("bytes of %s do not match the manifest", s.file)}
				}
				pos = s.offset + s.size
			}
			return nil
		}, func(s envelope.Sum) { got = s })
		opts.Progress.Advance(o.Stored)
		if p := problemOf(key, err); p != nil {
			return p
		}
		if got.String() != o.XXH64 || got.Size != o.Size {
			return &Problem{Object: key, Kind: "corrupt", Detail: fmt.Sprintf("content checksum %s, the manifest says %s", got, o.XXH64)}
		}
		return pieceErr
	})
	opts.Progress.End()
	br.Objects = len(seqs)
	br.Bytes = m.Stored
	br.Problems = append(br.Problems, problems...)

	// WAL from the backup's start to the end of the archive, following
	// timeline history as recovery does.
	c := ix.ChainFrom(hist, m.Timeline, m.Start())
	br.WALFrom, br.WALTo = c.First, c.Last
	switch {
	case c.Last == "":
		br.Problems = append(br.Problems, Problem{Object: repo.WALKey(c.First), Kind: "missing", Detail: "the backup's first WAL segment is not in the repository"})
	case c.End < m.Stop():
		br.Problems = append(br.Problems, Problem{Object: repo.WALKey(c.Missing), Kind: "missing",
			Detail: fmt.Sprintf("needed to make backup %s consistent (WAL %s..%s)", id, m.StartWAL, m.StopWAL)})
	case c.Missing != "":
		br.Problems = append(br.Problems, Problem{Object: repo.WALKey(c.Missing), Kind: "gap",
			Detail: fmt.Sprintf("missing: recovery from backup %s stops at %s, short of the newest archived segment %s (timeline %d)", id, c.Last, c.Newest, c.Target)})
	}
	return br
}

// problemOf turns a read error into a Problem (nil for none).
func problemOf(key string, err error) *Problem {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, storage.ErrNotFound):
		return &Problem{Object: key, Kind: "missing", Detail: "not in the repository"}
	case errors.Is(err, envelope.ErrCorrupt):
		return &Problem{Object: key, Kind: "corrupt", Detail: err.Error()}
	default:
		return &Problem{Object: key, Kind: "unreadable", Detail: err.Error()}
	}
}

// parallel runs check over keys with n workers and collects the problems
// in key order.
func parallel(ctx context.Context, keys []string, n int, check func(string) *Problem) []Problem {
	out := make([]*Problem, len(keys))
	next := make(chan int)
	done := make(chan struct{})
	for w := 0; w < n; w++ {
		go func() {
			for i := range next {
				out[i] = check(keys[i])
			}
			done <- struct{}{}
		}()
	}
	for i := range keys {
		if ctx.Err() != nil {
			break
		}
		next <- i
	}
	close(next)
	for w := 0; w < n; w++ {
		<-done
	}
	var ps []Problem
	for _, p := range out {
		if p != nil {
			ps = append(ps, *p)
		}
	}
	return ps
}
