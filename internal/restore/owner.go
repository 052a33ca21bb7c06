package restore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// ErrOwner means the restored files cannot be given to the user
// PostgreSQL runs as: no such user, not root, or that user could not read
// what the restored server needs. It is found before anything is written.
var ErrOwner = errors.New("cannot give the restored files to the database user")

// Owner is the user and group a restore gives every directory and file it
// creates to: when pgkeep runs as root (boot scripts, cloud-init), the
// user PostgreSQL runs as, which refuses a data directory it does not own.
type Owner struct {
	UID, GID int
	// Name is how messages name the owner: "postgres:postgres", or
	// numbers when there is no name.
	Name string
	// groups are the user's groups (primary and supplementary), for the
	// access checks.
	groups []int
}

func (o *Owner) String() string { return o.Name }

// System is what ResolveOwner asks of the host; HostSystem is the real one.
type System struct {
	EUID int
	// Groups are the process's own groups (the effective one included):
	// the groups a user who is not root may give a file to.
	Groups       []int
	LookupUser   func(name string) (*user.User, error)
	LookupUserID func(uid string) (*user.User, error)
	LookupGroup  func(name string) (*user.Group, error)
	Stat         func(path string) (fs.FileInfo, error)
}

// HostSystem returns this process's System.
func HostSystem() System {
	groups, _ := os.Getgroups()
	groups = append(groups, os.Getegid())
	return System{EUID: os.Geteuid(), Groups: groups, LookupUser: user.Lookup, LookupUserID: user.LookupId,
		LookupGroup: user.LookupGroup, Stat: os.Stat}
}

// DefaultDBUser is the user a restore run as root gives its files to when
// neither --owner nor the target's parent names one.
const DefaultDBUser = "postgres"

// ResolveOwner decides who gets the restored files, from --owner
// (USER[:GROUP], names or numbers; "" if not given) and the target:
//
//   - not root, no --owner: nil, the files stay the invoking user's;
//   - not root, --owner: only the invoking user itself (and a group it is
//     a member of); anyone else is refused, since only root can chown;
//   - root, --owner: that user (root itself is refused: PostgreSQL never
//     runs as root);
//   - root, no --owner: the owner of the target, or of its nearest
//     existing parent, unless that is root; else the user postgres; if
//     there is no such user, refused, saying to pass --owner.
//
// The group, when not given, is the user's primary group.
func ResolveOwner(spec, pgdata string, sys System) (*Owner, error) {
	if spec != "" {
		o, err := parseOwner(spec, sys)
		if err != nil {
			return nil, err
		}
		if sys.EUID != 0 {
			if o.UID != sys.EUID {
				return nil, fmt.Errorf("%w: --owner %s: only root can give files to another user; run the restore as root, or as %s itself", ErrOwner, spec, o.Name)
			}
			if !slices.Contains(sys.Groups, o.GID) {
				return nil, fmt.Errorf("%w: --owner %s: this user is not a member of group %d, so it cannot give files to it", ErrOwner, spec, o.GID)
			}
			return o, nil
		}
		if o.UID == 0 {
			return nil, fmt.Errorf("%w: --owner %s: PostgreSQL refuses to run as root; give the user it runs as (usually %s)", ErrOwner, spec, DefaultDBUser)
		}
		return o, nil
	}
	if sys.EUID != 0 {
		return nil, nil
	}
	dir, fi, err := nearestExisting(pgdata, sys.Stat)
	if err != nil {
		return nil, err
	}
	if uid, gid := fileOwner(fi); uid != 0 {
		if u, err := sys.LookupUserID(strconv.Itoa(uid)); err == nil {
			return ownerOf(u, "", sys)
		}
		// A user without a passwd entry (a container's numeric user):
		// the directory's own group.
		return &Owner{UID: uid, GID: gid, Name: fmt.Sprintf("%d:%d", uid, gid), groups: []int{gid}}, nil
	}
	u, err := sys.LookupUser(DefaultDBUser)
	if err != nil {
		return nil, fmt.Errorf("%w: running as root, restore gives the data directory to the user PostgreSQL runs as, but %s belongs to root and there is no user %q: pass --owner USER[:GROUP], the user PostgreSQL runs as", ErrOwner, dir, DefaultDBUser)
	}
	return ownerOf(u, "", sys)
}

// parseOwner reads USER[:GROUP].
func parseOwner(spec string, sys System) (*Owner, error) {
	name, group, _ := strings.Cut(spec, ":")
	if name == "" {
		return nil, fmt.Errorf("%w: --owner %q: want USER or USER:GROUP", ErrOwner, spec)
	}
	var u *user.User
	var err error
	if _, nerr := strconv.Atoi(name); nerr == nil {
		u, err = sys.LookupUserID(name)
		if err != nil {
			// A numeric user need not have a name, but then the group
			// must be given.
			if group == "" {
				return nil, fmt.Errorf("%w: --owner %s: no user has id %s here, so its group is unknown: give it as --owner %s:GROUP", ErrOwner, spec, name, name)
			}
			u = &user.User{Uid: name, Username: name}
		}
	} else if u, err = sys.LookupUser(name); err != nil {
		return nil, fmt.Errorf("%w: --owner %s: there is no user %q on this machine", ErrOwner, spec, name)
	}
	return ownerOf(u, group, sys)
}

// ownerOf makes the Owner for u, with group (a name or number; "" for
// u's primary group).
func ownerOf(u *user.User, group string, sys System) (*Owner, error) {
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("%w: user %s has a non-numeric id %q", ErrOwner, u.Username, u.Uid)
	}
	gidText, groupName := u.Gid, ""
	if group != "" {
		gidText, groupName = group, group
		if _, nerr := strconv.Atoi(group); nerr != nil {
			g, err := sys.LookupGroup(group)
			if err != nil {
				return nil, fmt.Errorf("%w: --owner %s:%s: there is no group %q on this machine", ErrOwner, u.Username, group, group)
			}
			gidText = g.Gid
		}
	}
	gid, err := strconv.Atoi(gidText)
	if err != nil {
		return nil, fmt.Errorf("%w: user %s has no usable group (%q)", ErrOwner, u.Username, gidText)
	}
	o := &Owner{UID: uid, GID: gid, groups: []int{gid}}
	if ids, err := u.GroupIds(); err == nil {
		for _, s := range ids {
			if g, err := strconv.Atoi(s); err == nil && !slices.Contains(o.groups, g) {
				o.groups = append(o.groups, g)
			}
		}
	}
	if groupName == "" {
		if g, err := user.LookupGroupId(gidText); err == nil {
			groupName = g.Name
		} else {
			groupName = gidText
		}
	}
	o.Name = u.Username + ":" + groupName
	return o, nil
}

// nearestExisting returns path, or its nearest parent that exists.
func nearestExisting(path string, stat func(string) (fs.FileInfo, error)) (string, fs.FileInfo, error) {
	for p := filepath.Clean(path); ; p = filepath.Dir(p) {
		fi, err := stat(p)
		if err == nil {
			return p, fi, nil
		}
		if !errors.Is(err, fs.ErrNotExist) || p == "/" || p == "." {
			return "", nil, fmt.Errorf("checking %s: %w", p, err)
		}
	}
}

func fileOwner(fi fs.FileInfo) (uid, gid int) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return -1, -1
}

// CheckReads makes sure the owner can read path (a file) or list and
// enter it (a directory), judged by the mode bits of path and of every
// directory above it; what names path in the error ("the config file").
// ACLs are not consulted.
func (o *Owner) CheckReads(path, what string) error {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrOwner, what, path, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrOwner, what, path, err)
	}
	need := os.FileMode(4) // read
	if fi.IsDir() {
		need = 5 // read and search
	}
	if p, bad := o.deniedOn(filepath.Dir(real)); bad != nil {
		return o.denied(what, path, p, bad, "enter")
	}
	if !o.may(fi, need) {
		return o.denied(what, path, real, fi, "read")
	}
	return nil
}

// CheckReaches makes sure the owner can enter every existing directory
// down to dir (PostgreSQL must reach its data directory); directories the
// restore creates are the owner's.
func (o *Owner) CheckReaches(dir, what string) error {
	p, fi, err := nearestExisting(dir, os.Stat)
	if err != nil {
		return err
	}
	if p == filepath.Clean(dir) {
		p = filepath.Dir(p) // the target itself is given to the owner
	} else if !fi.IsDir() {
		return fmt.Errorf("%s %s: %s is not a directory", what, dir, p)
	}
	if at, bad := o.deniedOn(p); bad != nil {
		return o.denied(what, dir, at, bad, "enter")
	}
	return nil
}

// deniedOn returns the first directory from / down to dir that the owner
// may not search, with its FileInfo, or nil.
func (o *Owner) deniedOn(dir string) (string, fs.FileInfo) {
	dir = filepath.Clean(dir)
	var paths []string
	for p := dir; ; p = filepath.Dir(p) {
		paths = append(paths, p)
		if p == "/" || p == "." {
			break
		}
	}
	for i := len(paths) - 1; i >= 0; i-- {
		fi, err := os.Stat(paths[i])
		if err != nil {
			continue // judged by whoever opens it
		}
		if !o.may(fi, 1) {
			return paths[i], fi
		}
	}
	return "", nil
}

// may applies the mode bits that concern the owner: the user's if it owns
// the file, else the group's if it is in the group, else the others'.
func (o *Owner) may(fi fs.FileInfo, need os.FileMode) bool {
	uid, gid := fileOwner(fi)
	perm := fi.Mode().Perm()
	switch {
	case uid == o.UID:
		perm >>= 6
	case slices.Contains(o.groups, gid):
		perm >>= 3
	}
	return perm&need == need
}

func (o *Owner) denied(what, path, at string, fi fs.FileInfo, verb string) error {
	uid, gid := fileOwner(fi)
	user := strings.SplitN(o.Name, ":", 2)[0]
	return fmt.Errorf("%w: PostgreSQL will run as %s, which cannot %s %s (mode %04o, owner %d:%d), so it could not use %s %s; make it readable by %s (for example chgrp %s and chmod g+rX), or pass --owner",
		ErrOwner, user, verb, at, fi.Mode().Perm(), uid, gid, what, path, user, groupOf(o.Name))
}

func groupOf(name string) string {
	if _, g, ok := strings.Cut(name, ":"); ok {
		return g
	}
	return name
}
