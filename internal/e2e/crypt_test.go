package e2e

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgkeep/pgkeep/internal/pgtest"
)

// TestEncryption: a repository set up with age recipients stores no
// plaintext; readers need the identity; wrong or missing identities and
// different recipients are refused with clear messages; restore works.
func TestEncryption(t *testing.T) {
	for _, mode := range []string{"keys", "passphrase"} {
		t.Run(mode, func(t *testing.T) {
			keys := pgtest.TempDir(t, "keys-")
			var rec, ident string
			if mode == "keys" {
				ident = filepath.Join(keys, "id")
				mustRun(t, nil, "key", "generate", "--output", ident)
				rec = ident + ".pub"
			} else {
				rec, ident = filepath.Join(keys, "pass"), filepath.Join(keys, "pass")
				os.WriteFile(rec, []byte("passphrase:correct horse battery staple\n"), 0o644)
			}
			repo := fileRepo(t)
			writer := repo
			writer.Args = append(append([]string(nil), repo.Args...), "--age-recipients", rec)
			reader := repo
			reader.Args = append(append([]string(nil), repo.Args...), "--age-identity", ident)

			c := archivingCluster(t, writer, nil)
			canary := "PGKEEP-PLAINTEXT-CANARY-" + mode
			c.Exec(t, "CREATE TABLE secrets (s text)")
			c.Exec(t, "INSERT INTO secrets SELECT '"+canary+"' || g FROM generate_series(1, 2000) g")
			// The backup is a writer: it needs no secret.
			backup(t, c, writer)
			c.Exec(t, "INSERT INTO secrets VALUES ('"+canary+"-after')")
			switchAndWait(t, c)

			root := strings.TrimPrefix(repo.URL, "file://")
			for _, needle := range []string{canary, "base/1/", "START WAL LOCATION", "pg_control", "secrets"} {
				filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
					if err != nil || d.IsDir() {
						return nil
					}
					data, _ := os.ReadFile(p)
					if bytes.Contains(data, []byte(needle)) {
						t.Errorf("plaintext %q found in %s", needle, p)
					}
					return nil
				})
			}

			// Without the identity, list works (times, LSNs, sizes) but
			// the contents stay sealed: restore is refused, not misled.
			if r := run(t, nil, append([]string{"list"}, repo.Flags()...)...); r.code != 0 || strings.Contains(r.stdout, "base/") {
				t.Fatalf("list without the identity: %s", r)
			}
			if r := run(t, nil, append([]string{"restore", "--pgdata", filepath.Join(keys, "norestore")}, repo.Flags()...)...); r.code == 0 || !strings.Contains(r.stderr, "--age-identity") {
				t.Fatalf("restore without the identity: %s", r)
			}
			seg := c.QueryString(t, "SELECT pg_walfile_name(pg_current_wal_lsn())")
			_ = seg
			// A wrong identity names what the repository expects.
			other := filepath.Join(keys, "other")
			mustRun(t, nil, "key", "generate", "--output", other)
			wrong := repo
			wrong.Args = append(append([]string(nil), repo.Args...), "--age-identity", other)
			if r := run(t, nil, append([]string{"list"}, wrong.Flags()...)...); r.code != 3 || !strings.Contains(r.stderr, "encrypted for") {
				t.Fatalf("list with a wrong identity: %s", r)
			}
			// A writer with other recipients is refused.
			wrongW := repo
			wrongW.Args = append(append([]string(nil), repo.Args...), "--age-recipients", other+".pub")
			c.Exec(t, "SELECT pg_logical_emit_message(false, 'x', 'y')")
			next := c.QueryString(t, "SELECT pg_walfile_name(pg_current_wal_lsn())")
			c.QueryString(t, "SELECT pg_switch_wal()::text")
			r := run(t, nil, append(append([]string{"wal-push"}, wrongW.Flags()...), filepath.Join(c.DataDir, "pg_wal", next))...)
			if r.code != 3 || !strings.Contains(r.stderr, "recipients") {
				t.Fatalf("wal-push with other recipients: %s", r)
			}

			mustRun(t, nil, append([]string{"verify"}, reader.Flags()...)...)
			c.Stop(t, "immediate")
			rc := restoreAndStart(t, reader, "--archive-off")
			if got := rc.QueryString(t, "SELECT count(*)::text FROM secrets WHERE s LIKE '"+canary+"%'"); got != "2001" {
				t.Fatalf("restored rows: %s", got)
			}
		})
	}
}
