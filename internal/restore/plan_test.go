package restore

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/wal"
	"github.com/pgkeep/pgkeep/internal/walrec"
)

const segSize = 16 << 20

func manifest(id string, stop time.Time, startLSN, stopLSN wal.LSN) *catalog.Manifest {
	return &catalog.Manifest{Summary: catalog.Summary{
		ID: id, StopTime: stop, StartTime: stop.Add(-time.Minute), Timeline: 1, WalSegSize: segSize,
		StartLSN: startLSN.String(), StopLSN: stopLSN.String(),
		StartWAL: wal.SegmentName(1, wal.SegmentOf(startLSN, segSize), segSize),
		StopWAL:  wal.SegmentName(1, wal.SegmentOf(stopLSN-1, segSize), segSize),
	}}
}

// index builds a WAL index holding segments [from, to] on timeline 1,
// except those in missing, newest archived at newest.
func index(t *testing.T, from, to uint64, newest time.Time, missing ...uint64) *catalog.WALIndex {
	t.Helper()
	tl := catalog.NewTimelineWAL(1, segSize)
	skip := map[uint64]bool{}
	for _, m := range missing {
		skip[m] = true
	}
	for n := from; n <= to; n++ {
		if !skip[n] {
			tl.Add(n, newest)
		}
	}
	return &catalog.WALIndex{SegSize: segSize, Timelines: []*catalog.TimelineWAL{tl}}
}

func TestChooseBackup(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	b1 := manifest("20261124T095900Z", t0, 0x2000028, 0x2000200)                // segment 2
	b2 := manifest("20261124T105900Z", t0.Add(time.Hour), 0x5000028, 0x5000200) // segment 5
	backups := []*catalog.Manifest{b1, b2}
	ix := index(t, 2, 8, t0.Add(2*time.Hour))
	at := func(d time.Duration) *time.Time { v := t0.Add(d); return &v }
	lsn := func(l wal.LSN) *wal.LSN { return &l }

	cases := []struct {
		name    string
		backups []*catalog.Manifest
		ix      *catalog.WALIndex
		id      string
		target  Target
		want    string
		wantErr string
	}{
		{name: "latest by default", want: b2.ID},
		{name: "by id", id: b1.ID, want: b1.ID},
		{name: "unknown id", id: "20200101T000000Z", wantErr: "no complete backup"},
		{name: "time between backups", target: Target{Time: at(30 * time.Minute)}, want: b1.ID},
		{name: "time after second backup", target: Target{Time: at(90 * time.Minute)}, want: b2.ID},
		{name: "time exactly at a stop", target: Target{Time: at(time.Hour)}, want: b2.ID},
		{name: "time before earliest", target: Target{Time: at(-time.Minute)}, wantErr: "before the earliest restorable moment"},
		{name: "time past the archive", target: Target{Time: at(3 * time.Hour)}, wantErr: "past the end of the archived WAL"},
		{name: "time before chosen backup with id", id: b2.ID, target: Target{Time: at(30 * time.Minute)}, wantErr: "before backup"},
		{name: "lsn picks the backup before it", target: Target{LSN: lsn(0x4000000)}, want: b1.ID},
		{name: "lsn before earliest", target: Target{LSN: lsn(0x1000000)}, wantErr: "before the earliest restorable LSN"},
		{name: "lsn past the archive", target: Target{LSN: lsn(0x9000001)}, wantErr: "past the end of the archived WAL"},
		{name: "no backups", backups: []*catalog.Manifest{}, wantErr: "no complete backup"},
		{name: "wal gap inside the backup range", ix: index(t, 2, 8, t0, 5), wantErr: "not all in the repository"},
		{name: "xid uses the latest", target: Target{XID: "1234"}, want: b2.ID},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bs := backups
			if c.backups != nil {
				bs = c.backups
			}
			x := ix
			if c.ix != nil {
				x = c.ix
			}
			got, _, err := ChooseBackup(bs, x, nil, c.id, c.target)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != c.want {
				t.Fatalf("chose %s, want %s", got.ID, c.want)
			}
		})
	}
}

func TestUnreachableIsTyped(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	b := manifest("20261124T095900Z", t0, 0x2000028, 0x2000200)
	before := t0.Add(-time.Hour)
	_, _, err := ChooseBackup([]*catalog.Manifest{b}, index(t, 2, 3, t0), nil, "", Target{Time: &before})
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("got %v, want ErrUnreachable", err)
	}
}

func TestTargetValidate(t *testing.T) {
	now := time.Now()
	if err := (Target{Time: &now, XID: "5"}).Validate(); err == nil {
		t.Error("two targets accepted")
	}
	if err := (Target{Action: "explode", Immediate: true}).Validate(); err == nil {
		t.Error("bad action accepted")
	}
	if err := (Target{Action: "pause"}).Validate(); err == nil {
		t.Error("action without target accepted")
	}
	if err := (Target{Name: "before-migration", Action: "shutdown"}).Validate(); err != nil {
		t.Error(err)
	}
}

func TestRecoveryConf(t *testing.T) {
	m := manifest("20261124T095900Z", time.Now(), 0x2000028, 0x2000200)
	lsn := wal.LSN(0x3000060)
	conf := recoveryConf(m, Options{RestoreCommand: "/usr/bin/pgkeep wal-fetch --repo 's3://b/it''s' %f %p", Target: Target{LSN: &lsn, Action: "pause"}, ArchiveOff: true})
	for _, want := range []string{
		"restore_command = '/usr/bin/pgkeep wal-fetch --repo ''s3://b/it''''s'' %f %p'",
		"recovery_target_lsn = '0/3000060'",
		"recovery_target_action = 'pause'",
		"recovery_target_timeline = 'latest'",
		"archive_mode = 'off'",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("recovery settings lack %q:\n%s", want, conf)
		}
	}
}

// TestGapRefused: a segment missing between the backup and the newest WAL
// is a gap: a restore to the end of the archive is refused, naming the
// range, how far recovery could go and the way out; a target that recovery
// reaches before the gap restores up to it on purpose.
func TestGapRefused(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	b := manifest("20261124T095900Z", t0, 0x2000028, 0x2000200) // segment 2
	b.PGMajor = 15
	tl := catalog.NewTimelineWAL(1, segSize)
	for n := uint64(2); n <= 9; n++ {
		if n != 5 && n != 6 {
			tl.Add(n, t0.Add(time.Duration(n)*time.Minute))
		}
	}
	ix := &catalog.WALIndex{SegSize: segSize, Timelines: []*catalog.TimelineWAL{tl}}
	at := func(d time.Duration) *time.Time { v := t0.Add(d); return &v }
	lsn := func(l wal.LSN) *wal.LSN { return &l }
	edge := Edge{LastRecord: 0x4FFFF80, End: 0x4FFFFA8, LastMoment: &walrec.Moment{Kind: "commit", Time: t0.Add(4 * time.Minute)}}

	_, c, err := ChooseBackup([]*catalog.Manifest{b}, ix, nil, "", Target{})
	if err != nil || c.Missing != "000000010000000000000005" || c.MissingTo != "000000010000000000000006" || c.Resume != "000000010000000000000007" {
		t.Fatalf("chain: %+v %v", c, err)
	}
	_, err = CheckGap(b, c, edge, Target{})
	if !errors.Is(err, ErrGap) {
		t.Fatalf("restore to the end across a gap: %v", err)
	}
	for _, want := range []string{"000000010000000000000005..000000010000000000000006", "LSN 0/4FFFFA8", "--target-lsn 0/4FFFF80", "--target-time before 2026-11-24 10:04:00",
		"000000010000000000000007 to 000000010000000000000009", "Nothing was written"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not say %q: %v", want, err)
		}
	}
	for name, target := range map[string]Target{
		"lsn at the last record": {LSN: lsn(0x4FFFF80)},
		"lsn before the gap":     {LSN: lsn(0x3000100)},
		"time before the last":   {Time: at(3 * time.Minute)},
		"earliest consistent":    {Immediate: true},
		"restore point by name":  {Name: "before-migration"},
	} {
		_, c, err := ChooseBackup([]*catalog.Manifest{b}, ix, nil, "", target)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if ok, err := CheckGap(b, c, edge, target); err != nil || !ok {
			t.Errorf("%s: %v %v", name, ok, err)
		}
	}
	for name, target := range map[string]Target{
		"lsn past the last record":           {LSN: lsn(0x4FFFFA8)},
		"lsn beyond the gap":                 {LSN: lsn(0x7000100)},
		"time of the last commit":            {Time: at(4 * time.Minute)}, // recovery needs a later commit to stop
		"time beyond the gap":                {Time: at(8 * time.Minute)},
		"lsn with the edge unknown":          {LSN: lsn(0x4000000)},
		"time with no commit before the gap": {Time: at(time.Minute)},
	} {
		e := edge
		switch name {
		case "lsn with the edge unknown":
			e = Edge{}
		case "time with no commit before the gap":
			e.LastMoment = nil
		}
		_, c, _ := ChooseBackup([]*catalog.Manifest{b}, ix, nil, "", target)
		if _, err := CheckGap(b, c, e, target); !errors.Is(err, ErrGap) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// On PostgreSQL 12 a name target past the end promotes: no end marker.
	b12 := *b
	b12.PGMajor = 12
	if ok, err := CheckGap(&b12, c, edge, Target{Name: "x"}); err != nil || ok {
		t.Fatalf("name target on 12: %v %v", ok, err)
	}
	// The newest segment missing is the end of the archive, not a gap.
	if _, c, err := ChooseBackup([]*catalog.Manifest{b}, index(t, 2, 6, t0), nil, "", Target{}); err != nil || c.Missing != "" {
		t.Fatalf("no gap: %+v %v", c, err)
	}
}

// TestGapOnTheFollowedTimeline: with recovery_target_timeline 'latest', a
// gap on the newer timeline is a gap; following the backup's own timeline
// ('current') it is not on the path.
func TestGapOnTheFollowedTimeline(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	b := manifest("20261124T095900Z", t0, 0x2000028, 0x2000200)
	t1 := catalog.NewTimelineWAL(1, segSize)
	for n := uint64(2); n <= 5; n++ {
		t1.Add(n, t0)
	}
	t2 := catalog.NewTimelineWAL(2, segSize)
	for _, n := range []uint64{4, 6, 7} { // 5 is missing on timeline 2
		t2.Add(n, t0)
	}
	ix := &catalog.WALIndex{SegSize: segSize, Timelines: []*catalog.TimelineWAL{t1, t2}}
	h := catalog.Histories{2: {{TLI: 1, SwitchLSN: 0x4000100}}}
	if _, c, err := ChooseBackup([]*catalog.Manifest{b}, ix, h, "", Target{}); err != nil || c.Missing != "000000020000000000000005" {
		t.Fatalf("gap on timeline 2: %+v %v", c, err)
	}
	if _, c, err := ChooseBackup([]*catalog.Manifest{b}, ix, h, "", Target{Timeline: "current"}); err != nil || c.Missing != "" || c.Target != 1 {
		t.Fatalf("following timeline 1: %+v %v", c, err)
	}
	if _, _, err := ChooseBackup([]*catalog.Manifest{b}, ix, h, "", Target{Timeline: "3"}); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("a timeline that does not exist: %v", err)
	}
}
