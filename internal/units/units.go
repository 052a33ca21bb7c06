// Package units formats quantities for people: sizes in IEC units (KiB,
// MiB, ...), as every message, table and progress line of pgkeep shows
// them, and durations rounded to what a reader needs.
package units

import (
	"fmt"
	"time"
)

// Bytes formats n bytes with binary units: "512 B", "1.5 KiB", "22.1 MiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	neg := ""
	if n < 0 {
		neg, n = "-", -n
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%s%.1f %ciB", neg, float64(n)/float64(div), "KMGTPE"[exp])
}

// Duration rounds d for display: to the millisecond below a second, to
// the second above a minute, else to a tenth of a second.
func Duration(d time.Duration) string {
	switch {
	case d < time.Second && d > -time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute && d > -time.Minute:
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
