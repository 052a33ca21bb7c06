package restore

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/catalog"
	"github.com/pgkeep/pgkeep/internal/wal"
)

const segSize = 16 << 20

func manifest(id string, stop time.Time, startLSN, stopLSN wal.LSN) *catalog.Manifest {
	return &catalog.Manifest{
		ID: id, StopTime: stop, StartTime: stop.Add(-time.Minute), Timeline: 1, WalSegSize: segSize,
		StartLSN: startLSN.String(), StopLSN: stopLSN.String(),
		StartWAL: wal.SegmentName(1, wal.SegmentOf(startLSN, segSize), segSize),
		StopWAL:  wal.SegmentName(1, wal.SegmentOf(stopLSN-1, segSize), segSize),
	}
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
			got, err := ChooseBackup(bs, x, nil, c.id, c.target)
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
	_, err := ChooseBackup([]*catalog.Manifest{b}, index(t, 2, 3, t0), nil, "", Target{Time: &before})
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
