package schedule

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 30, 0, 0, time.UTC)
	for _, c := range []struct {
		spec       string
		last       time.Time
		want       time.Time
		wantErrHas string
	}{
		{spec: "24h", want: now}, // never ran: due at once
		{spec: "24h", last: now.Add(-time.Hour), want: now.Add(23 * time.Hour)},
		{spec: "24h", last: now.Add(-30 * time.Hour), want: now},
		{spec: "7d", last: now.Add(-24 * time.Hour), want: now.Add(6 * 24 * time.Hour)},
		{spec: "1.5d", last: now, want: now.Add(36 * time.Hour)},
		{spec: "3s", last: now, want: now.Add(3 * time.Second)},
		{spec: "CRON_TZ=UTC 0 3 * * *", want: time.Date(2026, 3, 11, 3, 0, 0, 0, time.UTC)},
		{spec: "CRON_TZ=UTC 0 3 * * *", last: time.Date(2026, 3, 10, 3, 0, 0, 0, time.UTC), want: time.Date(2026, 3, 11, 3, 0, 0, 0, time.UTC)},
		// A slot missed since the last run: due now, once.
		{spec: "CRON_TZ=UTC 0 3 * * *", last: time.Date(2026, 3, 8, 3, 0, 0, 0, time.UTC), want: now},
		{spec: "CRON_TZ=UTC @hourly", last: now.Add(-10 * time.Minute), want: time.Date(2026, 3, 10, 13, 0, 0, 0, time.UTC)},
		{spec: "", wantErrHas: "empty schedule"},
		{spec: "24", wantErrHas: "not an interval"},
		{spec: "500ms", wantErrHas: "shorter than"},
		{spec: "xd", wantErrHas: "number of days"},
		{spec: "0 3 * *", wantErrHas: "neither an interval"},
		{spec: "61 * * * *", wantErrHas: "neither an interval"},
		{spec: "daily", wantErrHas: "not an interval"},
	} {
		s, err := Parse(c.spec)
		if c.wantErrHas != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErrHas) {
				t.Errorf("Parse(%q): error %v, want one saying %q", c.spec, err, c.wantErrHas)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", c.spec, err)
			continue
		}
		if got := s.Next(c.last, now); !got.Equal(c.want) {
			t.Errorf("Parse(%q).Next(%v, now) = %v, want %v", c.spec, c.last, got, c.want)
		}
		if s.String() != c.spec {
			t.Errorf("String() = %q, want %q", s.String(), c.spec)
		}
	}
}
