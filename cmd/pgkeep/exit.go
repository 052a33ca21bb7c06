package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/pgkeep/pgkeep/internal/envelope"
	"github.com/pgkeep/pgkeep/internal/pgversion"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/restore"
)

// Exit codes. They are part of the interface: scripts, monitoring and
// PostgreSQL's restore_command depend on them (docs/design.md lists them).
const (
	exitOK = 0
	// exitFailure: the operation failed. For wal-fetch it means only "the
	// file is not in the archive".
	exitFailure = 1
	// exitUsage: bad flags, arguments or configuration.
	exitUsage = 2
	// exitRefused: pgkeep refused to do something unsafe (different content
	// under an archived name, a file from another cluster, a non-empty
	// target directory, a PostgreSQL version it does not support).
	exitRefused = 3
	// exitCorrupt: stored data failed verification.
	exitCorrupt = 4
	// exitFetchFailed: wal-fetch could not tell whether the file exists.
	// PostgreSQL treats an exit status above 125 from restore_command as
	// fatal and stops recovery, instead of taking it as the end of the
	// archive and promoting with data missing.
	exitFetchFailed = 126
)

// exitError carries an explicit exit code; quiet suppresses the message.
type exitError struct {
	code  int
	err   error
	quiet bool
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

// usageError marks bad invocations.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// refusedError marks refusals that are not repository conflicts.
var errRefused = errors.New("refused")

// exitCode maps an error to the documented exit code and prints it.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	code := exitFailure
	var ee *exitError
	var ue *usageError
	switch {
	case errors.As(err, &ee):
		code = ee.code
		if ee.quiet {
			return code
		}
	case errors.As(err, &ue), errors.Is(err, restore.ErrOwner):
		code = exitUsage
	case errors.Is(err, repo.ErrConflict), errors.Is(err, repo.ErrForeignCluster), errors.Is(err, errRefused),
		errors.Is(err, restore.ErrNotEmpty), errors.Is(err, restore.ErrDeltaTarget), errors.Is(err, repo.ErrKeys), errors.Is(err, pgversion.ErrUnsupported):
		code = exitRefused
	case errors.Is(err, envelope.ErrCorrupt):
		code = exitCorrupt
	}
	msg := err.Error()
	if !strings.HasSuffix(msg, "\n") {
		msg += "\n"
	}
	fmt.Fprint(stderr, "pgkeep: ", msg)
	return code
}
