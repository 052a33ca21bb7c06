// Package demo tells pgkeep's story on a throwaway cluster and a local
// repository: archive, back up under load, lose the machine, restore with
// nothing but the repository, and undo a mistake with point-in-time
// recovery. Every step runs the real pgkeep binary as an operator would.
package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pgkeep/pgkeep/internal/pgctl"
	"github.com/pgkeep/pgkeep/internal/pgversion"
)

// Options configures the demo.
type Options struct {
	// Self is the pgkeep binary to run.
	Self string
	// Keep leaves the workspace in place.
	Keep bool
	// Scale is the pgbench scale factor (default 5, about 75 MiB).
	Scale int
	// Out receives the narration.
	Out io.Writer
}

type demo struct {
	opts  Options
	r     *pgctl.Runner
	ws    string // workspace
	bin   string // pgkeep binary, runnable by the postgres user
	repo  string // repository URL
	out   io.Writer
	step  int
	steps int
	start time.Time
}

// Run plays the demo. It returns an error if any step fails or any check
// does not hold.
func Run(ctx context.Context, opts Options) (err error) {
	if opts.Scale <= 0 {
		opts.Scale = 5
	}
	r, err := pgctl.New()
	if err != nil {
		return err
	}
	if r.Major != 0 {
		if err := pgversion.Check(r.Major, "the PostgreSQL in "+r.BinDir); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	d := &demo{opts: opts, r: r, out: opts.Out, steps: 7, start: time.Now()}
	d.ws, err = os.MkdirTemp("", "pgkeep-demo-")
	if err != nil {
		return err
	}
	var clusters []*pgctl.Cluster
	defer func() {
		for _, c := range clusters {
			c.Stop(context.WithoutCancel(ctx), "immediate")
		}
		if opts.Keep || err != nil && os.Getenv("PGKEEP_DEMO_KEEP_ON_FAILURE") != "" {
			fmt.Fprintf(d.out, "\nworkspace kept: %s\n", d.ws)
			return
		}
		os.RemoveAll(d.ws)
	}()
	if err := os.Chmod(d.ws, 0o755); err != nil {
		return err
	}
	if err := r.Chown(d.ws); err != nil {
		return err
	}
	// The archiver runs pgkeep as the postgres user: give it a copy it can run.
	d.bin = filepath.Join(d.ws, "pgkeep")
	if err := copyFile(opts.Self, d.bin, 0o755); err != nil {
		return fmt.Errorf("copying pgkeep into the workspace: %w", err)
	}
	repoDir := filepath.Join(d.ws, "repository")
	d.repo = "file://" + repoDir
	if err := d.mkdir(repoDir); err != nil {
		return err
	}

	fmt.Fprintf(d.out, "pgkeep demo: continuous backup and restore, on a throwaway cluster\n")
	fmt.Fprintf(d.out, "workspace %s, repository %s\n", d.ws, d.repo)

	// 1. A cluster that archives.
	d.say("Create a PostgreSQL cluster (data checksums on) that archives every WAL segment with pgkeep")
	primary, err := d.newCluster(ctx, "primary")
	if err != nil {
		return err
	}
	archiveCmd := fmt.Sprintf("%s wal-push --repo %s %%p", d.bin, d.repo)
	d.detail("archive_command = '%s'", archiveCmd)
	if err := appendConf(primary.DataDir, map[string]string{
		"archive_mode": "on", "archive_command": archiveCmd, "archive_timeout": "60",
		"wal_level": "replica", "max_wal_size": "256MB",
	}); err != nil {
		return err
	}
	if err := primary.Start(ctx); err != nil {
		return err
	}
	clusters = append(clusters, primary)
	version, _ := primary.SQL(ctx, "SHOW server_version")
	d.detail("PostgreSQL %s running on port %d", version, primary.Port)

	// 2. Data, and a backup under load.
	d.say("Load data, then take a base backup while pgbench keeps writing")
	if _, err := d.r.Run(ctx, primary.Env(), "pgbench", "-i", "-q", "-s", strconv.Itoa(opts.Scale)); err != nil {
		return err
	}
	if _, err := primary.SQL(ctx, "CREATE TABLE markers (id int PRIMARY KEY, note text, committed_at timestamptz DEFAULT clock_timestamp())"); err != nil {
		return err
	}
	accounts, _ := primary.SQL(ctx, "SELECT count(*) FROM pgbench_accounts")
	d.detail("pgbench_accounts: %s rows", accounts)
	load := d.r.Command(ctx, primary.Env(), "pgbench", "-n", "-c", "2", "-T", "600")
	if err := load.Start(); err != nil {
		return fmt.Errorf("starting pgbench: %w", err)
	}
	d.detail("pgbench is running (2 clients)")
	time.Sleep(time.Second)
	out, err := d.pgkeep(ctx, primary.Env(), "backup", "--repo", d.repo)
	load.Process.Signal(os.Interrupt)
	load.Wait()
	if err != nil {
		return err
	}
	d.quote(out)

	// 3. Commits after the backup.
	d.say("Commit marker rows after the backup; each is safe once its WAL is archived")
	var between time.Time
	for i := 1; i <= 5; i++ {
		if _, err := primary.SQL(ctx, fmt.Sprintf("INSERT INTO markers (id, note) VALUES (%d, 'marker %d')", i, i)); err != nil {
			return err
		}
		at, _ := primary.SQL(ctx, fmt.Sprintf("SELECT to_char(committed_at AT TIME ZONE 'UTC', 'HH24:MI:SS.MS') FROM markers WHERE id = %d", i))
		d.detail("marker %d committed at %s UTC", i, at)
		if i == 3 {
			t, err := primary.SQL(ctx, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
			if err != nil {
				return err
			}
			if between, err = time.Parse(time.RFC3339Nano, t); err != nil {
				return err
			}
			time.Sleep(1100 * time.Millisecond)
		}
	}
	last, err := primary.SQL(ctx, "SELECT pg_walfile_name(pg_switch_wal())")
	if err != nil {
		return err
	}
	if err := waitArchived(ctx, primary, last); err != nil {
		return err
	}
	d.detail("switched WAL; segment %s is archived", last)

	// 4. Disaster.
	d.say("The machine dies: PostgreSQL is killed and its data directory is gone")
	if err := primary.Stop(ctx, "immediate"); err != nil {
		return err
	}
	clusters = clusters[:0]
	if err := os.RemoveAll(primary.DataDir); err != nil {
		return err
	}
	d.detail("rm -rf %s", primary.DataDir)

	// 5. Restore with nothing but the repository.
	d.say("A fresh machine: restore with the repository URL as the only input, and start PostgreSQL")
	restored, err := d.restore(ctx, "restored")
	if err != nil {
		return err
	}
	clusters = append(clusters, restored)
	n, err := restored.SQL(ctx, "SELECT count(*) FROM markers")
	if err != nil {
		return err
	}
	got, _ := restored.SQL(ctx, "SELECT count(*) FROM pgbench_accounts")
	d.detail("markers back: %s of 5; pgbench_accounts: %s rows", n, got)
	if n != "5" || got != accounts {
		return fmt.Errorf("restored cluster has %s of 5 markers and %s of %s accounts", n, got, accounts)
	}
	d.detail("every committed marker is back")

	// 6. Point in time.
	d.say("Undo a mistake: restore again, to the moment between marker 3 and marker 4")
	d.detail("target time %s", between.Format(time.RFC3339Nano))
	pitr, err := d.restore(ctx, "pitr", "--target-time", between.Format(time.RFC3339Nano), "--archive-off")
	if err != nil {
		return err
	}
	clusters = append(clusters, pitr)
	ids, err := pitr.SQL(ctx, "SELECT string_agg(id::text, ',' ORDER BY id) FROM markers")
	if err != nil {
		return err
	}
	d.detail("markers present: %s (4 and 5 were committed after the target)", ids)
	if ids != "1,2,3" {
		return fmt.Errorf("point-in-time restore has markers %q, want 1,2,3", ids)
	}

	// 7. The repository.
	d.say("What the repository holds: pgkeep list")
	out, err = d.pgkeep(ctx, nil, "list", "--repo", d.repo)
	if err != nil {
		return err
	}
	d.quote(out)
	fmt.Fprintf(d.out, "\ndemo complete in %s: nothing committed before the last archived segment was lost\n", time.Since(d.start).Round(100*time.Millisecond))
	return nil
}

func (d *demo) say(title string) {
	d.step++
	fmt.Fprintf(d.out, "\n[%d/%d] %s\n", d.step, d.steps, title)
}

func (d *demo) detail(format string, args ...any) {
	fmt.Fprintf(d.out, "      "+format+"\n", args...)
}

func (d *demo) quote(out string) {
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		fmt.Fprintf(d.out, "      | %s\n", line)
	}
}

func (d *demo) mkdir(p string) error {
	if err := os.MkdirAll(p, 0o700); err != nil {
		return err
	}
	return d.r.Chown(p)
}

// pgkeep runs the pgkeep binary as the database user and shows the command.
func (d *demo) pgkeep(ctx context.Context, env []string, args ...string) (string, error) {
	fmt.Fprintf(d.out, "      $ pgkeep %s\n", strings.Join(args, " "))
	return d.r.Run(ctx, env, d.bin, args...)
}

func (d *demo) newCluster(ctx context.Context, name string) (*pgctl.Cluster, error) {
	c, err := d.clusterDirs(name)
	if err != nil {
		return nil, err
	}
	if _, err := d.r.Run(ctx, nil, "initdb", "-D", c.DataDir, "-k", "--auth=trust", "-U", "postgres", "-E", "UTF8", "--locale=C"); err != nil {
		return nil, err
	}
	return c, nil
}

func (d *demo) clusterDirs(name string) (*pgctl.Cluster, error) {
	base := filepath.Join(d.ws, name)
	sock := filepath.Join(d.ws, "s-"+name)
	for _, p := range []string{base, sock} {
		if err := d.mkdir(p); err != nil {
			return nil, err
		}
	}
	port, err := pgctl.FreePort()
	if err != nil {
		return nil, err
	}
	return &pgctl.Cluster{R: d.r, DataDir: filepath.Join(base, "data"), Port: port, Socket: sock, LogFile: filepath.Join(base, "server.log")}, nil
}

// restore restores into a new cluster directory, starts it and waits for
// the end of recovery.
func (d *demo) restore(ctx context.Context, name string, extra ...string) (*pgctl.Cluster, error) {
	c, err := d.clusterDirs(name)
	if err != nil {
		return nil, err
	}
	args := append([]string{"restore", "--repo", d.repo, "--pgdata", c.DataDir}, extra...)
	began := time.Now()
	out, err := d.pgkeep(ctx, nil, args...)
	if err != nil {
		return nil, err
	}
	d.quote(out)
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	if err := c.WaitRecovered(ctx, 2*time.Minute, d.r.Major, false); err != nil {
		return nil, err
	}
	d.detail("PostgreSQL replayed the archived WAL and is open for writes (%s after the restore began)", time.Since(began).Round(100*time.Millisecond))
	return c, nil
}

func waitArchived(ctx context.Context, c *pgctl.Cluster, segment string) error {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		out, err := c.SQL(ctx, "SELECT coalesce(last_archived_wal, '') >= '"+segment+"' FROM pg_stat_archiver")
		if err == nil && out == "t" {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, _ := c.SQL(ctx, "SELECT last_archived_wal, last_failed_wal, failed_count FROM pg_stat_archiver")
	return fmt.Errorf("segment %s was not archived within a minute (pg_stat_archiver: %s)", segment, out)
}

func appendConf(datadir string, settings map[string]string) error {
	f, err := os.OpenFile(filepath.Join(datadir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	for k, v := range settings {
		if _, err := fmt.Fprintf(f, "%s = '%s'\n", k, strings.ReplaceAll(v, "'", "''")); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
