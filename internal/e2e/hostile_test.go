package e2e

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgkeep/pgkeep/internal/pgtest"
)

// TestSecretsStaySecret plants credentials, a passphrase and a secret key,
// runs every command that prints (help, list, status, verify, errors, JSON)
// and searches all output for them.
func TestSecretsStaySecret(t *testing.T) {
	m := pgtest.StartMinIO(t)
	const passphrase = "pass-PLANTED-7d1f"
	keys := pgtest.TempDir(t, "keys-")
	ident := filepath.Join(keys, "id")
	mustRun(t, nil, "key", "generate", "--output", ident)
	secretKey := readSecret(t, ident)
	passFile := filepath.Join(keys, "pass")
	os.WriteFile(passFile, []byte("passphrase:"+passphrase+"\n"), 0o644)

	env := []string{"AWS_ACCESS_KEY_ID=" + m.AccessKey, "AWS_SECRET_ACCESS_KEY=" + m.SecretKey}
	t.Setenv("AWS_ACCESS_KEY_ID", m.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", m.SecretKey)
	repo := repoSpec{URL: "s3://" + m.Bucket + "/secret-test",
		Args: []string{"--s3-endpoint", m.Endpoint, "--s3-path-style", "--s3-region", m.Region, "--retry-timeout", "5s", "--age-recipients", ident + ".pub"},
		Env:  env}
	reader := repo
	reader.Args = append(append([]string(nil), repo.Args[:len(repo.Args)-2]...), "--age-identity", ident)

	c := archivingCluster(t, repo, nil)
	backup(t, c, repo)
	switchAndWait(t, c)

	var outputs []result
	add := func(r result) { outputs = append(outputs, r) }
	for _, sub := range []string{"", "wal-push", "wal-fetch", "backup", "restore", "list", "status", "verify", "expire", "pin", "key", "demo"} {
		args := []string{"--help"}
		if sub != "" {
			args = []string{sub, "--help"}
		}
		add(run(t, env, args...))
	}
	add(mustRun(t, nil, append([]string{"list"}, reader.Flags()...)...))
	add(mustRun(t, nil, append([]string{"list", "--json"}, reader.Flags()...)...))
	add(mustRun(t, nil, append([]string{"status", "--json"}, reader.Flags()...)...))
	add(mustRun(t, nil, append([]string{"status"}, reader.Flags()...)...))
	add(mustRun(t, nil, append([]string{"verify", "--json"}, reader.Flags()...)...))
	add(run(t, nil, append([]string{"expire", "--keep", "1", "--dry-run", "--json"}, reader.Flags()...)...))
	// Failures: wrong credentials, a wrong passphrase, a URL with
	// credentials in it, a bad flag value.
	add(run(t, []string{"AWS_ACCESS_KEY_ID=" + m.AccessKey, "AWS_SECRET_ACCESS_KEY=" + m.SecretKey + "x"}, append([]string{"list"}, reader.Flags()...)...))
	wrong := reader
	wrong.Args = append(append([]string(nil), repo.Args[:len(repo.Args)-2]...), "--age-identity", passFile)
	add(run(t, nil, append([]string{"list"}, wrong.Flags()...)...))
	add(run(t, nil, "list", "--repo", "s3://"+m.AccessKey+":"+m.SecretKey+"@"+m.Bucket+"/x"))
	add(run(t, nil, append([]string{"list", "--s3-endpoint", "http://user:" + m.SecretKey + "@127.0.0.1:1"}, reader.Flags()...)...))

	// The recovery settings a restore writes name files, not secrets.
	dir := filepath.Join(pgtest.TempDir(t, "restore-"), "data")
	add(mustRun(t, nil, append([]string{"restore", "--pgdata", dir}, reader.Flags()...)...))
	auto, _ := os.ReadFile(filepath.Join(dir, "postgresql.auto.conf"))
	outputs = append(outputs, result{stdout: string(auto)})

	for _, secret := range []string{m.SecretKey, passphrase, secretKey} {
		for i, o := range outputs {
			if strings.Contains(o.stdout, secret) || strings.Contains(o.stderr, secret) {
				t.Errorf("output %d leaks a secret: %s", i, o)
			}
		}
	}
	if len(outputs) < 20 {
		t.Fatalf("only %d outputs checked", len(outputs))
	}
}

func readSecret(t *testing.T, path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "AGE-SECRET-KEY-") {
			return l
		}
	}
	t.Fatal("no secret key in the identity file")
	return ""
}

// TestRestoreModesAndDiskFull: restored files are 0600 and directories
// 0700; a restore into a file system that fills up fails clearly and
// leaves no startable data directory.
func TestRestoreModesAndDiskFull(t *testing.T) {
	repo := fileRepo(t)
	c := archivingCluster(t, repo, nil)
	pgtest.Pgbench(t, c, "-i", "-q", "-s", "3")
	backup(t, c, repo)
	switchAndWait(t, c)

	dir := filepath.Join(pgtest.TempDir(t, "restore-"), "data")
	mustRun(t, nil, append([]string{"restore", "--pgdata", dir}, repo.Flags()...)...)
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, _ := os.Lstat(p)
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
		case d.IsDir() && info.Mode().Perm() != 0o700:
			t.Errorf("directory %s has mode %o", p, info.Mode().Perm())
		case !d.IsDir() && info.Mode().Perm() != 0o600:
			t.Errorf("file %s has mode %o", p, info.Mode().Perm())
		}
		return nil
	})

	// The full disk: a small file system, which only root can mount (CI
	// runs as root). Elsewhere this part is skipped, visibly; with CI=true
	// it fails.
	pgtest.Require(t, "root (to mount a small file system for the full-disk restore)", os.Geteuid() == 0, "run the tests as root")
	small := pgtest.TempDir(t, "small-")
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=12m,mode=0755", "tmpfs", small).CombinedOutput(); err != nil {
		pgtest.Require(t, "tmpfs mounting", false, fmt.Sprintf("%v %s", err, out))
	}
	t.Cleanup(func() { exec.Command("umount", "-l", small).Run() })
	uid, gid := uidOf(t, c.DataDir)
	os.Chown(small, uid, gid)
	target := filepath.Join(small, "data")
	r := run(t, nil, append([]string{"restore", "--pgdata", target}, repo.Flags()...)...)
	if r.code == 0 || !strings.Contains(r.stderr, "no space left on device") {
		t.Fatalf("a restore into a full disk must fail saying so: %s", r)
	}
	if _, err := os.Stat(filepath.Join(target, "global", "pg_control")); err == nil {
		t.Fatal("a failed restore left a startable data directory")
	}
}

func uidOf(t *testing.T, p string) (int, int) {
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return ownerOf(st)
}

// TestMissingCredentials: S3 without any credentials fails clearly.
func TestMissingCredentials(t *testing.T) {
	m := pgtest.StartMinIO(t)
	home := pgtest.TempDir(t, "home-")
	cmd := pgtest.Command(t.Context(), pgkeepBin(t), "list", "--repo", "s3://"+m.Bucket+"/x", "--s3-endpoint", m.Endpoint, "--s3-path-style", "--s3-region", m.Region, "--retry-timeout", "3s")
	// No AWS variables at all, an empty home, and no instance metadata.
	var env []string
	for _, kv := range cmd.Env {
		if !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "HOME="+home, "AWS_EC2_METADATA_DISABLED=true")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "credentials") {
		t.Fatalf("want a clear credentials error, got %v: %s", err, out)
	}
}
