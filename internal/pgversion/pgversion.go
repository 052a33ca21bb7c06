// Package pgversion is the one place that says which PostgreSQL major
// versions pgkeep supports, and how it says no to the others. Every check
// of a version pgkeep meets (pg_control, a WAL page header, the server it
// backs up, a backup it restores, a drill's binaries) goes through Check, so
// the range is stated once and the refusal reads the same everywhere.
//
// The facts that differ between majors live with the code that reads them,
// each named for its major: pg_control layouts in internal/pgcontrol, WAL
// page magic in internal/wal, backup functions in internal/backup, the
// restore drill's checks in internal/verify; docs/design.md has the table.
package pgversion

import (
	"errors"
	"fmt"
	"strconv"
)

// The supported range of PostgreSQL major versions, inclusive.
const (
	MinMajor = 12 // the first with recovery.signal (no recovery.conf)
	MaxMajor = 18
)

// Range returns the supported range as people read it: "12 to 18".
func Range() string {
	ms := Majors()
	return strconv.Itoa(ms[0]) + " to " + strconv.Itoa(ms[len(ms)-1])
}

// ErrUnsupported is wrapped by every error about a PostgreSQL version
// outside MinMajor..MaxMajor. errors.As with *UnsupportedError gets the
// major version when it could be told.
var ErrUnsupported = errors.New("unsupported PostgreSQL version")

// UnsupportedError says that a PostgreSQL version is outside the supported
// range.
type UnsupportedError struct {
	// Major is the major version when it can be told, else 0.
	Major int
	// Newer, when Major is 0, says whether the version is newer than
	// MaxMajor (true) or older than MinMajor.
	Newer bool
	// Source is what showed the version, e.g. "pg_control version 1900";
	// it prefixes the message when set.
	Source string
}

func (e *UnsupportedError) Error() string {
	var msg string
	switch newer := e.Major > MaxMajor || (e.Major == 0 && e.Newer); {
	case newer && e.Major > 0:
		msg = fmt.Sprintf("PostgreSQL %d is not supported by this pgkeep (supported: %s): upgrade pgkeep", e.Major, Range())
	case newer:
		msg = fmt.Sprintf("a PostgreSQL newer than %d is not supported by this pgkeep (supported: %s): upgrade pgkeep", MaxMajor, Range())
	case e.Major > 0:
		msg = fmt.Sprintf("PostgreSQL %d is too old for pgkeep (supported: %s)", e.Major, Range())
	default:
		msg = fmt.Sprintf("a PostgreSQL older than %d is too old for pgkeep (supported: %s)", MinMajor, Range())
	}
	if e.Source != "" {
		return e.Source + ": " + msg
	}
	return msg
}

// Is makes errors.Is(err, ErrUnsupported) true.
func (e *UnsupportedError) Is(target error) bool { return target == ErrUnsupported }

// Supported reports whether major is in the supported range.
func Supported(major int) bool { return major >= MinMajor && major <= MaxMajor }

// Check returns nil for a supported major, else an *UnsupportedError.
// source says where the version came from (may be empty).
func Check(major int, source string) error {
	if Supported(major) {
		return nil
	}
	return &UnsupportedError{Major: major, Source: source}
}

// Majors returns the supported majors in order.
func Majors() []int {
	out := make([]int, 0, MaxMajor-MinMajor+1)
	for m := MinMajor; m <= MaxMajor; m++ {
		out = append(out, m)
	}
	return out
}

// MajorOf returns the major version of a server_version_num (150018 is
// 15; since PostgreSQL 10 the major is the number divided by 10000).
func MajorOf(versionNum int) int { return versionNum / 10000 }
