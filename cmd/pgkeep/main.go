// Command pgkeep keeps a PostgreSQL cluster continuously backed up in an
// object store and restores it anywhere, to any moment.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
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
	// Keep peak memory bounded whatever the database size: a soft limit
	// makes the collector work harder before the heap grows past it.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(96 << 20)
	}
	// PGKEEP_MEMPROFILE=FILE writes a profile of every allocation made.
	memProfile := os.Getenv("PGKEEP_MEMPROFILE")
	if memProfile != "" {
		runtime.MemProfileRate = 4096
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.LookupEnv)
	stop()
	pprof.StopCPUProfile()
	if memProfile != "" {
		if f, err := os.Create(memProfile); err == nil {
			pprof.Lookup("allocs").WriteTo(f, 0)
			f.Close()
		}
	}
	os.Exit(code)
}
