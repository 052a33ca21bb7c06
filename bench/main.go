// Command bench runs pgkeep and pgBackRest side by side on one cluster, with
// the same number of workers, and prints the ratio pgkeep/pgBackRest for
// each figure: full backup time, peak RSS and stored size; restore time and
// peak RSS; recovery to the end of the archive; and the time to drain a
// backlog of WAL segments. It also times PostgreSQL's replay with the WAL
// already on local disk, to show what fetching adds to recovery.
//
// Each comparison runs several times (alternating which tool goes first)
// and the table shows medians, each figure against its target from the
// product brief. Results, every run's included, are also written as JSON.
// In each run, pgkeep verify re-reads pgkeep's repository, and every
// segment of pgkeep's drain is fetched back: what was reported archived
// must be there.
//
//	go run ./bench -pgkeep bin/pgkeep -scale 20 -runs 3
//	go run ./bench -pgkeep bin/pgkeep -only incremental -scale 100 -noise=false -storage file
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pgkeep/pgkeep/internal/miniosrv"
	"github.com/pgkeep/pgkeep/internal/pgctl"
	"github.com/pgkeep/pgkeep/internal/walarchive"
)

type measure struct {
	Seconds float64 `json:"seconds"`
	RSSMiB  float64 `json:"peak_rss_mib,omitempty"`
	Stored  int64   `json:"stored_bytes,omitempty"`
	// Segments is how many WAL segments a drain archived.
	Segments int `json:"segments,omitempty"`
	// CPUSeconds is the machine's busy CPU time during a drain (every
	// process: the tool, PostgreSQL's archiver, the shell it runs).
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
}

// busyCPU is the machine's CPU time spent not idle since boot, in
// seconds (from /proc/stat; 0 where it cannot be read).
func busyCPU() float64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	var busy float64
	for i, v := range f[1:] {
		n, _ := strconv.ParseFloat(v, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy / 100 // USER_HZ
}

// segmentsPerSec is a drain's rate.
func (m measure) segmentsPerSec() float64 {
	if m.Seconds == 0 {
		return 0
	}
	return float64(m.Segments) / m.Seconds
}

// mibPerSec is a drain's rate in MiB of segment files (16 MiB each).
func (m measure) mibPerSec() float64 { return m.segmentsPerSec() * 16 }

type comparison struct {
	Name    string `json:"name"`
	Storage string `json:"storage"`
	PgkeepC string `json:"pgkeep_compression"`
	PeerC   string `json:"pgbackrest_compression"`
	Runs    int    `json:"runs"`
	// Pgkeep and Peer hold the median of each figure over the runs.
	Pgkeep map[string]measure `json:"pgkeep"`
	Peer   map[string]measure `json:"pgbackrest"`
	// Samples holds every run's figures, pgkeep's and pgBackRest's.
	Samples []runResult `json:"samples"`
	// Table is what printTable shows, with each target's verdict.
	Table []row `json:"table"`
}

// runResult is one run of a comparison.
type runResult struct {
	Pgkeep map[string]measure `json:"pgkeep"`
	Peer   map[string]measure `json:"pgbackrest"`
}

type bench struct {
	r       *pgctl.Runner
	ws      string
	pgkeep  string
	workers int
	c       *pgctl.Cluster
	s3      *miniosrv.Server
	caFile  string // the MinIO certificate, readable by the postgres user
	noLoop  bool   // no loop-mounted file systems here: restore into directories
	// replayRows is how many rows the bulk load before the restores
	// inserts, for WAL to replay (about 150 bytes of WAL each).
	replayRows int
	// pushArgs are extra wal-push flags for the drain measurement.
	pushArgs string
	// drainOnly skips everything but the drains; noDrain skips them.
	drainOnly, noDrain bool
	// expectRows is what a recovered cluster must hold: the primary's
	// row counts at the end of the archive.
	expectRows string
}

func main() {
	scale := flag.Int("scale", 20, "pgbench scale factor (15 MiB each) plus an equal share of less compressible data")
	pgkeepBin := flag.String("pgkeep", "bin/pgkeep", "pgkeep binary")
	workers := flag.Int("workers", 2, "workers for both tools (pgkeep --workers, pgBackRest process-max)")
	segments := flag.Int("wal-backlog", 40, "WAL segments in each drain backlog (full segments of table work, and switched ones)")
	replayRows := flag.Int("replay-rows", 3000000, "rows bulk-loaded after the backups, for WAL to replay in the recovery measurement (about 150 bytes of WAL each)")
	outDir := flag.String("out", "bench/results", "directory for the JSON results")
	keep := flag.Bool("keep", false, "keep the workspace")
	storages := flag.String("storage", "file,s3", "repositories to compare on: file, s3 (MinIO over TLS), or both")
	pushArgs := flag.String("pgkeep-push-args", "", "extra flags for pgkeep wal-push (e.g. --look-ahead=0)")
	headlineC := flag.String("pgkeep-compression", "", "pgkeep compression in the headline comparison (default: pgkeep's default)")
	runs := flag.Int("runs", 3, "runs of each comparison; the table shows medians (runs alternate which tool goes first)")
	only := flag.String("only", "", "run only the comparisons whose name contains this (e.g. headline, zstd, incremental)")
	skip := flag.String("skip", "", "skip the comparisons whose name contains this")
	drainOnly := flag.Bool("drain-only", false, "measure only the WAL drains (for work on archiving)")
	noDrain := flag.Bool("no-drain", false, "skip the WAL drains (for work on backup and restore)")
	noise := flag.Bool("noise", true, "also load a less compressible table of scale x 100000 rows (the incremental comparison wants pgbench alone: -noise=false)")
	flag.Parse()
	if *runs < 1 {
		fmt.Fprintln(os.Stderr, "bench: -runs must be at least 1")
		os.Exit(2)
	}
	o := options{scale: *scale, pgkeepBin: *pgkeepBin, workers: *workers, segments: *segments, runs: *runs, replayRows: *replayRows,
		outDir: *outDir, keep: *keep, headlineC: *headlineC, only: *only, pushArgs: *pushArgs, storages: strings.Split(*storages, ","), noise: *noise, skip: *skip, drainOnly: *drainOnly, noDrain: *noDrain}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// options are the command line's settings.
type options struct {
	scale, workers, segments, runs, replayRows   int
	pgkeepBin, outDir, headlineC, only, pushArgs string
	skip                                         string
	keep, noise, drainOnly, noDrain              bool
	storages                                     []string
}

func run(o options) error {
	ctx := context.Background()
	r, err := pgctl.New()
	if err != nil {
		return err
	}
	if _, err := exec.LookPath("pgbackrest"); err != nil {
		return fmt.Errorf("pgbackrest is not installed (apt-get install pgbackrest)")
	}
	ws, err := os.MkdirTemp("", "pgkeep-bench-")
	if err != nil {
		return err
	}
	if !o.keep {
		defer os.RemoveAll(ws)
	}
	os.Chmod(ws, 0o755)
	r.Chown(ws)
	b := &bench{r: r, ws: ws, workers: o.workers, replayRows: o.replayRows, pushArgs: o.pushArgs, drainOnly: o.drainOnly, noDrain: o.noDrain}
	b.pgkeep = filepath.Join(ws, "pgkeep")
	if err := copyFile(o.pgkeepBin, b.pgkeep); err != nil {
		return fmt.Errorf("copying pgkeep: %w", err)
	}
	fmt.Printf("bench: workspace %s, scale %d, %d workers, %d runs of each comparison\n", ws, o.scale, o.workers, o.runs)
	for _, st := range o.storages {
		if st != "s3" {
			continue
		}
		bin, err := miniosrv.Binary()
		if err != nil {
			return err
		}
		// pgBackRest speaks only TLS to S3: MinIO with a self-signed
		// certificate, trusted by both tools through a CA file.
		if b.s3, err = miniosrv.Start(bin, true); err != nil {
			return err
		}
		defer b.s3.Stop()
		b.caFile = filepath.Join(ws, "minio-ca.pem")
		if err := copyFile(b.s3.CAFile, b.caFile); err != nil {
			return err
		}
		// Every process the bench starts, PostgreSQL's archiver and
		// recovery included, finds the credentials in its environment.
		os.Setenv("AWS_ACCESS_KEY_ID", b.s3.AccessKey)
		os.Setenv("AWS_SECRET_ACCESS_KEY", b.s3.SecretKey)
	}
	if err := b.setupCluster(ctx, o.scale, o.noise); err != nil {
		return err
	}
	defer b.c.Stop(context.Background(), "immediate")

	var results []comparison
	var cmps []comparison
	for _, st := range o.storages {
		cmps = append(cmps,
			comparison{Name: "headline (" + st + "): pgkeep defaults vs pgBackRest lz4:1", Storage: st, PgkeepC: o.headlineC, PeerC: "lz4:1"},
			comparison{Name: "zstd level 1 on both (" + st + ")", Storage: st, PgkeepC: "zstd:1", PeerC: "zstd:1"},
			comparison{Name: "incremental (" + st + "): 1% of the rows changed, pgkeep defaults vs pgBackRest lz4:1 --type=incr", Storage: st, PgkeepC: o.headlineC, PeerC: "lz4:1"})
	}
	for _, cmp := range cmps {
		if o.only != "" && !strings.Contains(cmp.Name, o.only) || o.skip != "" && strings.Contains(cmp.Name, o.skip) {
			continue
		}
		cmp.Runs = o.runs
		for i := 0; i < o.runs; i++ {
			fmt.Printf("\n== %s, run %d of %d\n", cmp.Name, i+1, o.runs)
			var rr runResult
			var err error
			if isIncremental(cmp) {
				rr, err = b.compareIncremental(ctx, cmp, i%2 == 1)
			} else {
				rr, err = b.compare(ctx, cmp, o.segments, i%2 == 1)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", cmp.Name, err)
			}
			cmp.Samples = append(cmp.Samples, rr)
		}
		cmp.Pgkeep, cmp.Peer = medians(cmp.Samples)
		cmp.Table = rows(cmp)
		results = append(results, cmp)
		printTable(os.Stdout, cmp)
	}
	os.MkdirAll(o.outDir, 0o755)
	path := filepath.Join(o.outDir, "bench-"+time.Now().UTC().Format("20060102T150405Z")+".json")
	data, _ := json.MarshalIndent(struct {
		Scale       int          `json:"scale"`
		Workers     int          `json:"workers"`
		Comparisons []comparison `json:"comparisons"`
	}{o.scale, o.workers, results}, "", "  ")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return err
	}
	fmt.Println("results:", path)
	return nil
}

func (b *bench) mkdir(p string) error {
	if err := os.MkdirAll(p, 0o700); err != nil {
		return err
	}
	return b.r.Chown(p)
}

func (b *bench) setupCluster(ctx context.Context, scale int, noise bool) error {
	base := filepath.Join(b.ws, "primary")
	sock := filepath.Join(b.ws, "sock")
	for _, p := range []string{base, sock} {
		if err := b.mkdir(p); err != nil {
			return err
		}
	}
	port, _ := pgctl.FreePort()
	b.c = &pgctl.Cluster{R: b.r, DataDir: filepath.Join(base, "data"), Port: port, Socket: sock, LogFile: filepath.Join(base, "log")}
	if _, err := b.r.Run(ctx, nil, "initdb", "-D", b.c.DataDir, "-k", "--auth=trust", "-U", "postgres", "--locale=C", "-E", "UTF8"); err != nil {
		return err
	}
	f, _ := os.OpenFile(filepath.Join(b.c.DataDir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	fmt.Fprintf(f, "archive_mode = on\narchive_command = 'false'\nmax_wal_size = '4GB'\nshared_buffers = '256MB'\nwal_keep_size = 0\n")
	f.Close()
	if err := b.c.Start(ctx); err != nil {
		return err
	}
	fmt.Printf("bench: loading pgbench scale %d and a less compressible table\n", scale)
	if _, err := b.r.Run(ctx, b.c.Env(), "pgbench", "-i", "-q", "-s", strconv.Itoa(scale)); err != nil {
		return err
	}
	if _, err := b.c.SQL(ctx, "CREATE TABLE drain_noise (id int, h text, r float8, ts timestamptz) WITH (autovacuum_enabled = false)"); err != nil {
		return err
	}
	if _, err := b.c.SQL(ctx, `CREATE TABLE drain_rows (id bigint PRIMARY KEY, h text, n bigint, ts timestamptz) WITH (autovacuum_enabled = false);
		CREATE INDEX ON drain_rows (h)`); err != nil {
		return err
	}
	if !noise {
		return nil
	}
	_, err := b.c.SQL(ctx, fmt.Sprintf(`CREATE TABLE noise AS SELECT g AS id, md5(random()::text) || md5(g::text) AS h,
		random() * 1e9 AS r, now() - random() * interval '1000 days' AS ts FROM generate_series(1, %d) g`, scale*100000))
	return err
}

// setArchive points archive_command at one tool (or "false") and reloads.
func (b *bench) setArchive(ctx context.Context, cmd string) error {
	_, err := b.c.SQL(ctx, fmt.Sprintf("ALTER SYSTEM SET archive_command = '%s'", strings.ReplaceAll(cmd, "'", "''")))
	if err == nil {
		_, err = b.c.SQL(ctx, "SELECT pg_reload_conf()")
	}
	time.Sleep(300 * time.Millisecond)
	return err
}

// peerCodec is pgBackRest's name for a compression type.
func peerCodec(c string) string {
	if c == "zstd" {
		return "zst"
	}
	return c
}

// compare runs each measurement once for both tools, in fresh
// repositories, pgBackRest first where peerFirst is set, and checks the
// pgkeep repository afterwards.
func (b *bench) compare(ctx context.Context, cmp comparison, segments int, peerFirst bool) (runResult, error) {
	rr := runResult{Pgkeep: map[string]measure{}, Peer: map[string]measure{}}
	dir := filepath.Join(b.ws, fmt.Sprintf("run-%d", time.Now().UnixNano()))
	if err := b.mkdir(dir); err != nil {
		return rr, err
	}
	// The run's repositories stay until the whole bench ends (restores
	// go to file systems of their own, see freshFS).
	tools := []string{"pgkeep", "pgbackrest"}
	if peerFirst {
		tools = []string{"pgbackrest", "pgkeep"}
	}
	put := func(tool, fig string, m measure) {
		if tool == "pgkeep" {
			rr.Pgkeep[fig] = m
		} else {
			rr.Peer[fig] = m
		}
	}
	rp, err := b.repos(ctx, dir, cmp)
	if err != nil {
		return rr, err
	}
	pkArgs, peer, pkStored, peerStored := rp.pkArgs, rp.peer, rp.pkStored, rp.peerStored
	if b.drainOnly {
		return rr, b.drains(ctx, tools, dir, segments, pkArgs, peer, put)
	}

	for _, tool := range tools {
		// Both tools read a warm page cache: read the data directory once.
		duRead(b.c.DataDir)
		var m measure
		var err error
		if tool == "pgkeep" {
			m, err = b.timed(ctx, b.c.Env(), b.pgkeep, append([]string{"backup", "--quiet"}, pkArgs...)...)
			m.Stored = pkStored()
		} else {
			m, err = b.timed(ctx, b.c.Env(), "/usr/bin/pgbackrest", peer("backup", "--type=full")...)
			m.Stored = peerStored()
		}
		if err != nil {
			return rr, err
		}
		put(tool, "backup", m)
		fmt.Printf("%s backup: %.2fs, %.0f MiB peak RSS, %.1f MiB stored\n", tool, m.Seconds, m.RSSMiB, float64(m.Stored)/(1<<20))
	}

	// WAL written after the backups, for the recovery measurement:
	// pgbench transactions, and a bulk load (rows truncated once the
	// restores are done, so the cluster does not grow from run to run)
	// that makes enough WAL for replay to take a while.
	walBefore, _ := b.c.SQL(ctx, "SELECT pg_current_wal_lsn()")
	if _, err := b.r.Run(ctx, b.c.Env(), "pgbench", "-n", "-c", "2", "-t", "3000"); err != nil {
		return rr, err
	}
	if _, err := b.c.SQL(ctx, fmt.Sprintf("INSERT INTO drain_noise SELECT g, md5(random()::text), random(), now() FROM generate_series(1, %d) g", b.replayRows)); err != nil {
		return rr, err
	}
	if b.expectRows, err = b.c.SQL(ctx, "SELECT (SELECT count(*) FROM drain_noise) || ' ' || (SELECT count(*) FROM pgbench_history)"); err != nil {
		return rr, err
	}
	mib, _ := b.c.SQL(ctx, "SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), '"+walBefore+"') / 1048576)")
	fmt.Printf("WAL written after the backups, for each recovery to replay: %s MiB\n", mib)
	last, _ := b.c.SQL(ctx, "SELECT pg_walfile_name(pg_switch_wal())")
	if err := b.waitArchived(ctx, last); err != nil {
		return rr, err
	}

	// Restore, then recovery to the end of the archive.
	for _, tool := range tools {
		mnt, release, err := b.freshFS(dir, "restore-"+tool)
		if err != nil {
			return rr, err
		}
		target := filepath.Join(mnt, "data")
		m, err := b.restore(ctx, tool, target, pkArgs, peer)
		var rec float64
		if err == nil {
			rec, err = b.recover(ctx, target, dir, tool)
		}
		release()
		if err != nil {
			return rr, err
		}
		put(tool, "restore", m)
		put(tool, "recovery", measure{Seconds: m.Seconds + rec})
		put(tool, "replay", measure{Seconds: rec})
		fmt.Printf("%s restore: %.2fs (%.0f MiB peak RSS), then recovery: %.2fs\n", tool, m.Seconds, m.RSSMiB, rec)
	}
	// From S3 also with the store's files in memory (the store's host
	// caches what it serves): what remains is each tool's own cost per
	// restored byte.
	if cmp.Storage == "s3" {
		// Each tool first restores once untimed: in earlier runs the first
		// warm restore after the cold ones was slow (two to three times)
		// for whichever tool ran it, and with the order alternating over
		// three runs one tool went first twice.
		for _, timed := range []bool{false, true} {
			for _, tool := range tools {
				mnt, release, err := b.freshFS(dir, "restore-warm-"+tool)
				if err != nil {
					return rr, err
				}
				m, err := b.restoreWarm(ctx, tool, filepath.Join(mnt, "data"), pkArgs, peer)
				release()
				if err != nil {
					return rr, err
				}
				if !timed {
					fmt.Printf("%s restore, the store warm, untimed first pass: %.2fs\n", tool, m.Seconds)
					continue
				}
				put(tool, "restore_warm", m)
				fmt.Printf("%s restore, the store warm: %.2fs (%.0f MiB peak RSS)\n", tool, m.Seconds, m.RSSMiB)
			}
		}
	}
	// PostgreSQL's own replay speed: the same restore, with every WAL
	// segment it needs already on local disk and restore_command a cp.
	// pgkeep's replay time over this one is what fetching costs.
	if rec, err := b.localReplay(ctx, dir, pkArgs); err != nil {
		return rr, err
	} else {
		put("pgkeep", "replay_local_cp", measure{Seconds: rec})
		fmt.Printf("replay with the WAL already local (cp): %.2fs\n", rec)
	}

	if _, err := b.c.SQL(ctx, "TRUNCATE drain_noise"); err != nil {
		return rr, err
	}
	// What pgkeep reported as archived so far must be there: every backup
	// object and the whole WAL chain are read back and checked. (After the
	// drains the chain has gaps by design: each tool archives only its own
	// backlog.)
	if out, err := b.r.Run(ctx, nil, b.pgkeep, append([]string{"verify", "--quiet"}, pkArgs...)...); err != nil {
		return rr, fmt.Errorf("pgkeep verify: %v\n%s", err, out)
	}

	// Nothing may still be in flight when the drains begin.
	pending, _ := b.c.SQL(ctx, "SELECT pg_walfile_name(pg_switch_wal())")
	if err := b.waitArchived(ctx, pending); err != nil {
		return rr, err
	}

	// WAL drains: a backlog builds while archiving fails, then each tool
	// archives it; timed until the archiver has caught up. The full one is
	// what a busy database leaves (every segment full of ordinary table
	// work); the switched one, short segments padded with zeros, measures
	// the cost of a call.
	if b.noDrain {
		return rr, nil
	}
	return rr, b.drains(ctx, tools, dir, segments, pkArgs, peer, put)
}

// drains runs both drains for each tool.
func (b *bench) drains(ctx context.Context, tools []string, dir string, segments int, pkArgs []string, peer func(...string) []string, put func(string, string, measure)) error {
	for _, d := range []drainKind{drainFull, drainSwitched} {
		for _, tool := range tools {
			m, err := b.drain(ctx, d, tool, dir, segments, pkArgs, peer)
			if err != nil {
				return err
			}
			put(tool, d.figure(), m)
		}
	}
	return nil
}

// drainKind is how a drain's backlog is made.
type drainKind int

const (
	// drainFull: inserts and updates on an indexed table of barely
	// compressible text, every segment full, as a busy database writes.
	drainFull drainKind = iota
	// drainSwitched: about 4 MiB of WAL per segment, then a switch: the
	// rest of each segment is zeros, so this measures per-call overhead.
	drainSwitched
)

func (d drainKind) figure() string {
	if d == drainSwitched {
		return "wal_drain_switched"
	}
	return "wal_drain"
}

// drain builds a backlog of segments WAL segments while archiving fails,
// then points archive_command at tool and times it until the archiver has
// caught up. pgkeep's segments are all fetched back afterwards.
func (b *bench) drain(ctx context.Context, d drainKind, tool, dir string, segments int, pkArgs []string, peer func(...string) []string) (measure, error) {
	failedBefore, err := b.archiverFailures(ctx)
	if err != nil {
		return measure{}, err
	}
	if err := b.setArchive(ctx, "false"); err != nil {
		return measure{}, err
	}
	b.stopPusher()
	// +1: right after a switch the position is on a segment boundary,
	// which pg_walfile_name names by the segment before it.
	first, _ := b.c.SQL(ctx, "SELECT pg_walfile_name(pg_current_wal_lsn() + 1)")
	if err := b.buildBacklog(ctx, d, segments); err != nil {
		return measure{}, err
	}
	last, _ := b.c.SQL(ctx, "SELECT pg_walfile_name(pg_switch_wal())")
	n, err := segmentCount(first, last)
	if err != nil {
		return measure{}, err
	}
	if err := b.waitArchiverIdle(ctx, failedBefore); err != nil {
		return measure{}, err
	}
	cmd := fmt.Sprintf("%s wal-push %s %s %%p", b.pgkeep, b.pushArgs, strings.Join(pkArgs, " "))
	if tool == "pgbackrest" {
		cmd = fmt.Sprintf("pgbackrest %s archive-push %%p", strings.Join(peer(), " "))
	}
	// The new command is set first and timing starts at the reload that
	// makes the archiver use it; the backlog is on disk by then.
	syscall.Sync()
	if _, err := b.c.SQL(ctx, fmt.Sprintf("ALTER SYSTEM SET archive_command = '%s'", strings.ReplaceAll(cmd, "'", "''"))); err != nil {
		return measure{}, err
	}
	busyBefore := busyCPU()
	began := time.Now()
	if _, err := b.c.SQL(ctx, "SELECT pg_reload_conf()"); err != nil {
		return measure{}, err
	}
	if err := b.waitArchived(ctx, last); err != nil {
		return measure{}, err
	}
	secs := time.Since(began).Seconds()
	cpu := busyCPU() - busyBefore
	m := measure{Seconds: secs, Segments: n, CPUSeconds: cpu}
	fmt.Printf("%s %s: %d segments (%s..%s) in %.2fs: %.1f segments/s, %.0f MiB/s; machine CPU busy %.2fs (%.0f ms per segment)\n",
		tool, d.figure(), n, first, last, secs, m.segmentsPerSec(), m.mibPerSec(), cpu, 1000*cpu/float64(n))
	if tool == "pgkeep" {
		if err := b.fetchRange(ctx, dir, first, last, pkArgs); err != nil {
			return measure{}, err
		}
	}
	return m, nil
}

// buildBacklog writes WAL for a drain while archiving is off.
func (b *bench) buildBacklog(ctx context.Context, d drainKind, segments int) error {
	if d == drainSwitched {
		for i := 0; i < segments; i++ {
			b.c.SQL(ctx, "SELECT pg_switch_wal() FROM (SELECT pg_logical_emit_message(false, 'bench', repeat('x', 1000000))) s")
			b.c.SQL(ctx, "INSERT INTO drain_noise SELECT g, md5(random()::text), random(), now() FROM generate_series(1, 20000) g")
		}
		// The rows only made WAL: the cluster stays the same size from
		// run to run, so every run backs up the same data.
		_, err := b.c.SQL(ctx, "TRUNCATE drain_noise")
		return err
	}
	// Rows of id, text of two md5s (hex: compresses about 2:1), a bigint
	// and a timestamp, into a table with a primary key and an index on the
	// text (random insert positions: page splits and full-page images);
	// then an update of a tenth of the batch. Batches go on until the WAL
	// written fills the backlog.
	start, err := b.c.SQL(ctx, "SELECT pg_current_wal_lsn()")
	if err != nil {
		return err
	}
	want := int64(segments) * 16 << 20
	const batch = 100000
	for lo := 1; ; lo += batch {
		if _, err := b.c.SQL(ctx, fmt.Sprintf(`INSERT INTO drain_rows SELECT g, md5(random()::text) || md5(g::text), (random() * 1e15)::bigint,
			now() - random() * interval '1000 days' FROM generate_series(%d, %d) g`, lo, lo+batch-1)); err != nil {
			return err
		}
		if _, err := b.c.SQL(ctx, fmt.Sprintf("UPDATE drain_rows SET n = n + 1, ts = now() WHERE id BETWEEN %d AND %d AND id %% 10 = 0", lo, lo+batch-1)); err != nil {
			return err
		}
		out, err := b.c.SQL(ctx, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '"+start+"')::bigint")
		if err != nil {
			return err
		}
		if done, _ := strconv.ParseInt(out, 10, 64); done >= want {
			break
		}
	}
	_, err = b.c.SQL(ctx, "TRUNCATE drain_rows")
	return err
}

// segmentCount is the number of segments from first to last, both
// included (16 MiB segments).
func segmentCount(first, last string) (int, error) {
	n := 1
	for seg := first; seg < last; n++ {
		var err error
		if seg, err = nextSegment(seg); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// repos are the two tools' fresh repositories for one run.
type repos struct {
	pkArgs               []string                 // pgkeep's repository flags (and --workers)
	peer                 func(...string) []string // pgBackRest's arguments, config and stanza first
	pkStored, peerStored func() int64             // bytes of backups each repository holds
}

// repos creates both repositories under dir (or in fresh buckets), points
// archiving at both tools and waits until what accumulated is archived.
func (b *bench) repos(ctx context.Context, dir string, cmp comparison) (repos, error) {
	var rp repos
	pkRepo := "file://" + filepath.Join(dir, "pgkeep-repo")
	b.mkdir(filepath.Join(dir, "pgkeep-repo"))
	pkArgs := []string{"--repo", pkRepo, "--workers", strconv.Itoa(b.workers)}
	peerRepoConf := "repo1-path=" + filepath.Join(dir, "pgbr-repo")
	pkStored := func() int64 { return duBytes(filepath.Join(dir, "pgkeep-repo", "backups")) }
	peerStored := func() int64 { return duBytes(filepath.Join(dir, "pgbr-repo", "backup")) }
	if cmp.Storage == "s3" {
		bucket, err := b.s3.NewBucket()
		if err != nil {
			return rp, err
		}
		host, port, _ := strings.Cut(strings.TrimPrefix(b.s3.Endpoint, "https://"), ":")
		pkArgs = []string{"--repo", "s3://" + bucket + "/pgkeep", "--s3-endpoint", b.s3.Endpoint, "--s3-path-style", "--s3-region", b.s3.Region,
			"--s3-ca-bundle", b.caFile, "--workers", strconv.Itoa(b.workers)}
		peerRepoConf = fmt.Sprintf("repo1-type=s3\nrepo1-path=/pgbackrest\nrepo1-s3-bucket=%s\nrepo1-s3-endpoint=%s\nrepo1-storage-port=%s\nrepo1-s3-region=%s\nrepo1-s3-key=%s\nrepo1-s3-key-secret=%s\nrepo1-s3-uri-style=path\nrepo1-storage-ca-file=%s",
			bucket, host, port, b.s3.Region, b.s3.AccessKey, b.s3.SecretKey, b.caFile)
		pkStored = func() int64 { return b.bucketBytes(bucket, "pgkeep/backups/") }
		peerStored = func() int64 { return b.bucketBytes(bucket, "pgbackrest/backup/") }
	}
	if cmp.PgkeepC != "" {
		pkArgs = append(pkArgs, "--compression", cmp.PgkeepC)
	}
	conf := filepath.Join(dir, "pgbackrest.conf")
	peerRepo := filepath.Join(dir, "pgbr-repo")
	codec, level, _ := strings.Cut(cmp.PeerC, ":")
	codec = peerCodec(codec)
	os.WriteFile(conf, []byte(fmt.Sprintf(`[global]
%s
process-max=%d
compress-type=%s
compress-level=%s
archive-async=y
spool-path=%s
log-level-console=warn
log-level-file=off
lock-path=%s
start-fast=y
archive-timeout=60
[bench]
pg1-path=%s
pg1-port=%d
pg1-socket-path=%s
`, peerRepoConf, b.workers, codec, level, filepath.Join(dir, "pgbr-spool"), filepath.Join(dir, "pgbr-lock"), b.c.DataDir, b.c.Port, b.c.Socket)), 0o644)
	for _, p := range []string{peerRepo, filepath.Join(dir, "pgbr-spool"), filepath.Join(dir, "pgbr-lock")} {
		b.mkdir(p)
	}
	peer := func(args ...string) []string { return append([]string{"--config=" + conf, "--stanza=bench"}, args...) }
	rp = repos{pkArgs: pkArgs, peer: peer, pkStored: pkStored, peerStored: peerStored}

	// Probe the codec: an option this pgBackRest was built without fails
	// at once (exit 32), before anything else.
	probe := b.r.Command(ctx, nil, "/usr/bin/pgbackrest", "--compress-type="+codec, "--stanza=probe", "--log-level-console=error",
		"--log-level-file=off", "archive-push", "/nonexistent/000000010000000000000001")
	if out, _ := probe.CombinedOutput(); strings.Contains(string(out), "is not allowed for 'compress-type'") {
		return rp, fmt.Errorf("this pgBackRest does not offer %s: %s", codec, strings.TrimSpace(string(out)))
	}
	if _, err := b.r.Run(ctx, b.c.Env(), "/usr/bin/pgbackrest", peer("stanza-create")...); err != nil {
		return rp, err
	}
	// Both tools archive during the backups.
	both := fmt.Sprintf("%s wal-push %s %%p && pgbackrest %s archive-push %%p", b.pgkeep, strings.Join(pkArgs, " "), strings.Join(peer(), " "))
	if err := b.setArchive(ctx, both); err != nil {
		return rp, err
	}
	// Drain what accumulated while archiving was off, so that neither
	// backup pays for the other's backlog.
	pending, _ := b.c.SQL(ctx, "SELECT pg_walfile_name(pg_switch_wal())")
	if err := b.waitArchived(ctx, pending); err != nil {
		return rp, err
	}

	return rp, nil
}

// fetchRange reads every segment from first to last back from pgkeep's
// repository, checksums verified: what wal-push reported archived must be
// there.
func (b *bench) fetchRange(ctx context.Context, dir, first, last string, pkArgs []string) error {
	dest := filepath.Join(dir, "fetched")
	for seg := first; seg <= last; {
		cmd := b.r.Command(ctx, nil, b.pgkeep, append([]string{"wal-fetch", "--prefetch=0", seg, dest}, pkArgs...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("pgkeep reported %s archived, but wal-fetch: %v\n%s", seg, err, out)
		}
		var err error
		if seg, err = nextSegment(seg); err != nil {
			return err
		}
	}
	return os.Remove(dest)
}

// freshFS returns an empty directory to restore into, on a new ext4 file
// system (a loop-mounted image sized for the cluster), and a function that
// unmounts and removes it. A restore is for a fresh machine, and a fresh
// file system is also the only fair ground: ext4 allocates inodes more
// slowly where many were freed in the last minutes, so on a used file
// system the restore that follows a deletion pays for it. Without loop
// devices (not root, or none in this kernel) it falls back to a directory
// under dir, and says so once.
func (b *bench) freshFS(dir, name string) (string, func(), error) {
	plain := filepath.Join(dir, name)
	if b.noLoop {
		return plain, func() {}, b.mkdir(plain)
	}
	img := filepath.Join(dir, name+".ext4")
	mnt := filepath.Join(dir, name)
	size := duBytes(b.c.DataDir)*3/2 + 1<<30
	fail := func(step string, err error, out []byte) (string, func(), error) {
		os.Remove(img)
		fmt.Printf("bench: restoring into plain directories: no fresh file system (%s: %v %s)\n", step, err, strings.TrimSpace(string(out)))
		b.noLoop = true
		return plain, func() {}, b.mkdir(plain)
	}
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		return "", nil, err
	}
	if err := os.Truncate(img, size); err != nil {
		return "", nil, err
	}
	// Inode tables and journal are written now, not by a kernel thread
	// racing the restore.
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", img).CombinedOutput(); err != nil {
		return fail("mkfs.ext4", err, out)
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return "", nil, err
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		return fail("mount -o loop", err, out)
	}
	release := func() {
		// A prefetcher may take a moment to notice recovery ended.
		for i := 0; ; i++ {
			out, err := exec.Command("umount", mnt).CombinedOutput()
			if err == nil {
				break
			}
			if i == 50 {
				fmt.Printf("bench: umount %s: %v %s; detaching it lazily\n", mnt, err, out)
				exec.Command("umount", "-l", mnt).Run()
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		os.Remove(img)
	}
	if err := b.r.Chown(mnt); err != nil {
		release()
		return "", nil, err
	}
	return mnt, release, nil
}

// restore restores the newest backup of one tool into target, timed.
func (b *bench) restore(ctx context.Context, tool, target string, pkArgs []string, peer func(...string) []string) (measure, error) {
	// Both read their repository cold, as a restore on a new machine
	// does: otherwise whichever repository this machine's memory manager
	// has paged out (these VMs reclaim page cache idle for about a
	// minute) decides the result.
	dropCaches()
	return b.restoreNow(ctx, tool, target, pkArgs, peer)
}

// restoreWarm restores as restore does, with the store's files read into
// the page cache first: a remote store with memory of its own serves
// from there, and what is left is the restoring tool's own cost.
func (b *bench) restoreWarm(ctx context.Context, tool, target string, pkArgs []string, peer func(...string) []string) (measure, error) {
	syscall.Sync()
	duRead(b.s3.DataDir)
	return b.restoreNow(ctx, tool, target, pkArgs, peer)
}

func (b *bench) restoreNow(ctx context.Context, tool, target string, pkArgs []string, peer func(...string) []string) (measure, error) {
	if tool == "pgkeep" {
		return b.timed(ctx, nil, b.pgkeep, append([]string{"restore", "--quiet", "--archive-off", "--pgdata", target}, pkArgs...)...)
	}
	if err := b.mkdir(target); err != nil {
		return measure{}, err
	}
	// pgkeep's restore creates its target; pgBackRest's wants it there.
	return b.timed(ctx, nil, "/usr/bin/pgbackrest", peer("restore", "--pg1-path="+target, "--archive-mode=off")...)
}

// localReplay restores pgkeep's backup again, copies every WAL segment
// recovery will ask for into a local directory (untimed), points
// restore_command at cp, and times recovery.
func (b *bench) localReplay(ctx context.Context, dir string, pkArgs []string) (float64, error) {
	mnt, release, err := b.freshFS(dir, "restore-local")
	if err != nil {
		return 0, err
	}
	defer release()
	target := filepath.Join(mnt, "data")
	if _, err := b.restore(ctx, "pgkeep", target, pkArgs, nil); err != nil {
		return 0, err
	}
	spool := filepath.Join(dir, "local-wal")
	if err := b.mkdir(spool); err != nil {
		return 0, err
	}
	defer os.RemoveAll(spool) // a copy of what the repository holds
	label, err := os.ReadFile(filepath.Join(target, "backup_label"))
	if err != nil {
		return 0, err
	}
	var seg string
	if _, err := fmt.Sscanf(string(label), "START WAL LOCATION: %s (file %24s)", new(string), &seg); err != nil || len(seg) != 24 {
		return 0, fmt.Errorf("reading the start segment from backup_label: %v", err)
	}
	for n := 0; ; n++ {
		cmd := b.r.Command(ctx, nil, b.pgkeep, append([]string{"wal-fetch", "--prefetch=0", seg, filepath.Join(spool, seg)}, pkArgs...)...)
		out, err := cmd.CombinedOutput()
		if cmd.ProcessState != nil && cmd.ProcessState.ExitCode() == 1 {
			break // the end of the archive
		}
		if err != nil {
			return 0, fmt.Errorf("fetching %s: %v\n%s", seg, err, out)
		}
		if seg, err = nextSegment(seg); err != nil {
			return 0, err
		}
	}
	f, err := os.OpenFile(filepath.Join(target, "postgresql.auto.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	fmt.Fprintf(f, "restore_command = 'cp %s/%%f %%p'\n", spool)
	if err := f.Close(); err != nil {
		return 0, err
	}
	return b.recover(ctx, target, dir, "local")
}

// dropCaches writes dirty pages out and empties the page cache (as root;
// elsewhere it only syncs).
func dropCaches() {
	syscall.Sync()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
}

// nextSegment names the WAL segment after seg (16 MiB segments).
func nextSegment(seg string) (string, error) {
	var tli, log, n uint32
	if _, err := fmt.Sscanf(seg, "%08X%08X%08X", &tli, &log, &n); err != nil {
		return "", fmt.Errorf("segment name %q: %w", seg, err)
	}
	if n++; n > 0xFF {
		log, n = log+1, 0
	}
	return fmt.Sprintf("%08X%08X%08X", tli, log, n), nil
}

// medians returns, for each tool and figure, the median over the runs.
func medians(runs []runResult) (pk, peer map[string]measure) {
	med := func(get func(runResult) map[string]measure) map[string]measure {
		out := map[string]measure{}
		for fig := range get(runs[0]) {
			var secs, rss, stored, segs, cpu []float64
			for _, r := range runs {
				m := get(r)[fig]
				secs, rss, stored, segs, cpu = append(secs, m.Seconds), append(rss, m.RSSMiB), append(stored, float64(m.Stored)), append(segs, float64(m.Segments)), append(cpu, m.CPUSeconds)
			}
			out[fig] = measure{Seconds: median(secs), RSSMiB: median(rss), Stored: int64(median(stored)), Segments: int(median(segs)), CPUSeconds: median(cpu)}
		}
		return out
	}
	return med(func(r runResult) map[string]measure { return r.Pgkeep }), med(func(r runResult) map[string]measure { return r.Peer })
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// timed runs a program as the database user and measures its wall time
// and peak memory: the largest resident set of its whole process tree
// (pgBackRest runs a process per worker), sampled every 20 ms. The kernel's
// ru_maxrss would not do: a child started from this (larger) process
// inherits this process's high-water mark at exec.
func (b *bench) timed(ctx context.Context, env []string, name string, args ...string) (measure, error) {
	cmd := b.r.Command(ctx, env, name, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	// Neither tool pays for the dirty pages an earlier phase left: on ext4
	// the first fsync would wait for them.
	syscall.Sync()
	began := time.Now()
	if err := cmd.Start(); err != nil {
		return measure{}, err
	}
	done := make(chan struct{})
	peak := make(chan int64, 1)
	go func() {
		var max int64
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if kb := treeRSS(cmd.Process.Pid); kb > max {
				max = kb
			}
			select {
			case <-done:
				peak <- max
				return
			case <-t.C:
			}
		}
	}()
	err := cmd.Wait()
	secs := time.Since(began).Seconds()
	close(done)
	kb := <-peak
	if err != nil {
		return measure{}, fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	if said := strings.TrimSpace(out.String()); said != "" && name == b.pgkeep {
		// Quiet runs of pgkeep print only warnings (a storage retry, say):
		// a slow figure then comes with its reason.
		fmt.Printf("bench: pgkeep %s said:\n%s\n", args[0], said)
	}
	return measure{Seconds: secs, RSSMiB: float64(kb) / 1024}, nil
}

// treeRSS returns the resident memory, in KiB, of a process and all its
// descendants now, or for a single process its high-water mark (VmHWM),
// which also catches peaks between samples.
func treeRSS(pid int) int64 {
	var sum int64
	pids := []int{pid}
	for n := 0; n < len(pids); n++ {
		p := pids[n]
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			continue
		}
		var rss, hwm int64
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				rss, _ = strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			}
			if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
				hwm, _ = strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			}
		}
		sum += rss
		if n == 0 {
			sum += hwm - rss // the root's own peak
		}
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", p))
		for _, t := range tasks {
			kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", p, t.Name()))
			for _, f := range strings.Fields(string(kids)) {
				if c, err := strconv.Atoi(f); err == nil {
					pids = append(pids, c)
				}
			}
		}
	}
	return sum
}

// recover starts a restored cluster and times it until it is promoted.
func (b *bench) recover(ctx context.Context, dataDir, dir, tool string) (float64, error) {
	sock := filepath.Join(dir, "sock-"+tool)
	b.mkdir(sock)
	port, _ := pgctl.FreePort()
	c := &pgctl.Cluster{R: b.r, DataDir: dataDir, Port: port, Socket: sock, LogFile: filepath.Join(dir, "recovery-"+tool+".log")}
	syscall.Sync()
	began := time.Now()
	if err := c.Start(ctx); err != nil {
		return 0, err
	}
	defer c.Stop(context.Background(), "immediate")
	for time.Since(began) < 30*time.Minute {
		out, err := c.SQL(ctx, "SELECT pg_is_in_recovery()")
		if err == nil && out == "f" {
			secs := time.Since(began).Seconds()
			// A recovery that stopped short would be fast and wrong: the
			// restored cluster must hold everything committed before the
			// end of the archive.
			got, err := c.SQL(ctx, "SELECT (SELECT count(*) FROM drain_noise) || ' ' || (SELECT count(*) FROM pgbench_history)")
			if err != nil {
				return 0, fmt.Errorf("%s: checking the recovered cluster: %w", tool, err)
			}
			if got != b.expectRows {
				return 0, fmt.Errorf("%s: the recovered cluster has %s rows (bulk load, pgbench_history), the primary had %s: recovery stopped short", tool, got, b.expectRows)
			}
			return secs, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s: recovery did not finish", tool)
}

func (b *bench) waitArchived(ctx context.Context, seg string) error {
	// PostgreSQL renames archive_status/SEG.ready to SEG.done once
	// archive_command succeeded. Watching the file costs nothing, where a
	// psql process per poll would take CPU from the tools being timed; the
	// statistics view is asked only once a second, as a fallback.
	done := filepath.Join(b.c.DataDir, "pg_wal", "archive_status", seg+".done")
	deadline := time.Now().Add(20 * time.Minute)
	for i := 0; time.Now().Before(deadline); i++ {
		if _, err := os.Stat(done); err == nil {
			return nil
		}
		if i%100 == 99 {
			out, err := b.c.SQL(ctx, "SELECT coalesce(last_archived_wal, '') >= '"+seg+"' FROM pg_stat_archiver")
			if err == nil && out == "t" {
				return nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, _ := b.c.SQL(ctx, "SELECT row(last_archived_wal, failed_count, last_failed_wal)::text FROM pg_stat_archiver")
	return fmt.Errorf("segment %s not archived in time (%s)", seg, st)
}

// waitArchiverIdle waits until PostgreSQL's archiver, given the failing
// archive_command "false" when failedBefore was its failure count, has
// failed three times in a row and gone to sleep. After a failure it sleeps
// a second before each of its three attempts, and a configuration reload
// does not cut that sleep short; after the third it waits on its latch,
// which a reload does wake. Starting a drain from there gives both tools
// the same start. Counting failures also waits out a command that was
// still running when "false" was set (pgBackRest's foreground can wait
// minutes for an asynchronous push that is not coming). It also stops any
// pgkeep look-ahead pusher left from earlier phases, so that none uploads
// the backlog while it builds.
// stopPusher stops the look-ahead pusher of the bench's own cluster (its
// pid is in the lock file in that cluster's pg_wal), and nothing else: a
// production pusher on the same host is left alone.
func (b *bench) stopPusher() {
	if pid := walarchive.LockHolder(walarchive.PusherLock(filepath.Join(b.c.DataDir, "pg_wal"))); pid > 0 {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

func (b *bench) waitArchiverIdle(ctx context.Context, failedBefore int) error {
	b.stopPusher()
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		out, err := b.c.SQL(ctx, fmt.Sprintf("SELECT failed_count >= %d AND extract(epoch FROM now() - last_failed_time) > 1.3 FROM pg_stat_archiver", failedBefore+3))
		if err != nil {
			return err
		}
		if out == "t" {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("PostgreSQL's archiver did not settle on the failing archive_command")
}

// archiverFailures is pg_stat_archiver.failed_count.
func (b *bench) archiverFailures(ctx context.Context) (int, error) {
	out, err := b.c.SQL(ctx, "SELECT failed_count FROM pg_stat_archiver")
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(out)
}

// target is one figure's goal, from the product brief: the ratio
// pgkeep/pgBackRest (or an absolute bound) that counts as met.
type target struct {
	strict bool    // met only below max, not at it
	max    float64 // met when the value is at most this
	ratio  bool    // the value is a ratio to pgBackRest's; else pgkeep's own figure
	text   string
}

// targets returns the goals of a comparison (docs and issue 13): the
// headline one (pgBackRest lz4) asks for half pgBackRest's backup and
// restore times, the zstd one for no slower; every drain of full segments
// for 1.5 times pgBackRest's speed.
func targets(c comparison) map[string]target {
	speed := target{max: 0.5, ratio: true, text: "<= 0.50"}
	if !strings.HasPrefix(c.PeerC, "lz4") {
		speed = target{max: 1.0, ratio: true, text: "<= 1.00"}
	}
	memory := target{max: 150, strict: true, text: "< 150 MiB"}
	return map[string]target{
		"backup time":         speed,
		"restore time":        speed,
		"restore (warm) time": speed,
		"wal_drain time":      {max: 1 / 1.5, ratio: true, text: "<= 0.67 (1.5 x faster)"},
		"backup peak RSS":     memory,
		"restore peak RSS":    memory,
		"backup stored":       {max: 1.2, ratio: true, text: "<= 1.20"},
		"replay vs local":     {max: 1.1, text: "<= 1.10 (fetching costs little)"},
	}
}

// rows computes the table: each figure's values, ratio and verdict.
type row struct {
	Figure string  `json:"figure"`
	Pgkeep float64 `json:"pgkeep"`
	Peer   float64 `json:"pgbackrest,omitempty"`
	Unit   string  `json:"unit"`
	Ratio  float64 `json:"ratio"`
	Target string  `json:"target,omitempty"`
	Met    *bool   `json:"met,omitempty"`
}

func rows(c comparison) []row {
	if isIncremental(c) {
		return incrementalRows(c)
	}
	tg := targets(c)
	var out []row
	add := func(name string, a, b float64, unit string) {
		r := row{Figure: name, Pgkeep: a, Peer: b, Unit: unit}
		if b > 0 {
			r.Ratio = a / b
		}
		if t, ok := tg[name]; ok {
			v := a
			if t.ratio {
				v = r.Ratio
			}
			met := v <= t.max
			if t.strict {
				met = v < t.max
			}
			r.Target, r.Met = t.text, &met
		}
		out = append(out, r)
	}
	for _, k := range []string{"backup", "restore", "restore_warm", "recovery", "replay"} {
		if _, ok := c.Pgkeep[k]; ok {
			add(strings.Replace(k, "_warm", " (warm)", 1)+" time", c.Pgkeep[k].Seconds, c.Peer[k].Seconds, "s")
		}
	}
	// The drain of full segments, its time against the target and its
	// rates (ratio: pgkeep's speed over pgBackRest's); the switched one,
	// per-call overhead, for information.
	if pk, ok := c.Pgkeep["wal_drain"]; ok {
		peer := c.Peer["wal_drain"]
		add("wal_drain time", pk.Seconds, peer.Seconds, "s")
		add("wal_drain rate", pk.segmentsPerSec(), peer.segmentsPerSec(), "segments/s")
		add("wal_drain rate", pk.mibPerSec(), peer.mibPerSec(), "MiB/s")
		if pk.CPUSeconds > 0 && pk.Segments > 0 && peer.Segments > 0 {
			add("wal_drain CPU per segment", 1000*pk.CPUSeconds/float64(pk.Segments), 1000*peer.CPUSeconds/float64(peer.Segments), "ms")
		}
	}
	if sw, ok := c.Pgkeep["wal_drain_switched"]; ok {
		swPeer := c.Peer["wal_drain_switched"]
		add("switched-segment drain (per call)", sw.segmentsPerSec(), swPeer.segmentsPerSec(), "segments/s")
	}
	if _, ok := c.Pgkeep["backup"]; ok {
		add("backup peak RSS", c.Pgkeep["backup"].RSSMiB, c.Peer["backup"].RSSMiB, "MiB")
		add("restore peak RSS", c.Pgkeep["restore"].RSSMiB, c.Peer["restore"].RSSMiB, "MiB")
		add("backup stored", float64(c.Pgkeep["backup"].Stored)/(1<<20), float64(c.Peer["backup"].Stored)/(1<<20), "MiB")
	}
	if l := c.Pgkeep["replay_local_cp"].Seconds; l > 0 {
		// pgkeep's replay against PostgreSQL's own, WAL already local.
		r := c.Pgkeep["replay"].Seconds / l
		add("replay vs local", r, 0, "x")
		out[len(out)-1].Ratio = r
	}
	return out
}

func printTable(w io.Writer, c comparison) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "\n%s (pgkeep %s, pgBackRest %s), median of %d runs\n", c.Name, orDefault(c.PgkeepC), c.PeerC, c.Runs)
	fmt.Fprintln(tw, "figure\tpgkeep\tpgBackRest\tratio\ttarget\t")
	for _, r := range rows(c) {
		verdict := ""
		if r.Met != nil {
			verdict = map[bool]string{true: "met", false: "MISSED"}[*r.Met]
		}
		peer := fmt.Sprintf("%.2f %s", r.Peer, r.Unit)
		if r.Figure == "replay vs local" {
			fmt.Fprintf(tw, "pgkeep replay / cp replay\t%.2f x\t\t\t%s %s\t\n", r.Pgkeep, r.Target, verdict)
			continue
		}
		fmt.Fprintf(tw, "%s\t%.2f %s\t%s\t%.2f\t%s %s\t\n", r.Figure, r.Pgkeep, r.Unit, peer, r.Ratio, r.Target, verdict)
	}
	tw.Flush()
}

func orDefault(s string) string {
	if s == "" {
		return "defaults"
	}
	return s
}

// bucketBytes adds up the sizes of the objects under prefix.
func (b *bench) bucketBytes(bucket, prefix string) int64 {
	var n int64
	p := s3.NewListObjectsV2Paginator(b.s3.Client(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		if err != nil {
			return -1
		}
		for _, o := range page.Contents {
			n += aws.ToInt64(o.Size)
		}
	}
	return n
}

func duBytes(root string) int64 {
	var n int64
	filepath.Walk(root, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o755)
}

// duRead reads every file under root, to warm the page cache.
func duRead(root string) {
	buf := make([]byte, 1<<20)
	filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err != nil || !info.Mode().IsRegular() {
			return nil
		}
		if f, err := os.Open(p); err == nil {
			for {
				if _, err := f.Read(buf); err != nil {
					break
				}
			}
			f.Close()
		}
		return nil
	})
}
