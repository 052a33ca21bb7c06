package restore

import (
	"errors"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeInfo is a FileInfo with an owner.
type fakeInfo struct {
	uid, gid int
	mode     fs.FileMode
}

func (f fakeInfo) Name() string       { return "x" }
func (f fakeInfo) Size() int64        { return 0 }
func (f fakeInfo) Mode() fs.FileMode  { return f.mode }
func (f fakeInfo) ModTime() time.Time { return time.Time{} }
func (f fakeInfo) IsDir() bool        { return f.mode.IsDir() }
func (f fakeInfo) Sys() any           { return &syscall.Stat_t{Uid: uint32(f.uid), Gid: uint32(f.gid)} }

// fakeSystem has the users root (0), postgres (101, group 104) and alice
// (1000, group 1000), the groups postgres, alice and ssl-cert (103), and
// the directories in dirs.
func fakeSystem(euid int, dirs map[string]fakeInfo, withPostgres bool) System {
	users := map[string]*user.User{
		"root":  {Uid: "0", Gid: "0", Username: "root"},
		"alice": {Uid: "1000", Gid: "1000", Username: "alice"},
	}
	if withPostgres {
		users["postgres"] = &user.User{Uid: "101", Gid: "104", Username: "postgres"}
	}
	groups := map[string]*user.Group{"postgres": {Gid: "104", Name: "postgres"}, "alice": {Gid: "1000", Name: "alice"}, "ssl-cert": {Gid: "103", Name: "ssl-cert"}}
	return System{
		EUID:   euid,
		Groups: []int{1000},
		LookupUser: func(name string) (*user.User, error) {
			if u, ok := users[name]; ok {
				return u, nil
			}
			return nil, user.UnknownUserError(name)
		},
		LookupUserID: func(uid string) (*user.User, error) {
			for _, u := range users {
				if u.Uid == uid {
					return u, nil
				}
			}
			return nil, errors.New("unknown user id " + uid)
		},
		LookupGroup: func(name string) (*user.Group, error) {
			if g, ok := groups[name]; ok {
				return g, nil
			}
			return nil, user.UnknownGroupError(name)
		},
		Stat: func(p string) (fs.FileInfo, error) {
			if fi, ok := dirs[p]; ok {
				return fi, nil
			}
			return nil, fs.ErrNotExist
		},
	}
}

func TestResolveOwner(t *testing.T) {
	dir := func(uid, gid int) fakeInfo { return fakeInfo{uid, gid, fs.ModeDir | 0o755} }
	debian := map[string]fakeInfo{"/": dir(0, 0), "/var": dir(0, 0), "/var/lib": dir(0, 0), "/var/lib/postgresql": dir(101, 104)}
	rootOnly := map[string]fakeInfo{"/": dir(0, 0), "/srv": dir(0, 0)}
	numeric := map[string]fakeInfo{"/": dir(0, 0), "/data": dir(70, 70)}
	aliceDir := map[string]fakeInfo{"/": dir(0, 0), "/home": dir(0, 0), "/home/alice": dir(1000, 1000)}
	cases := []struct {
		name         string
		euid         int
		spec, pgdata string
		dirs         map[string]fakeInfo
		noPostgres   bool
		want         string // owner's UID:GID, "" for nil
		wantErr      string
	}{
		{name: "root, the parent's owner", euid: 0, pgdata: "/var/lib/postgresql/15/main", dirs: debian, want: "101:104"},
		{name: "root, root's parent: postgres", euid: 0, pgdata: "/srv/pg/data", dirs: rootOnly, want: "101:104"},
		{name: "root, root's parent, no postgres user", euid: 0, pgdata: "/srv/pg/data", dirs: rootOnly, noPostgres: true, wantErr: "pass --owner"},
		{name: "root, the parent's numeric owner", euid: 0, pgdata: "/data/pg", dirs: numeric, want: "70:70"},
		{name: "root, an existing target's owner", euid: 0, pgdata: "/home/alice", dirs: aliceDir, want: "1000:1000"},
		{name: "root, --owner", euid: 0, spec: "alice", pgdata: "/srv/d", dirs: rootOnly, want: "1000:1000"},
		{name: "root, --owner with group", euid: 0, spec: "postgres:ssl-cert", pgdata: "/srv/d", dirs: rootOnly, want: "101:103"},
		{name: "root, --owner numbers", euid: 0, spec: "70:71", pgdata: "/srv/d", dirs: rootOnly, want: "70:71"},
		{name: "root, --owner unknown number without group", euid: 0, spec: "70", pgdata: "/srv/d", dirs: rootOnly, wantErr: "--owner 70:GROUP"},
		{name: "root, --owner unknown user", euid: 0, spec: "bob", pgdata: "/srv/d", dirs: rootOnly, wantErr: `no user "bob"`},
		{name: "root, --owner unknown group", euid: 0, spec: "postgres:wheel", pgdata: "/srv/d", dirs: rootOnly, wantErr: `no group "wheel"`},
		{name: "root, --owner root", euid: 0, spec: "root", pgdata: "/srv/d", dirs: rootOnly, wantErr: "refuses to run as root"},
		{name: "root, empty --owner user", euid: 0, spec: ":postgres", pgdata: "/srv/d", dirs: rootOnly, wantErr: "USER:GROUP"},
		{name: "not root: files stay the user's", euid: 1000, pgdata: "/var/lib/postgresql/15/main", dirs: debian, want: ""},
		{name: "not root, --owner someone else", euid: 1000, spec: "postgres", pgdata: "/srv/d", dirs: rootOnly, wantErr: "only root can give files to another user"},
		{name: "not root, --owner itself", euid: 1000, spec: "alice", pgdata: "/srv/d", dirs: rootOnly, want: "1000:1000"},
		{name: "not root, --owner itself with a foreign group", euid: 1000, spec: "alice:postgres", pgdata: "/srv/d", dirs: rootOnly, wantErr: "not a member of group 104"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ResolveOwner(tc.spec, tc.pgdata, fakeSystem(tc.euid, tc.dirs, !tc.noPostgres))
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ErrOwner) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("want an ErrOwner error with %q, got %v (owner %v)", tc.wantErr, err, o)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if o != nil {
				got = strconv.Itoa(o.UID) + ":" + strconv.Itoa(o.GID)
			}
			if got != tc.want {
				t.Fatalf("owner %q, want %q", got, tc.want)
			}
		})
	}
}

// TestOwnerAccessChecks judges real files by their mode bits, for an owner
// who is not the files' owner (the test's own user owns them).
func TestOwnerAccessChecks(t *testing.T) {
	// Not t.TempDir: its parent is 0700, which would deny everything.
	base, err := os.MkdirTemp("", "pgkeep-owner-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	uid, gid := os.Getuid(), os.Getgid()
	other := &Owner{UID: uid + 4242, GID: gid + 4242, Name: "pg:pg", groups: []int{gid + 4242}}
	member := &Owner{UID: uid + 4242, GID: gid + 4242, Name: "pg:pg", groups: []int{gid + 4242, gid}}

	conf := filepath.Join(base, "pgkeep.conf")
	os.WriteFile(conf, []byte("repo = /x\n"), 0o640)
	if err := other.CheckReads(conf, "the config file"); err == nil || !errors.Is(err, ErrOwner) || !strings.Contains(err.Error(), "the config file "+conf) {
		t.Fatalf("a 0640 file of another group must be refused, naming it: %v", err)
	}
	if err := member.CheckReads(conf, "the config file"); err != nil {
		t.Fatalf("a member of the file's group reads a 0640 file: %v", err)
	}
	os.Chmod(conf, 0o644)
	if err := other.CheckReads(conf, "the config file"); err != nil {
		t.Fatalf("a 0644 file is readable: %v", err)
	}
	// Through a link, and behind a directory the owner cannot enter.
	hidden := filepath.Join(base, "hidden")
	os.Mkdir(hidden, 0o700)
	key := filepath.Join(hidden, "key")
	os.WriteFile(key, nil, 0o644)
	link := filepath.Join(base, "key-link")
	os.Symlink(key, link)
	if err := other.CheckReads(link, "the age identity file"); err == nil || !strings.Contains(err.Error(), "cannot enter "+hidden) {
		t.Fatalf("a file behind a 0700 directory must be refused, naming the directory: %v", err)
	}
	if err := other.CheckReads(filepath.Join(base, "missing"), "the CA bundle"); err == nil || !errors.Is(err, ErrOwner) {
		t.Fatalf("a missing file: %v", err)
	}
	// A directory needs read and search.
	repoDir := filepath.Join(base, "repo")
	os.Mkdir(repoDir, 0o711)
	if err := other.CheckReads(repoDir, "the repository"); err == nil {
		t.Fatal("a directory the owner cannot list must be refused")
	}
	os.Chmod(repoDir, 0o755)
	if err := other.CheckReads(repoDir, "the repository"); err != nil {
		t.Fatal(err)
	}

	// Reaching a data directory: existing parents must be enterable; the
	// target itself and what is created are the owner's.
	if err := other.CheckReaches(filepath.Join(hidden, "a", "data"), "the data directory"); err == nil || !strings.Contains(err.Error(), "cannot enter "+hidden) {
		t.Fatalf("a data directory below a 0700 directory: %v", err)
	}
	if err := other.CheckReaches(hidden, "the data directory"); err != nil {
		t.Fatalf("the target itself is given to the owner: %v", err)
	}
	if err := other.CheckReaches(filepath.Join(base, "new", "data"), "the data directory"); err != nil {
		t.Fatal(err)
	}
	if err := other.CheckReaches(filepath.Join(conf, "data"), "the data directory"); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("a data directory below a file: %v", err)
	}
}

// TestInspect tells clusters, interrupted restores and other contents
// apart, and refuses each non-empty kind with its own words.
func TestInspect(t *testing.T) {
	mk := func(files ...string) string {
		dir := t.TempDir()
		for _, f := range files {
			p := filepath.Join(dir, filepath.FromSlash(f))
			os.MkdirAll(filepath.Dir(p), 0o700)
			os.WriteFile(p, []byte("15\n"), 0o600)
		}
		return dir
	}
	cases := []struct {
		name       string
		dir        string
		kind       DirKind
		refusal    string // with ifNotExists
		describeIs string
	}{
		{"absent", filepath.Join(t.TempDir(), "nope"), DirEmpty, "", ""},
		{"empty", mk(), DirEmpty, "", ""},
		{"cluster", mk("PG_VERSION", "global/pg_control", "base/1/1"), DirCluster, "already holds a PostgreSQL 15 cluster", "a PostgreSQL 15 cluster"},
		{"cluster without PG_VERSION", mk("global/pg_control"), DirCluster, "already holds a PostgreSQL cluster", "a PostgreSQL cluster"},
		{"running cluster", mk("PG_VERSION", "global/pg_control", "postmaster.pid"), DirCluster, "postmaster.pid", "postmaster.pid says a server may be running there"},
		{"interrupted restore", mk("PG_VERSION", "global/pg_control.pgkeep-restoring", "base/1/1"), DirInterrupted, "did not finish", ""},
		{"something else", mk("lost+found/x"), DirOther, "is not a PostgreSQL cluster", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, err := Inspect(tc.dir)
			if err != nil {
				t.Fatal(err)
			}
			if st.Kind != tc.kind {
				t.Fatalf("kind %d, want %d", st.Kind, tc.kind)
			}
			if tc.describeIs != "" && !strings.Contains(st.Describe(), tc.describeIs) {
				t.Fatalf("Describe() = %q, want %q in it", st.Describe(), tc.describeIs)
			}
			err = refuseNonEmpty(tc.dir, st, true)
			if tc.refusal == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrNotEmpty) || !strings.Contains(err.Error(), tc.refusal) {
				t.Fatalf("want ErrNotEmpty with %q, got %v", tc.refusal, err)
			}
		})
	}
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o600)
	if _, err := Inspect(file); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("a file as target: %v", err)
	}
}
