package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/pgtest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// pgkeepBin builds the pgkeep binary once per test process into a
// directory the postgres user can read.
func pgkeepBin(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pgkeep-bin-")
		if err != nil {
			buildErr = err
			return
		}
		os.Chmod(dir, 0o755)
		binPath = filepath.Join(dir, "pgkeep")
		args := []string{"build", "-o", binPath}
		if os.Getenv("GOCOVERDIR") != "" {
			// make cover: the binary records what it ran (in GOCOVERDIR,
			// which every process the tests start inherits).
			args = append(args, "-cover", "-coverpkg=github.com/pgkeep/pgkeep/...")
		}
		cmd := exec.Command("go", append(args, "github.com/pgkeep/pgkeep/cmd/pgkeep")...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building pgkeep: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// repoSpec is a repository under test and how to reach it.
type repoSpec struct {
	URL  string
	Args []string // flags besides --repo
	Env  []string // credentials and the like
}

// Flags returns --repo URL plus the extra flags.
func (r repoSpec) Flags() []string { return append([]string{"--repo", r.URL}, r.Args...) }

// Shell returns the repository part of a command line for archive_command:
// environment assignments (through env) and flags.
func (r repoSpec) Shell(bin, sub string) string {
	parts := []string{}
	if len(r.Env) > 0 {
		parts = append(parts, "env")
		parts = append(parts, r.Env...)
	}
	parts = append(parts, bin, sub)
	parts = append(parts, r.Flags()...)
	return strings.Join(parts, " ")
}

func fileRepo(t testing.TB) repoSpec {
	dir := pgtest.TempDir(t, "pgkeep-repo-")
	return repoSpec{URL: "file://" + filepath.Join(dir, "repo")}
}

// s3Repo returns a repository in a fresh bucket of the shared MinIO.
func s3Repo(t *testing.T) repoSpec {
	m := pgtest.StartMinIO(t)
	bucket := m.Bucket
	// Servers started by the test (restore_command) get credentials the way
	// a real one would: from their environment.
	t.Setenv("AWS_ACCESS_KEY_ID", m.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", m.SecretKey)
	return repoSpec{
		URL:  "s3://" + bucket + "/cluster-a",
		Args: []string{"--s3-endpoint", m.Endpoint, "--s3-path-style", "--s3-region", m.Region, "--retry-timeout", "20s"},
		Env:  []string{"AWS_ACCESS_KEY_ID=" + m.AccessKey, "AWS_SECRET_ACCESS_KEY=" + m.SecretKey},
	}
}

// result is what a pgkeep run produced.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs pgkeep as the database's OS user with env added.
func run(t testing.TB, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := pgtest.Command(ctx, pgkeepBin(t), args...)
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running pgkeep %v: %v", args, err)
	}
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// mustRun runs pgkeep and fails the test unless it exits 0.
func mustRun(t testing.TB, env []string, args ...string) result {
	t.Helper()
	r := run(t, env, args...)
	if r.code != 0 {
		t.Fatalf("pgkeep %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// archivingCluster creates a started cluster of the default PostgreSQL
// that archives into repo.
func archivingCluster(t *testing.T, repo repoSpec, conf map[string]string) *pgtest.Cluster {
	t.Helper()
	return archivingClusterOf(t, 0, repo, conf)
}

// archivingClusterOf is archivingCluster for one major version (0: the
// default PostgreSQL).
func archivingClusterOf(t *testing.T, major int, repo repoSpec, conf map[string]string) *pgtest.Cluster {
	t.Helper()
	settings := map[string]string{
		"archive_mode":    "on",
		"archive_command": repo.Shell(pgkeepBin(t), "wal-push") + " %p",
		"max_wal_size":    "1GB",
	}
	for k, v := range conf {
		settings[k] = v
	}
	c := pgtest.NewCluster(t, pgtest.Options{Major: major, Conf: settings})
	c.Start(t)
	return c
}

// switchAndWait forces a WAL switch and waits until the archiver has
// archived the segment that was current; it returns that segment's name.
func switchAndWait(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	// Write a little WAL first: a switch with nothing new is a no-op.
	c.Exec(t, "SELECT pg_logical_emit_message(false, 'pgkeep-test', 'switch')")
	seg := c.QueryString(t, "SELECT pg_walfile_name(pg_switch_wal())")
	waitArchived(t, c, seg)
	return seg
}

func waitArchived(t *testing.T, c *pgtest.Cluster, seg string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if c.QueryString(t, "SELECT (coalesce(last_archived_wal, '') >= $1)::text FROM pg_stat_archiver", seg) == "true" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("segment %s not archived in time; pg_stat_archiver: %s\nserver log:\n%s", seg,
		c.QueryString(t, "SELECT row(archived_count, last_archived_wal, failed_count, last_failed_wal)::text FROM pg_stat_archiver"), c.Log())
}
