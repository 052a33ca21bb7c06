package main

import "testing"

func TestNextSegment(t *testing.T) {
	for in, want := range map[string]string{
		"000000010000000000000001": "000000010000000000000002",
		"0000000100000000000000FF": "000000010000000100000000",
		"0000000200000003000000A6": "0000000200000003000000A7",
	} {
		if got, err := nextSegment(in); err != nil || got != want {
			t.Errorf("nextSegment(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
	if _, err := nextSegment("not a segment"); err == nil {
		t.Error("nextSegment accepted a bad name")
	}
}

func TestMedian(t *testing.T) {
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median of 3 = %v", got)
	}
	if got := median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("median of 4 = %v", got)
	}
}

// TestVerdicts: the table judges each figure against the brief's targets,
// with the headline comparison stricter than the zstd one.
func TestVerdicts(t *testing.T) {
	figures := func(pkRestore, peerRestore, pkDrain, peerDrain, pkRSS float64) (map[string]measure, map[string]measure) {
		return map[string]measure{"restore": {Seconds: pkRestore, RSSMiB: pkRSS}, "wal_drain": {Seconds: pkDrain}, "backup": {RSSMiB: pkRSS}},
			map[string]measure{"restore": {Seconds: peerRestore}, "wal_drain": {Seconds: peerDrain}}
	}
	verdict := func(c comparison, figure string) bool {
		for _, r := range rows(c) {
			if r.Figure == figure && r.Met != nil {
				return *r.Met
			}
		}
		t.Fatalf("no verdict for %s", figure)
		return false
	}
	pk, peer := figures(0.9, 1.0, 0.7, 1.0, 160)
	headline := comparison{PeerC: "lz4:1", Pgkeep: pk, Peer: peer}
	zstd := comparison{PeerC: "zstd:1", Pgkeep: pk, Peer: peer}
	if verdict(headline, "restore time") {
		t.Error("restore at 0.9 x met the headline target of 0.5")
	}
	if !verdict(zstd, "restore time") {
		t.Error("restore at 0.9 x missed the zstd target of 1.0")
	}
	if verdict(headline, "wal_drain time") {
		t.Error("a drain 1.43 x as fast met the 1.5 x target")
	}
	if verdict(headline, "backup peak RSS") {
		t.Error("160 MiB met the 150 MiB memory target")
	}
	pk, peer = figures(0.45, 1.0, 0.6, 1.0, 100)
	headline = comparison{PeerC: "lz4:1", Pgkeep: pk, Peer: peer}
	if !verdict(headline, "restore time") || !verdict(headline, "wal_drain time") || !verdict(headline, "backup peak RSS") {
		t.Error("figures within their targets were judged missed")
	}
}

// TestDrainRates: a drain's rates come from the segments it archived and
// its time; the segment count includes both ends and crosses log files.
func TestDrainRates(t *testing.T) {
	n, err := segmentCount("0000000100000000000000FE", "000000010000000100000001")
	if err != nil || n != 4 {
		t.Fatalf("segmentCount = %d, %v; want 4", n, err)
	}
	m := measure{Seconds: 2, Segments: 40}
	if m.segmentsPerSec() != 20 || m.mibPerSec() != 320 {
		t.Errorf("rates of 40 segments in 2 s: %v segments/s, %v MiB/s", m.segmentsPerSec(), m.mibPerSec())
	}
	c := comparison{PeerC: "lz4:1", Pgkeep: map[string]measure{"wal_drain": {Seconds: 2, Segments: 40}}, Peer: map[string]measure{"wal_drain": {Seconds: 3, Segments: 40}}}
	for _, r := range rows(c) {
		if r.Figure == "wal_drain rate" && r.Unit == "segments/s" && (r.Pgkeep != 20 || r.Ratio != 1.5) {
			t.Errorf("rate row %+v, want 20 segments/s at 1.5 x pgBackRest's", r)
		}
	}
}

// TestIncrementalVerdicts: the incremental comparison judges pgkeep's own
// ratios (incremental to full), not pgkeep against pgBackRest.
func TestIncrementalVerdicts(t *testing.T) {
	c := comparison{Name: "incremental (file)",
		Pgkeep: map[string]measure{"full_backup": {Seconds: 10, Stored: 1000}, "incr_backup": {Seconds: 2, Stored: 40},
			"full_restore": {Seconds: 8}, "delta_restore": {Seconds: 1}},
		Peer: map[string]measure{"full_backup": {Seconds: 20, Stored: 1000}, "incr_backup": {Seconds: 1, Stored: 10}}}
	got := map[string]bool{}
	for _, r := range rows(c) {
		if r.Met != nil {
			got[r.Figure] = *r.Met
		}
	}
	want := map[string]bool{"incremental stored / full stored": false, "incremental time / full time": true, "delta restore / full restore": true}
	for k, v := range want {
		if m, ok := got[k]; !ok || m != v {
			t.Errorf("%s: met %v (judged: %v), want %v", k, m, ok, v)
		}
	}
}
