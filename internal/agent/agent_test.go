package agent

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/pgversion"
	"github.com/pgkeep/pgkeep/internal/repo"
	"github.com/pgkeep/pgkeep/internal/stream"
)

// Only what retrying cannot mend stops the agent; the server going away,
// the network and the store are retried.
func TestFatal(t *testing.T) {
	for _, c := range []struct {
		err   error
		fatal bool
	}{
		{fmt.Errorf("x: %w", ErrMissingWAL), true},
		{fmt.Errorf("x: %w", ErrSlot), true},
		{fmt.Errorf("x: %w", repo.ErrConflict), true},
		{fmt.Errorf("x: %w", repo.ErrForeignCluster), true},
		{fmt.Errorf("x: %w", pgversion.ErrUnsupported), true},
		{fmt.Errorf("x: %w", stream.ErrWALRemoved), false}, // turned into ErrMissingWAL, with the range
		{errors.New("connecting to the database server: connection refused"), false},
		{errors.New("storing streamed piece: gave up after 5 attempts"), false},
	} {
		if got := fatal(c.err); got != c.fatal {
			t.Errorf("fatal(%v) = %v", c.err, got)
		}
	}
}

func TestDefaults(t *testing.T) {
	a := New(Config{})
	if c := a.Config(); c.Slot != "pgkeep" || c.Interval != time.Second || c.MaxBackoff != 30*time.Second {
		t.Fatalf("defaults: %+v", c)
	}
}
