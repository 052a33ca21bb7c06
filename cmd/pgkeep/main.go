// Command pgkeep keeps a PostgreSQL cluster continuously backed up in an
// object store and restores it anywhere, to any moment.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
)

func main() {
	// PGKEEP_CPUPROFILE=FILE writes a CPU profile, for performance work.
	if p := os.Getenv("PGKEEP_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.LookupEnv)
	stop()
	pprof.StopCPUProfile()
	os.Exit(code)
}
