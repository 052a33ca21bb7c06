package observe

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The Prometheus text exposition format (version 0.0.4), written by hand.
// pgkeep's metrics are gauges and counters computed at each scrape, so
// what a client library adds (registries, collectors, histograms,
// protobuf) is not needed, and its package initialisation (the default
// registry's Go and process collectors, procfs's regular expressions,
// protobuf descriptors: about 110 page faults and 4 ms of CPU on these
// VMs) was paid by every pgkeep process, every wal-push and wal-fetch
// call included, since one binary holds them all.

// contentType is the exposition format's media type.
const contentType = "text/plain; version=0.0.4; charset=utf-8"

// metricDesc describes one metric family: its name, help, type and label
// names.
type metricDesc struct {
	name, help, typ string
	labels          []string
	// order lists the labels' indexes in name order, the order the
	// Prometheus clients write them in (what scrapers and string matches
	// on the output expect).
	order []int
}

func newDesc(typ, name, help string, labels []string) *metricDesc {
	order := make([]int, len(labels))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return labels[order[a]] < labels[order[b]] })
	return &metricDesc{name: name, help: help, typ: typ, labels: labels, order: order}
}

func gaugeDesc(name, help string, labels ...string) *metricDesc {
	return newDesc("gauge", name, help, labels)
}

func counterDesc(name, help string, labels ...string) *metricDesc {
	return newDesc("counter", name, help, labels)
}

// exposition gathers the samples of one scrape, grouped by family in the
// order families first appear, and writes them.
type exposition struct {
	order   []*metricDesc
	samples map[*metricDesc][]string // formatted sample lines
}

func newExposition() *exposition {
	return &exposition{samples: map[*metricDesc][]string{}}
}

// add records one sample of d with the given label values (as many as d
// has label names; a mismatch is a programming error and panics).
func (e *exposition) add(d *metricDesc, v float64, values ...string) {
	if len(values) != len(d.labels) {
		panic(fmt.Sprintf("metric %s: %d label values for %d labels", d.name, len(values), len(d.labels)))
	}
	if _, ok := e.samples[d]; !ok {
		e.order = append(e.order, d)
	}
	var b strings.Builder
	b.WriteString(d.name)
	if len(values) > 0 {
		b.WriteByte('{')
		for k, i := range d.order {
			if k > 0 {
				b.WriteByte(',')
			}
			b.WriteString(d.labels[i])
			b.WriteString(`="`)
			b.WriteString(escapeLabel(values[i]))
			b.WriteByte('"')
		}
		b.WriteByte('}')
	}
	b.WriteByte(' ')
	b.WriteString(formatValue(v))
	e.samples[d] = append(e.samples[d], b.String())
}

// writeTo writes every family: HELP, TYPE, then its samples.
func (e *exposition) writeTo(w io.Writer) error {
	bw := bufio.NewWriter(w)
	for _, d := range e.order {
		fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s %s\n", d.name, escapeHelp(d.help), d.name, d.typ)
		for _, s := range e.samples[d] {
			bw.WriteString(s)
			bw.WriteByte('\n')
		}
	}
	return bw.Flush()
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }

// formatValue formats a sample value as the format wants it (+Inf, -Inf,
// NaN spelled so).
func formatValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// The Go runtime's and the process's figures, under the names the
// Prometheus clients use for them, so existing dashboards work.
var (
	descGoroutines = gaugeDesc("go_goroutines", "Number of goroutines that currently exist.")
	descGoInfo     = gaugeDesc("go_info", "Information about the Go environment.", "version")
	descHeapAlloc  = gaugeDesc("go_memstats_alloc_bytes", "Number of bytes allocated in heap and currently in use.")
	descHeapInuse  = gaugeDesc("go_memstats_heap_inuse_bytes", "Number of heap bytes that are in use.")
	descSys        = gaugeDesc("go_memstats_sys_bytes", "Number of bytes obtained from system.")
	descGCs        = counterDesc("go_gc_cycles_total", "Number of completed garbage collection cycles.")
	descGCPause    = counterDesc("go_gc_pause_seconds_total", "Total time the garbage collector stopped the world.")
	descCPU        = counterDesc("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.")
	descRSS        = gaugeDesc("process_resident_memory_bytes", "Resident memory size in bytes.")
	descVSZ        = gaugeDesc("process_virtual_memory_bytes", "Virtual memory size in bytes.")
	descOpenFDs    = gaugeDesc("process_open_fds", "Number of open file descriptors.")
	descMaxFDs     = gaugeDesc("process_max_fds", "Maximum number of open file descriptors.")
	descStartTime  = gaugeDesc("process_start_time_seconds", "Start time of the process since unix epoch in seconds.")
)

// processStart is when this process started (near enough: when the
// package was initialised).
var processStart = time.Now()

// addRuntime adds the Go runtime's and the process's figures.
func addRuntime(e *exposition) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	e.add(descGoroutines, float64(runtime.NumGoroutine()))
	e.add(descGoInfo, 1, runtime.Version())
	e.add(descHeapAlloc, float64(ms.HeapAlloc))
	e.add(descHeapInuse, float64(ms.HeapInuse))
	e.add(descSys, float64(ms.Sys))
	e.add(descGCs, float64(ms.NumGC))
	e.add(descGCPause, float64(ms.PauseTotalNs)/1e9)
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		e.add(descCPU, cpu.Seconds())
	}
	if rss, vsz, ok := procStatm(); ok {
		e.add(descRSS, float64(rss))
		e.add(descVSZ, float64(vsz))
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		e.add(descOpenFDs, float64(len(fds)))
	}
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		e.add(descMaxFDs, float64(lim.Cur))
	}
	e.add(descStartTime, float64(processStart.UnixNano())/1e9)
}

// procStatm reads the resident and virtual sizes from /proc/self/statm
// (Linux; ok is false elsewhere).
func procStatm() (rss, vsz int64, ok bool) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, 0, false
	}
	size, err1 := strconv.ParseInt(f[0], 10, 64)
	res, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	page := int64(os.Getpagesize())
	return res * page, size * page, true
}
