package progress

import (
	"fmt"
	"io"
	"sync"

	"github.com/schollz/progressbar/v3"
)

// Bar draws a terminal progress bar with bytes, rate and ETA for each
// phase; Logf lines are printed above it.
type Bar struct {
	W  io.Writer
	mu sync.Mutex
	b  *progressbar.ProgressBar
}

// NewBar returns a Bar writing to w (a terminal).
func NewBar(w io.Writer) *Bar { return &Bar{W: w} }

func (b *Bar) Begin(phase string, total int64) {
	b.End()
	b.mu.Lock()
	defer b.mu.Unlock()
	if total <= 0 {
		total = -1
	}
	b.b = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(b.W),
		progressbar.OptionSetDescription(phase),
		progressbar.OptionShowBytes(true),
		progressbar.OptionUseIECUnits(true), // MiB, as in every other line pgkeep prints
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100_000_000),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionFullWidth(),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(b.W) }),
	)
}

func (b *Bar) Advance(n int64) {
	b.mu.Lock()
	bar := b.b
	b.mu.Unlock()
	if bar != nil {
		bar.Add64(n)
	}
}

func (b *Bar) End() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b != nil {
		b.b.Finish()
		b.b = nil
	}
}

func (b *Bar) Logf(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.b != nil {
		b.b.Clear()
	}
	fmt.Fprintf(b.W, format+"\n", args...)
}
