// Package schedule reads when the agent's scheduled work runs: a cron
// expression ("0 3 * * *", "@daily") or a fixed interval ("24h", "90m",
// "7d"). Cron expressions are parsed by robfig/cron/v3's standard parser
// (five fields, descriptors such as @daily and @every); intervals are Go
// durations with an optional d (days) suffix.
package schedule

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedule says when work is next due.
type Schedule interface {
	// Next returns when the work is next due, given when it last ran
	// (zero: never) and the time now. It is never before now.
	Next(last, now time.Time) time.Time
	// String returns the schedule as it was given.
	String() string
}

// MinInterval is the shortest interval accepted: shorter ones are typos
// (3s when 3h was meant) more often than intent, except in tests, which
// is why it is a second and not a minute.
const MinInterval = time.Second

// Parse reads spec: an interval such as "24h", "90m" or "7d", or a cron
// expression in the local time zone ("0 3 * * *": 03:00 every day;
// "@daily", "@hourly"; "CRON_TZ=UTC 0 3 * * *" for another zone).
func Parse(spec string) (Schedule, error) {
	s := strings.TrimSpace(spec)
	if s == "" {
		return nil, fmt.Errorf("empty schedule: give an interval such as 24h, or a cron expression such as \"0 3 * * *\"")
	}
	if d, ok, err := parseInterval(s); ok {
		if err != nil {
			return nil, err
		}
		return interval{d: d, spec: s}, nil
	}
	c, err := cron.ParseStandard(s)
	if err != nil {
		return nil, fmt.Errorf("%q is neither an interval (such as 24h or 7d) nor a cron expression (minute hour day-of-month month day-of-week, such as \"0 3 * * *\", or @daily): %v", spec, err)
	}
	return cronSchedule{s: c, spec: s}, nil
}

// parseInterval reads a Go duration or N d; ok is false when s does not
// look like a duration at all (it is then tried as cron).
func parseInterval(s string) (time.Duration, bool, error) {
	if strings.ContainsAny(s, " *@,/") {
		return 0, false, nil
	}
	var d time.Duration
	if n, found := strings.CutSuffix(s, "d"); found {
		days, err := strconv.ParseFloat(n, 64)
		if err != nil {
			return 0, true, fmt.Errorf("%q is not a number of days", s)
		}
		d = time.Duration(days * float64(24*time.Hour))
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, true, fmt.Errorf("%q is not an interval such as 24h, 90m or 7d, nor a cron expression", s)
		}
	}
	if d < MinInterval {
		return 0, true, fmt.Errorf("interval %q is shorter than %s", s, MinInterval)
	}
	return d, true, nil
}

// interval is due one interval after the last run, or at once when the
// last run is that long ago (or never happened): so a restart neither
// postpones the work nor runs it twice.
type interval struct {
	d    time.Duration
	spec string
}

func (i interval) Next(last, now time.Time) time.Time {
	if last.IsZero() {
		return now
	}
	if n := last.Add(i.d); n.After(now) {
		return n
	}
	return now
}

func (i interval) String() string { return i.spec }

// cronSchedule is due at the next time the expression matches after the
// last run (or after now, when it never ran: a cron schedule does not
// run at start).
type cronSchedule struct {
	s    cron.Schedule
	spec string
}

func (c cronSchedule) Next(last, now time.Time) time.Time {
	from := now
	if !last.IsZero() && last.Before(now) {
		from = last
	}
	n := c.s.Next(from)
	if n.Before(now) {
		// A slot passed since the last run (the agent was down or busy):
		// due now, once, however many were missed.
		return now
	}
	return n
}

func (c cronSchedule) String() string { return c.spec }
