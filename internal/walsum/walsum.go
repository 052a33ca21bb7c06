// Package walsum keeps WAL summaries: for a stretch of WAL, which blocks of
// which relation forks its records touch, which forks were created,
// truncated or dropped (a "limit block": from there on, every block of the
// fork changed), and which databases were created or dropped as a whole.
// An incremental backup reads only the blocks the summaries of the WAL
// since its parent's start say changed.
//
// The rules follow PostgreSQL 17's WAL summarizer
// (src/backend/postmaster/walsummarizer.c) and the records of 12 to 18:
//   - every block reference of every record (relation, fork, block);
//   - XLOG_SMGR_CREATE: the fork was created: limit block 0;
//   - XLOG_SMGR_TRUNCATE: the main fork from blkno on; the FSM and VM forks
//     from 0 (pgkeep does not work out their exact truncation points);
//   - commit and abort records that drop relations (xl_xact_relfilelocators):
//     every fork of each, from 0;
//   - XLOG_DBASE_CREATE (12 to 14), XLOG_DBASE_CREATE_FILE_COPY and
//     XLOG_DBASE_CREATE_WAL_LOG (15 and later), XLOG_DBASE_DROP: the database
//     as a whole, in each tablespace named.
//
// The free space map is not WAL-logged reliably, so incremental backups
// copy FSM forks whole whatever the summaries say (package backup).
package walsum

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/pgkeep/pgkeep/internal/wal"
	"github.com/pgkeep/pgkeep/internal/walrec"
)

// Fork numbers (common/relpath.h).
const (
	MainFork = 0
	FSMFork  = 1
	VMFork   = 2
	InitFork = 3
)

// NoLimit is the limit block of a fork that was neither created, truncated
// nor dropped (InvalidBlockNumber).
const NoLimit = ^uint32(0)

// RelFork names one fork of a relation's storage.
type RelFork struct {
	SpcOID, DBOID, RelNumber uint32
	Fork                     uint8
}

// DB names a database in a tablespace.
type DB struct{ SpcOID, DBOID uint32 }

// Changes is what the WAL did to one fork.
type Changes struct {
	// Limit is the lowest block from which on every block is to be taken
	// as changed (created, truncated, dropped), NoLimit when none.
	Limit  uint32
	blocks []uint32 // sorted, unique
}

// Blocks returns the changed blocks below Limit, sorted.
func (c *Changes) Blocks() []uint32 {
	n, _ := slices.BinarySearch(c.blocks, c.Limit)
	return c.blocks[:n]
}

// Changed reports whether block b changed.
func (c *Changes) Changed(b uint32) bool {
	if b >= c.Limit {
		return true
	}
	_, ok := slices.BinarySearch(c.blocks, b)
	return ok
}

// AnyIn reports whether any of the n blocks from first on changed.
func (c *Changes) AnyIn(first, n uint32) bool {
	if n == 0 {
		return false
	}
	if uint64(first)+uint64(n) > uint64(c.Limit) {
		return true
	}
	i, _ := slices.BinarySearch(c.blocks, first)
	return i < len(c.blocks) && c.blocks[i] < first+n
}

// union merges two sorted unique block lists.
func union(a, b []uint32) []uint32 {
	if len(a) == 0 {
		return b
	}
	if len(b) == 0 {
		return a
	}
	out := make([]uint32, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch {
		case a[i] < b[j]:
			out = append(out, a[i])
			i++
		case a[i] > b[j]:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i, j = i+1, j+1
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

// Summary is what a stretch of WAL changed.
type Summary struct {
	Rels map[RelFork]*Changes
	DBs  map[DB]bool // created or dropped as a whole
	// Complete is false when some record could not be read to its block
	// references (its headers cut at the end of the WAL at hand): the
	// summary then does not say everything that changed.
	Complete bool
	// Tail is the start of that record, as far as the segment holds it
	// (at most JoinCap bytes), when the summary is incomplete; Head is the
	// start of the continuation of the previous segment's last record that
	// this segment begins with (at most JoinCap bytes) and HeadLen that
	// continuation's whole length. Join puts the two together.
	Tail    []byte
	Head    []byte
	HeadLen int
}

// JoinCap bounds the bytes a summary keeps of a record cut at either end
// of its segment: record headers and the main data of the records that
// matter (commits dropping relations, smgr and dbase records) fit.
const JoinCap = 1 << 20

// Join completes s, the summary of one segment, with next, the summary of
// the segment that follows it: the record cut at the end of s continues
// at the start of next. It reports whether s is now complete.
func (s *Summary) Join(next *Summary, major int) bool {
	if s.Complete {
		return true
	}
	if len(s.Tail) < 4 || len(s.Tail) >= JoinCap {
		return false // no tail, or only the first JoinCap bytes of it
	}
	total := int(binary.LittleEndian.Uint32(s.Tail))
	if next.HeadLen != total-len(s.Tail) {
		return false // next does not continue this record
	}
	raw := append(append([]byte(nil), s.Tail...), next.Head[:min(len(next.Head), next.HeadLen)]...)
	if len(raw) < 24 {
		return false
	}
	rec := &walrec.Record{Raw: raw, XID: binary.LittleEndian.Uint32(raw[4:]), Info: raw[16], RmID: raw[17]}
	z := NewSummarizer(major)
	if len(raw) == total {
		if err := z.Record(rec); err != nil {
			return false
		}
	} else {
		z.Partial(rec)
	}
	part := z.Summary()
	if !part.Complete {
		return false
	}
	s.Merge(part)
	s.Complete, s.Tail = true, nil
	return true
}

// New returns an empty, complete summary.
func New() *Summary {
	return &Summary{Rels: map[RelFork]*Changes{}, DBs: map[DB]bool{}, Complete: true}
}

func (s *Summary) fork(r RelFork) *Changes {
	c := s.Rels[r]
	if c == nil {
		c = &Changes{Limit: NoLimit}
		s.Rels[r] = c
	}
	return c
}

// AddBlock records a change to block b of r (for many blocks, a
// Summarizer is faster).
func (s *Summary) AddBlock(r RelFork, b uint32) {
	c := s.fork(r)
	c.blocks = union(c.blocks, []uint32{b})
}

// SetLimit records that every block of r from b on changed.
func (s *Summary) SetLimit(r RelFork, b uint32) {
	c := s.fork(r)
	c.Limit = min(c.Limit, b)
}

// Merge adds what o changed.
func (s *Summary) Merge(o *Summary) {
	for r, c := range o.Rels {
		m := s.fork(r)
		m.Limit = min(m.Limit, c.Limit)
		m.blocks = union(m.blocks, c.blocks)
	}
	for d := range o.DBs {
		s.DBs[d] = true
	}
	s.Complete = s.Complete && o.Complete
}

// Lookup returns what changed in r (nil: nothing), and whether r's
// database was created or dropped as a whole.
func (s *Summary) Lookup(r RelFork) (c *Changes, wholeDB bool) {
	return s.Rels[r], s.DBs[DB{r.SpcOID, r.DBOID}]
}

// Resource managers and records the summary reads besides block references.
const (
	rmSmgr  = 2
	rmDbase = 4

	smgrCreate   = 0x10
	smgrTruncate = 0x20

	smgrTruncateHeap = 0x0001
	smgrTruncateVM   = 0x0002
	smgrTruncateFSM  = 0x0004

	xactHasInfo       = 0x80
	xinfoHasDBInfo    = 1 << 0
	xinfoHasSubxacts  = 1 << 1
	xinfoHasRelFiles  = 1 << 2
	xactOpMask        = 0x70
	xactCommit        = 0x00
	xactAbort         = 0x20
	xactCommitPrepare = 0x30
	xactAbortPrepare  = 0x40
)

// Summarizer builds a summary from records as a walrec.Parser reads them.
// Block references are gathered in a list and sorted once (Summary): a
// segment has hundreds of thousands of them.
type Summarizer struct {
	S       *Summary
	p       *walrec.Parser
	major   int
	d       walrec.Decoded // reused for every record
	pending map[RelFork]*[]uint32
	recent  [8]recentFork
	next    int
	scratch []uint32 // sortBlocks's
}

// NewSummarizer returns a summarizer of the records of PostgreSQL major.
func NewSummarizer(major int) *Summarizer {
	return &Summarizer{S: New(), major: major, pending: map[RelFork]*[]uint32{}}
}

// Record adds what one record changed.
func (z *Summarizer) Record(rec *walrec.Record) error {
	if err := walrec.DecodeInto(rec, z.major, &z.d); err != nil {
		return err
	}
	z.add(rec, &z.d)
	return nil
}

func (z *Summarizer) block(r RelFork, b uint32) {
	// Records touch a few forks in turn (a table, its indexes, its
	// visibility map): the last ones are looked up without the map.
	var p *[]uint32
	for i := range z.recent {
		if z.recent[i].p != nil && z.recent[i].r == r {
			p = z.recent[i].p
			break
		}
	}
	if p == nil {
		if p = z.pending[r]; p == nil {
			p = new([]uint32)
			z.pending[r] = p
		}
		z.recent[z.next] = recentFork{r, p}
		z.next = (z.next + 1) % len(z.recent)
	}
	if n := len(*p); n > 0 && (*p)[n-1] == b {
		return // the same block as the record before: common
	}
	*p = append(*p, b)
}

// sortBlocks sorts block numbers: a radix sort for long lists, which a
// segment of random updates has by the hundred thousand, where a
// comparison sort was a quarter of summarizing. Three passes of 11 bits
// (count tables that stay in the L1 cache), a pass skipped when every
// number has the same digit there (block numbers rarely reach 2^22, so
// the top pass usually goes); scratch is reused and returned, grown.
func sortBlocks(b, scratch []uint32) []uint32 {
	if len(b) < 256 {
		slices.Sort(b)
		return scratch
	}
	if cap(scratch) < len(b) {
		scratch = make([]uint32, len(b))
	}
	src, dst := b, scratch[:len(b)]
	for shift := 0; shift < 32; shift += 11 {
		var count [1 << 11]int
		for _, v := range src {
			count[v>>shift&0x7FF]++
		}
		if count[src[0]>>shift&0x7FF] == len(src) {
			continue // one digit for all: the order stands
		}
		pos := 0
		for i, c := range count {
			count[i] = pos
			pos += c
		}
		for _, v := range src {
			k := v >> shift & 0x7FF
			dst[count[k]] = v
			count[k]++
		}
		src, dst = dst, src
	}
	if &src[0] != &b[0] {
		copy(b, src)
	}
	return scratch
}

// recentFork is a fork the Summarizer met lately, and its pending blocks.
type recentFork struct {
	r RelFork
	p *[]uint32
}

// Parser returns a parser of the segment starting at start that feeds z;
// Finish ends it.
func (z *Summarizer) Parser(start wal.LSN) *walrec.Parser {
	z.p = walrec.NewParser(start, z.Record)
	z.p.KeepHead(JoinCap)
	return z.p
}

// Finish ends the walk of z's parser and returns the summary of the
// segment, with its cut ends kept for Join.
func (z *Summarizer) Finish() (*Summary, error) {
	_, partial, err := z.p.Close()
	if err != nil {
		return nil, err
	}
	if partial != nil {
		z.Partial(partial)
	}
	head, n := z.p.Head()
	z.S.Head, z.S.HeadLen = append([]byte(nil), head...), n
	return z.Summary(), nil
}

// Summary returns what the records seen changed.
func (z *Summarizer) Summary() *Summary {
	for r, p := range z.pending {
		blocks := *p
		if !slices.IsSorted(blocks) {
			z.scratch = sortBlocks(blocks, z.scratch)
		}
		c := z.S.fork(r)
		c.blocks = union(c.blocks, slices.Compact(blocks))
	}
	z.pending, z.recent, z.next = map[RelFork]*[]uint32{}, [8]recentFork{}, 0
	return z.S
}

// Partial adds what the record cut off at the end of the WAL at hand
// changed, as far as its headers are there; when they are not, the
// summary is marked incomplete.
func (z *Summarizer) Partial(rec *walrec.Record) {
	d, complete, err := walrec.DecodePrefix(rec, z.major)
	if err != nil || !complete {
		z.S.Complete = false
	}
	if d != nil {
		for _, b := range d.Blocks {
			z.block(RelFork{b.Rel.SpcOID, b.Rel.DBOID, b.Rel.RelNumber, b.Fork}, b.Block)
		}
	}
	// A record whose main data is cut (an smgr, dbase or xact record)
	// cannot be read for what else it did: such records are small, so
	// this is rare; say the summary is incomplete.
	if rec.RmID == rmSmgr || rec.RmID == rmDbase || rec.RmID == walrec.RmXact {
		z.S.Complete = false
	}
	if !z.S.Complete {
		z.S.Tail = append([]byte(nil), rec.Raw[:min(len(rec.Raw), JoinCap)]...)
	}
}

func (z *Summarizer) add(rec *walrec.Record, d *walrec.Decoded) {
	s := z.S
	for _, b := range d.Blocks {
		z.block(RelFork{b.Rel.SpcOID, b.Rel.DBOID, b.Rel.RelNumber, b.Fork}, b.Block)
	}
	le := binary.LittleEndian
	data := d.MainData
	info := rec.Info & 0xF0
	switch rec.RmID {
	case rmSmgr:
		switch info {
		case smgrCreate: // xl_smgr_create: RelFileLocator, ForkNumber
			if len(data) >= 16 {
				s.SetLimit(RelFork{le.Uint32(data), le.Uint32(data[4:]), le.Uint32(data[8:]), uint8(le.Uint32(data[12:]))}, 0)
			}
		case smgrTruncate: // xl_smgr_truncate: BlockNumber, RelFileLocator, int flags
			if len(data) >= 20 {
				blk := le.Uint32(data)
				spc, db, rel, flags := le.Uint32(data[4:]), le.Uint32(data[8:]), le.Uint32(data[12:]), le.Uint32(data[16:])
				if flags&smgrTruncateHeap != 0 {
					s.SetLimit(RelFork{spc, db, rel, MainFork}, blk)
				}
				if flags&smgrTruncateVM != 0 {
					s.SetLimit(RelFork{spc, db, rel, VMFork}, 0)
				}
				if flags&smgrTruncateFSM != 0 {
					s.SetLimit(RelFork{spc, db, rel, FSMFork}, 0)
				}
			}
		}
	case rmDbase:
		z.dbase(info, data)
	case walrec.RmXact:
		switch rec.Info & xactOpMask {
		case xactCommit, xactAbort, xactCommitPrepare, xactAbortPrepare:
			z.droppedRels(rec.Info, data)
		}
	}
}

// dbase reads the database records: creation (12 to 14: XLOG_DBASE_CREATE
// 0x00 and XLOG_DBASE_DROP 0x10; 15 on: CREATE_FILE_COPY 0x00,
// CREATE_WAL_LOG 0x10, DROP 0x20).
func (z *Summarizer) dbase(info uint8, data []byte) {
	le := binary.LittleEndian
	create := info == 0x00 || z.major >= 15 && info == 0x10
	drop := z.major < 15 && info == 0x10 || z.major >= 15 && info == 0x20
	switch {
	case create && len(data) >= 8: // db_id, tablespace_id, ...
		z.S.DBs[DB{SpcOID: le.Uint32(data[4:]), DBOID: le.Uint32(data)}] = true
	case drop && len(data) >= 8: // db_id, ntablespaces, tablespace_ids[]
		db, n := le.Uint32(data), int(le.Uint32(data[4:]))
		for i := 0; i < n && 8+4*i+4 <= len(data); i++ {
			z.S.DBs[DB{SpcOID: le.Uint32(data[8+4*i:]), DBOID: db}] = true
		}
	}
}

// droppedRels reads the relations a commit or abort drops
// (xl_xact_commit/abort: xact_time, then with XLOG_XACT_HAS_INFO an xinfo
// word and, in that order, dbinfo, subxacts and relfilelocators).
func (z *Summarizer) droppedRels(info uint8, data []byte) {
	if info&xactHasInfo == 0 || len(data) < 12 {
		return
	}
	le := binary.LittleEndian
	xinfo := le.Uint32(data[8:])
	pos := 12
	if xinfo&xinfoHasDBInfo != 0 {
		pos += 8
	}
	if xinfo&xinfoHasSubxacts != 0 {
		if pos+4 > len(data) {
			return
		}
		pos += 4 + 4*int(le.Uint32(data[pos:]))
	}
	if xinfo&xinfoHasRelFiles == 0 || pos+4 > len(data) {
		return
	}
	n := int(le.Uint32(data[pos:]))
	pos += 4
	for i := 0; i < n && pos+12 <= len(data); i++ {
		spc, db, rel := le.Uint32(data[pos:]), le.Uint32(data[pos+4:]), le.Uint32(data[pos+8:])
		for f := uint8(MainFork); f <= InitFork; f++ {
			z.S.SetLimit(RelFork{spc, db, rel, f}, 0)
		}
		pos += 12
	}
}

// Segment summarizes one segment's content (from its first byte), as
// written by PostgreSQL major.
func Segment(data []byte, start wal.LSN, major int) (*Summary, error) {
	z := NewSummarizer(major)
	z.Parser(start).Write(data)
	return z.Finish()
}

// Encoding: "PGKSUM" version 1, flags (bit 0: complete), then the
// databases and the forks, sorted, as varints: count; per database spc,
// db; per fork spc, db, rel, fork, limit+1 (0: no limit), block count and
// the block numbers as deltas; then the tail (length, bytes), the head's
// whole length and the head (length, bytes).

var magic = []byte("PGKSUM\x01")

// Encode renders s deterministically (the same summary gives the same
// bytes, so a summary pushed twice is identical content).
func (s *Summary) Encode() []byte {
	var b bytes.Buffer
	b.Write(magic)
	flags := byte(0)
	if s.Complete {
		flags |= 1
	}
	b.WriteByte(flags)
	put := func(v uint64) { b.Write(binary.AppendUvarint(nil, v)) }
	dbs := make([]DB, 0, len(s.DBs))
	for d := range s.DBs {
		dbs = append(dbs, d)
	}
	sort.Slice(dbs, func(i, j int) bool {
		return dbs[i].SpcOID < dbs[j].SpcOID || dbs[i].SpcOID == dbs[j].SpcOID && dbs[i].DBOID < dbs[j].DBOID
	})
	put(uint64(len(dbs)))
	for _, d := range dbs {
		put(uint64(d.SpcOID))
		put(uint64(d.DBOID))
	}
	rels := make([]RelFork, 0, len(s.Rels))
	for r := range s.Rels {
		rels = append(rels, r)
	}
	sort.Slice(rels, func(i, j int) bool { return lessRel(rels[i], rels[j]) })
	put(uint64(len(rels)))
	for _, r := range rels {
		c := s.Rels[r]
		put(uint64(r.SpcOID))
		put(uint64(r.DBOID))
		put(uint64(r.RelNumber))
		put(uint64(r.Fork))
		if c.Limit == NoLimit {
			put(0)
		} else {
			put(uint64(c.Limit) + 1)
		}
		blocks := c.Blocks()
		put(uint64(len(blocks)))
		prev := uint32(0)
		for _, blk := range blocks {
			put(uint64(blk - prev))
			prev = blk
		}
	}
	put(uint64(len(s.Tail)))
	b.Write(s.Tail)
	put(uint64(s.HeadLen))
	put(uint64(len(s.Head)))
	b.Write(s.Head)
	return b.Bytes()
}

func lessRel(a, b RelFork) bool {
	if a.SpcOID != b.SpcOID {
		return a.SpcOID < b.SpcOID
	}
	if a.DBOID != b.DBOID {
		return a.DBOID < b.DBOID
	}
	if a.RelNumber != b.RelNumber {
		return a.RelNumber < b.RelNumber
	}
	return a.Fork < b.Fork
}

// ErrFormat means bytes are not a summary this pgkeep reads.
var ErrFormat = errors.New("not a WAL summary pgkeep reads")

// Decode parses what Encode wrote.
func Decode(data []byte) (*Summary, error) {
	if !bytes.HasPrefix(data, magic) || len(data) < len(magic)+1 {
		return nil, ErrFormat
	}
	s := New()
	s.Complete = data[len(magic)]&1 != 0
	r := bytes.NewReader(data[len(magic)+1:])
	var bad error
	get := func() uint64 {
		v, err := binary.ReadUvarint(r)
		if err != nil && bad == nil {
			bad = fmt.Errorf("%w: cut short", ErrFormat)
		}
		return v
	}
	small := func(v uint64) uint32 {
		if v > uint64(^uint32(0)) && bad == nil {
			bad = fmt.Errorf("%w: value out of range", ErrFormat)
		}
		return uint32(v)
	}
	n := get()
	for i := uint64(0); i < n && bad == nil; i++ {
		s.DBs[DB{SpcOID: small(get()), DBOID: small(get())}] = true
	}
	n = get()
	for i := uint64(0); i < n && bad == nil; i++ {
		rf := RelFork{SpcOID: small(get()), DBOID: small(get()), RelNumber: small(get())}
		f := get()
		if f > InitFork && bad == nil {
			bad = fmt.Errorf("%w: fork %d", ErrFormat, f)
		}
		rf.Fork = uint8(f)
		c := s.fork(rf)
		if l := get(); l != 0 {
			c.Limit = small(l - 1)
		}
		blk := uint32(0)
		m := get()
		if m > uint64(r.Len()) && bad == nil {
			bad = fmt.Errorf("%w: %d blocks in %d bytes", ErrFormat, m, r.Len())
		}
		for k := uint64(0); k < m && bad == nil; k++ {
			d := small(get())
			if k > 0 && d == 0 && bad == nil {
				bad = fmt.Errorf("%w: a block twice", ErrFormat)
			}
			blk += d
			c.blocks = append(c.blocks, blk)
		}
	}
	bytesOf := func() []byte {
		n := get()
		if n > uint64(r.Len()) || n > JoinCap {
			if bad == nil {
				bad = fmt.Errorf("%w: %d bytes of a cut record in %d", ErrFormat, n, r.Len())
			}
			return nil
		}
		out := make([]byte, n)
		r.Read(out)
		return out
	}
	if bad == nil {
		s.Tail = bytesOf()
		s.HeadLen = int(small(get()))
		s.Head = bytesOf()
	}
	if len(s.Tail) == 0 {
		s.Tail = nil
	}
	if len(s.Head) == 0 {
		s.Head = nil
	}
	if bad != nil {
		return nil, bad
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the end", ErrFormat, r.Len())
	}
	return s, nil
}
