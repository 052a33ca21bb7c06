package retention

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgkeep/pgkeep/internal/wal"
)

const seg = 16 << 20

var t0 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)

// day d's backup starts in segment 10*d on timeline 1 and finishes at
// t0 - (10-d) days.
func dayBackup(d int) Backup {
	return Backup{ID: fmt.Sprintf("202611%02dT000000Z", d), Timeline: 1, StartLSN: wal.SegmentStartLSN(uint64(10*d), seg) + 0x28,
		StopTime: t0.Add(-time.Duration(10-d) * 24 * time.Hour)}
}

func walFiles(tli uint32, from, to uint64) []WALFile {
	var out []WALFile
	for n := from; n <= to; n++ {
		name := wal.SegmentName(wal.TimeLineID(tli), n, seg)
		out = append(out, WALFile{Name: name, Timeline: tli, SegNo: n, Kind: wal.KindSegment})
	}
	return out
}

func ids(ds []Decision) string {
	var s []string
	for _, d := range ds {
		s = append(s, d.ID[6:8])
	}
	return strings.Join(s, ",")
}

func TestMakePlan(t *testing.T) {
	five := []Backup{dayBackup(1), dayBackup(3), dayBackup(5), dayBackup(7), dayBackup(9)}
	pinned := append([]Backup(nil), five...)
	pinned[0].Pinned = true
	history := WALFile{Name: "00000002.history", Timeline: 2, Kind: wal.KindTimelineHistory}
	allWAL := append(walFiles(1, 10, 95), history)

	cases := []struct {
		name       string
		backups    []Backup
		incomplete []Incomplete
		policy     Policy
		keep       string
		expire     string
		walFrom    uint64 // first segment kept on timeline 1; everything before is deleted
		garbage    int
		wantErr    string
	}{
		{name: "keep 2", backups: five, policy: Policy{KeepCount: 2}, keep: "07,09", expire: "05,03,01", walFrom: 70},
		{name: "keep 1 keeps the newest", backups: five, policy: Policy{KeepCount: 1}, keep: "09", expire: "07,05,03,01", walFrom: 90},
		{name: "keep more than exist", backups: five, policy: Policy{KeepCount: 10}, keep: "01,03,05,07,09", expire: "", walFrom: 10},
		// Window of 4 days from t0: backups finishing after day 6 are inside;
		// day 5's backup is needed to restore the window's first moment.
		{name: "window", backups: five, policy: Policy{KeepWithin: 4 * 24 * time.Hour}, keep: "05,07,09", expire: "03,01", walFrom: 50},
		{name: "window shorter than the newest backup's age", backups: five, policy: Policy{KeepWithin: time.Hour}, keep: "09", expire: "07,05,03,01", walFrom: 90},
		{name: "count and window together", backups: five, policy: Policy{KeepCount: 4, KeepWithin: 4 * 24 * time.Hour}, keep: "03,05,07,09", expire: "01", walFrom: 30},
		{name: "pinned is never expired", backups: pinned, policy: Policy{KeepCount: 1}, keep: "01,09", expire: "07,05,03", walFrom: 10},
		{name: "running backup protects its WAL", backups: five, policy: Policy{KeepCount: 1, GarbageAge: time.Hour},
			incomplete: []Incomplete{{ID: "20261124T110000Z", StartLSN: wal.SegmentStartLSN(95, seg), Timeline: 1, LastWrite: t0.Add(-time.Minute)}},
			keep:       "09", expire: "07,05,03,01", walFrom: 90},
		{name: "old incomplete backup is garbage", backups: five, policy: Policy{KeepCount: 1, GarbageAge: time.Hour},
			incomplete: []Incomplete{{ID: "20261120T000000Z", StartLSN: wal.SegmentStartLSN(60, seg), Timeline: 1, LastWrite: t0.Add(-48 * time.Hour)}},
			keep:       "09", expire: "07,05,03,01", walFrom: 90, garbage: 1},
		{name: "recent incomplete backup of unknown start keeps all WAL", backups: five, policy: Policy{KeepCount: 1, GarbageAge: time.Hour},
			incomplete: []Incomplete{{ID: "20261124T115900Z", LastWrite: t0}}, keep: "09", expire: "07,05,03,01", walFrom: 10},
		{name: "no policy", backups: five, wantErr: "retention policy"},
		{name: "no backups removes nothing", backups: nil, policy: Policy{KeepCount: 1}, keep: "", expire: "", walFrom: 10},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := MakePlan(Input{Now: t0, SegSize: seg, Backups: c.backups, Incomplete: c.incomplete, WAL: allWAL}, c.policy)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(p.Keep); got != c.keep {
				t.Errorf("keep %s, want %s", got, c.keep)
			}
			if got := ids(p.Expire); got != c.expire {
				t.Errorf("expire %s, want %s", got, c.expire)
			}
			if len(p.Garbage) != c.garbage {
				t.Errorf("garbage %v", p.Garbage)
			}
			// Exactly the segments before walFrom go; history files stay.
			if want := int(c.walFrom - 10); len(p.DeleteWAL) != want {
				t.Errorf("deletes %d WAL files, want %d (%v)", len(p.DeleteWAL), want, p.DeleteWAL)
			}
			for _, k := range p.DeleteWAL {
				if strings.HasSuffix(k, ".history") {
					t.Errorf("history file %s deleted", k)
				}
				if k >= wal.SegmentName(1, c.walFrom, seg) {
					t.Errorf("deletes needed WAL %s", k)
				}
			}
			if !strings.Contains(p.String(), "WAL") {
				t.Error("plan text")
			}
		})
	}
}

// Later timelines: a backup on timeline 2 needs WAL of timeline 2 (and
// later) from its start, not timeline 1's after that point.
func TestMakePlanTimelines(t *testing.T) {
	b1 := dayBackup(1)
	b2 := Backup{ID: "20261120T000000Z", Timeline: 2, StartLSN: wal.SegmentStartLSN(50, seg), StopTime: t0.Add(-time.Hour)}
	files := append(walFiles(1, 10, 60), walFiles(2, 40, 70)...)
	p, err := MakePlan(Input{Now: t0, SegSize: seg, Backups: []Backup{b1, b2}, WAL: files}, Policy{KeepCount: 1})
	if err != nil {
		t.Fatal(err)
	}
	if ids(p.Keep) != "20" || ids(p.Expire) != "01" {
		t.Fatalf("keep %s expire %s", ids(p.Keep), ids(p.Expire))
	}
	// All of timeline 1 (51 files) and timeline 2 below segment 50 (10 files).
	if len(p.DeleteWAL) != 51+10 {
		t.Fatalf("deletes %d files", len(p.DeleteWAL))
	}
}

// Chains: full 01, incremental 03 on 01 and 05 on 03, full 07, incremental
// 09 on 07. Whatever keeps an incremental backup keeps its whole chain,
// and its reason says so; expired backups go newest first.
func TestMakePlanChains(t *testing.T) {
	b := []Backup{dayBackup(1), dayBackup(3), dayBackup(5), dayBackup(7), dayBackup(9)}
	b[1].DependsOn = []string{b[0].ID}
	b[2].DependsOn = []string{b[0].ID, b[1].ID}
	b[4].DependsOn = []string{b[3].ID}
	summaries := walFiles(1, 10, 95)
	cases := []struct {
		name       string
		mutate     func([]Backup)
		incomplete []Incomplete
		keep       string
		expire     string
	}{
		{"keep 1 keeps its full", nil, nil, "07,09", "05,03,01"},
		{"a pinned incremental keeps its chain", func(b []Backup) { b[2].Pinned = true }, nil, "01,03,05,07,09", ""},
		{"a pinned middle keeps what it needs", func(b []Backup) { b[1].Pinned = true }, nil, "01,03,07,09", "05"},
		{"an incremental in progress keeps its parent's chain", nil,
			[]Incomplete{{ID: "20261124T110000Z", StartLSN: wal.SegmentStartLSN(95, seg), Timeline: 1, LastWrite: t0, Parent: b[2].ID}},
			"01,03,05,07,09", ""},
	}
	for _, c := range cases {
		bs := append([]Backup(nil), b...)
		if c.mutate != nil {
			c.mutate(bs)
		}
		p, err := MakePlan(Input{Now: t0, SegSize: seg, Backups: bs, Incomplete: c.incomplete, WAL: walFiles(1, 10, 95), Summaries: summaries}, Policy{KeepCount: 1, GarbageAge: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(p.Keep); got != c.keep {
			t.Errorf("%s: keep %s, want %s", c.name, got, c.keep)
		}
		if got := ids(p.Expire); got != c.expire {
			t.Errorf("%s: expire %s, want %s", c.name, got, c.expire)
		}
		if len(p.DeleteSummaries) != len(p.DeleteWAL) {
			t.Errorf("%s: deletes %d WAL files but %d summaries", c.name, len(p.DeleteWAL), len(p.DeleteSummaries))
		}
	}
	p, _ := MakePlan(Input{Now: t0, SegSize: seg, Backups: b, WAL: walFiles(1, 10, 95)}, Policy{KeepCount: 1})
	if text := p.String(); !strings.Contains(text, "incremental backup "+b[4].ID+" depends on it") || !strings.Contains(text, "needs "+b[3].ID) {
		t.Errorf("the plan does not show the dependencies:\n%s", text)
	}
}

// Streamed pieces: those of a segment stored whole are garbage whatever
// the backups (even with none); the others follow the WAL rule.
func TestPlanStreamedPieces(t *testing.T) {
	piece := func(no uint64, whole bool) Piece {
		return Piece{Name: fmt.Sprintf("%s/00000000-00001000", wal.SegmentName(1, no, seg)), Timeline: 1, SegNo: no, Whole: whole}
	}
	pieces := []Piece{piece(5, true), piece(6, false), piece(80, true), piece(81, false), piece(95, false)}
	cases := []struct {
		name    string
		backups []Backup
		deleted []uint64
	}{
		{"no backups: only the garbage", nil, []uint64{5, 80}},
		{"keep 2 (from segment 70)", []Backup{dayBackup(1), dayBackup(3), dayBackup(7), dayBackup(9)}, []uint64{5, 6, 80}},
	}
	for _, c := range cases {
		p, err := MakePlan(Input{Now: t0, SegSize: seg, Backups: c.backups, Pieces: pieces}, Policy{KeepCount: 2})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, no := range c.deleted {
			for _, pc := range pieces {
				if pc.SegNo == no {
					want = append(want, pc.Name)
				}
			}
		}
		if strings.Join(p.DeletePieces, " ") != strings.Join(want, " ") {
			t.Errorf("%s: deletes pieces %v, want %v", c.name, p.DeletePieces, want)
		}
	}
}
