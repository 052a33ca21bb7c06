// Command bench runs pgkeep and pgBackRest side by side on one cluster, with
// the same number of workers, and prints the ratio pgkeep/pgBackRest for
// each figure: full backup time, peak RSS and stored size; restore time and
// peak RSS; recovery to the end of the archive; and the time to drain a
// backlog of WAL segments. Results are also written as JSON.
//
//	go run ./bench -pgkeep bin/pgkeep -scale 20
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/pgkeep/pgkeep/internal/miniosrv"
	"github.com/pgkeep/pgkeep/internal/pgctl"
)

// extraPush holds extra wal-push flags for the drain measurement.
var extraPush string

type measure struct {
	Seconds float64 `json:"seconds"`
	RSSMiB  float64 `json:"peak_rss_mib,omitempty"`
	Stored  int64   `json:"stored_bytes,omitempty"`
}

type comparison struct {
	Name    string             `json:"name"`
	Storage string             `json:"storage"`
	PgkeepC string             `json:"pgkeep_compression"`
	PeerC   string             `json:"pgbackrest_compression"`
	Pgkeep  map[string]measure `json:"pgkeep"`
	Peer    map[string]measure `json:"pgbackrest"`
}

type bench struct {
	r       *pgctl.Runner
	ws      string
	pgkeep  string
	workers int
	c       *pgctl.Cluster
	out     io.Writer
	s3      *miniosrv.Server
	caFile  string // the MinIO certificate, readable by the postgres user
}

func main() {
	scale := flag.Int("scale", 20, "pgbench scale factor (15 MiB each) plus an equal share of less compressible data")
	pgkeepBin := flag.String("pgkeep", "bin/pgkeep", "pgkeep binary")
	workers := flag.Int("workers", 2, "workers for both tools (pgkeep --workers, pgBackRest process-max)")
	segments := flag.Int("wal-backlog", 64, "WAL segments in the drain backlog")
	outDir := flag.String("out", "bench/results", "directory for the JSON results")
	keep := flag.Bool("keep", false, "keep the workspace")
	storages := flag.String("storage", "file,s3", "repositories to compare on: file, s3 (MinIO over TLS), or both")
	pushArgs := flag.String("pgkeep-push-args", "", "extra flags for pgkeep wal-push (e.g. --look-ahead=0)")
	headlineC := flag.String("pgkeep-compression", "", "pgkeep compression in the headline comparison (default: pgkeep's default)")
	flag.Parse()
	extraPush = *pushArgs
	if err := run(*scale, *pgkeepBin, *workers, *segments, *outDir, *keep, *headlineC, strings.Split(*storages, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(scale int, pgkeepBin string, workers, segments int, outDir string, keep bool, headlineC string, storages []string) error {
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
	if !keep {
		defer os.RemoveAll(ws)
	}
	os.Chmod(ws, 0o755)
	r.Chown(ws)
	b := &bench{r: r, ws: ws, workers: workers, out: os.Stdout}
	b.pgkeep = filepath.Join(ws, "pgkeep")
	if err := copyFile(pgkeepBin, b.pgkeep); err != nil {
		return fmt.Errorf("copying pgkeep: %w", err)
	}
	fmt.Printf("bench: workspace %s, scale %d, %d workers\n", ws, scale, workers)
	for _, st := range storages {
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
	if err := b.setupCluster(ctx, scale); err != nil {
		return err
	}
	defer b.c.Stop(context.Background(), "immediate")

	var results []comparison
	var cmps []comparison
	for _, st := range storages {
		cmps = append(cmps,
			comparison{Name: "headline (" + st + "): pgkeep defaults vs pgBackRest lz4:1", Storage: st, PgkeepC: headlineC, PeerC: "lz4:1"},
			comparison{Name: "zstd level 1 on both (" + st + ")", Storage: st, PgkeepC: "zstd:1", PeerC: "zstd:1"})
	}
	for _, cmp := range cmps {
		res, err := b.compare(ctx, cmp, segments)
		if err != nil && strings.Contains(err.Error(), "is not allowed for 'compress-type'") {
			fmt.Printf("\n== %s: skipped: this pgBackRest was built without %s\n", cmp.Name, cmp.PeerC)
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", cmp.Name, err)
		}
		results = append(results, res)
		printTable(os.Stdout, res)
	}
	os.MkdirAll(outDir, 0o755)
	path := filepath.Join(outDir, "bench-"+time.Now().UTC().Format("20060102T150405Z")+".json")
	data, _ := json.MarshalIndent(struct {
		Scale       int          `json:"scale"`
		Workers     int          `json:"workers"`
		Comparisons []comparison `json:"comparisons"`
	}{scale, workers, results}, "", "  ")
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

func (b *bench) setupCluster(ctx context.Context, scale int) error {
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

func (b *bench) compare(ctx context.Context, cmp comparison, segments int) (comparison, error) {
	cmp.Pgkeep, cmp.Peer = map[string]measure{}, map[string]measure{}
	dir := filepath.Join(b.ws, fmt.Sprintf("run-%d", time.Now().UnixNano()))
	if err := b.mkdir(dir); err != nil {
		return cmp, err
	}
	pkRepo := "file://" + filepath.Join(dir, "pgkeep-repo")
	b.mkdir(filepath.Join(dir, "pgkeep-repo"))
	pkArgs := []string{"--repo", pkRepo, "--workers", strconv.Itoa(b.workers)}
	peerRepoConf := "repo1-path=" + filepath.Join(dir, "pgbr-repo")
	pkStored := func() int64 { return duBytes(filepath.Join(dir, "pgkeep-repo", "backups")) }
	peerStored := func() int64 { return duBytes(filepath.Join(dir, "pgbr-repo", "backup")) }
	if cmp.Storage == "s3" {
		bucket, err := b.s3.NewBucket()
		if err != nil {
			return cmp, err
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
archive-timeout=300
[bench]
pg1-path=%s
pg1-port=%d
pg1-socket-path=%s
`, peerRepoConf, b.workers, codec, level, filepath.Join(dir, "pgbr-spool"), filepath.Join(dir, "pgbr-lock"), b.c.DataDir, b.c.Port, b.c.Socket)), 0o644)
	for _, p := range []string{peerRepo, filepath.Join(dir, "pgbr-spool"), filepath.Join(dir, "pgbr-lock")} {
		b.mkdir(p)
	}
	peer := func(args ...string) []string { return append([]string{"--config=" + conf, "--stanza=bench"}, args...) }

	// Probe the codec: an option this pgBackRest was built without fails
	// at once (exit 32), before anything else.
	probe := b.r.Command(ctx, nil, "/usr/bin/pgbackrest", "--compress-type="+codec, "--stanza=probe", "--log-level-console=error",
		"--log-level-file=off", "archive-push", "/nonexistent/000000010000000000000001")
	if out, _ := probe.CombinedOutput(); strings.Contains(string(out), "is not allowed for 'compress-type'") {
		return cmp, fmt.Errorf("%s", strings.TrimSpace(string(out)))
	}
	if _, err := b.r.Run(ctx, b.c.Env(), "/usr/bin/pgbackrest", peer("stanza-create")...); err != nil {
		return cmp, err
	}
	// Both tools archive during the backups.
	both := fmt.Sprintf("%s wal-push %s %%p && pgbackrest %s archive-push %%p", b.pgkeep, strings.Join(pkArgs, " "), strings.Join(peer(), " "))
	if err := b.setArchive(ctx, both); err != nil {
		return cmp, err
	}
	// Drain what accumulated while archiving was off, so that neither
	// backup pays for the other's backlog.
	pending, _ := b.c.SQL(ctx, "SELECT pg_walfile_name(pg_switch_wal())")
	if err := b.waitArchived(ctx, pending); err != nil {
		return cmp, err
	}

	fmt.Printf("\n== %s\n", cmp.Name)
	// Both tools read a warm page cache: read the data directory once.
	duRead(b.c.DataDir)
	m, err := b.timed(ctx, b.c.Env(), b.pgkeep, append([]string{"backup", "--quiet"}, pkArgs...)...)
	if err != nil {
		return cmp, err
	}
	m.Stored = pkStored()
	cmp.Pgkeep["backup"] = m
	fmt.Printf("pgkeep backup: %.2fs\n", m.Seconds)
	duRead(b.c.DataDir)
	m, err = b.timed(ctx, b.c.Env(), "/usr/bin/pgbackrest", peer("backup", "--type=full")...)
	if err != nil {
		return cmp, err
	}
	m.Stored = peerStored()
	cmp.Peer["backup"] = m
	fmt.Printf("pgBackRest backup: %.2fs\n", m.Seconds)

	// WAL written after the backups, for the recovery measurement.
	if _, err := b.r.Run(ctx, b.c.Env(), "pgbench", "-n", "-c", "2", "-t", "3000"); err != nil {
		return cmp, err
	}
	last, _ := b.c.SQL(ctx, "SELECT pg_walfile_name(pg_switch_wal())")
	if err := b.waitArchived(ctx, last); err != nil {
		return cmp, err
	}

	// Restore, then recovery to the end of the archive.
	for _, tool := range []string{"pgkeep", "pgbackrest"} {
		target := filepath.Join(dir, "restore-"+tool)
		var m measure
		var err error
		if tool == "pgkeep" {
			m, err = b.timed(ctx, nil, b.pgkeep, append([]string{"restore", "--quiet", "--archive-off", "--pgdata", target}, pkArgs...)...)
		} else {
			b.mkdir(target)
			m, err = b.timed(ctx, nil, "/usr/bin/pgbackrest", peer("restore", "--pg1-path="+target, "--archive-mode=off")...)
		}
		if err != nil {
			return cmp, err
		}
		rec, err := b.recover(ctx, target, dir, tool)
		if err != nil {
			return cmp, err
		}
		res := map[string]measure{"restore": m, "recovery": {Seconds: m.Seconds + rec}}
		for k, v := range res {
			if tool == "pgkeep" {
				cmp.Pgkeep[k] = v
			} else {
				cmp.Peer[k] = v
			}
		}
		fmt.Printf("%s restore: %.2fs, restore + recovery: %.2fs\n", tool, m.Seconds, m.Seconds+rec)
		os.RemoveAll(target)
	}

	// WAL drain: a backlog builds while archiving fails, then each tool
	// archives it; timed until the archiver has caught up.
	for _, tool := range []string{"pgkeep", "pgbackrest"} {
		if err := b.setArchive(ctx, "false"); err != nil {
			return cmp, err
		}
		first, _ := b.c.SQL(ctx, "SELECT pg_walfile_name(pg_current_wal_lsn())")
		for i := 0; i < segments; i++ {
			b.c.SQL(ctx, "SELECT pg_switch_wal() FROM (SELECT pg_logical_emit_message(false, 'bench', repeat('x', 1000000))) s")
			b.c.SQL(ctx, "INSERT INTO noise SELECT g, md5(random()::text), random(), now() FROM generate_series(1, 20000) g")
		}
		last, _ := b.c.SQL(ctx, "SELECT pg_walfile_name(pg_switch_wal())")
		cmd := fmt.Sprintf("%s wal-push %s %s %%p", b.pgkeep, extraPush, strings.Join(pkArgs, " "))
		if tool == "pgbackrest" {
			cmd = fmt.Sprintf("pgbackrest %s archive-push %%p", strings.Join(peer(), " "))
		}
		began := time.Now()
		if err := b.setArchive(ctx, cmd); err != nil {
			return cmp, err
		}
		b.c.SQL(ctx, "SELECT pg_reload_conf()")
		if err := b.waitArchived(ctx, last); err != nil {
			return cmp, err
		}
		secs := time.Since(began).Seconds()
		fmt.Printf("%s drained %s..%s in %.2fs\n", tool, first, last, secs)
		if tool == "pgkeep" {
			cmp.Pgkeep["wal_drain"] = measure{Seconds: secs}
		} else {
			cmp.Peer["wal_drain"] = measure{Seconds: secs}
		}
	}
	return cmp, nil
}

// timed runs a program as the database user and measures wall time and
// peak RSS (of the process tree it waited for).
func (b *bench) timed(ctx context.Context, env []string, name string, args ...string) (measure, error) {
	cmd := b.r.Command(ctx, env, name, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	began := time.Now()
	err := cmd.Run()
	secs := time.Since(began).Seconds()
	if err != nil {
		return measure{}, fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	var rss float64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = float64(ru.Maxrss) / 1024
	}
	return measure{Seconds: secs, RSSMiB: rss}, nil
}

// recover starts a restored cluster and times it until it is promoted.
func (b *bench) recover(ctx context.Context, dataDir, dir, tool string) (float64, error) {
	sock := filepath.Join(dir, "sock-"+tool)
	b.mkdir(sock)
	port, _ := pgctl.FreePort()
	c := &pgctl.Cluster{R: b.r, DataDir: dataDir, Port: port, Socket: sock, LogFile: filepath.Join(dir, "recovery-"+tool+".log")}
	began := time.Now()
	if err := c.Start(ctx); err != nil {
		return 0, err
	}
	defer c.Stop(context.Background(), "immediate")
	for time.Since(began) < 30*time.Minute {
		out, err := c.SQL(ctx, "SELECT pg_is_in_recovery()")
		if err == nil && out == "f" {
			return time.Since(began).Seconds(), nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s: recovery did not finish", tool)
}

func (b *bench) waitArchived(ctx context.Context, seg string) error {
	deadline := time.Now().Add(20 * time.Minute)
	for time.Now().Before(deadline) {
		out, err := b.c.SQL(ctx, "SELECT coalesce(last_archived_wal, '') >= '"+seg+"' FROM pg_stat_archiver")
		if err == nil && out == "t" {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	st, _ := b.c.SQL(ctx, "SELECT row(last_archived_wal, failed_count, last_failed_wal)::text FROM pg_stat_archiver")
	return fmt.Errorf("segment %s not archived in time (%s)", seg, st)
}

func printTable(w io.Writer, c comparison) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "\n%s (pgkeep %s, pgBackRest %s)\n", c.Name, orDefault(c.PgkeepC), c.PeerC)
	fmt.Fprintln(tw, "figure\tpgkeep\tpgBackRest\tratio\t")
	row := func(name string, a, b float64, unit string) {
		ratio := 0.0
		if b > 0 {
			ratio = a / b
		}
		fmt.Fprintf(tw, "%s\t%.2f %s\t%.2f %s\t%.2f\t\n", name, a, unit, b, unit, ratio)
	}
	for _, k := range []string{"backup", "restore", "recovery", "wal_drain"} {
		row(k+" time", c.Pgkeep[k].Seconds, c.Peer[k].Seconds, "s")
	}
	row("backup peak RSS", c.Pgkeep["backup"].RSSMiB, c.Peer["backup"].RSSMiB, "MiB")
	row("restore peak RSS", c.Pgkeep["restore"].RSSMiB, c.Peer["restore"].RSSMiB, "MiB")
	row("backup stored", float64(c.Pgkeep["backup"].Stored)/(1<<20), float64(c.Peer["backup"].Stored)/(1<<20), "MiB")
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
