package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// The incremental comparison (issue 16): a full backup of each tool, then
// a contiguous 1% of pgbench_accounts' rows updated, then an incremental
// backup of each (pgkeep's auto type, pgBackRest --type=incr); then each
// tool's full restore of its incremental backup into an empty file
// system, and its delta restore of the same backup onto a restore of its
// full one. Figures: the incremental backup's stored bytes and time
// against the same tool's full backup, the delta restore's time against
// the full restore's, and pgkeep against pgBackRest for each.

// isIncremental reports whether cmp is the incremental comparison.
func isIncremental(cmp comparison) bool { return strings.HasPrefix(cmp.Name, "incremental") }

// compareIncremental runs the incremental comparison once.
func (b *bench) compareIncremental(ctx context.Context, cmp comparison, peerFirst bool) (runResult, error) {
	rr := runResult{Pgkeep: map[string]measure{}, Peer: map[string]measure{}}
	dir := filepath.Join(b.ws, fmt.Sprintf("run-%d", time.Now().UnixNano()))
	if err := b.mkdir(dir); err != nil {
		return rr, err
	}
	tools := []string{"pgkeep", "pgbackrest"}
	if peerFirst {
		tools = []string{"pgbackrest", "pgkeep"}
	}
	put := func(tool, fig string, m measure) {
		if tool == "pgkeep" {
			rr.Pgkeep[fig] = m
		} else {
			rr.Peer[fig] = m
		}
	}
	rp, err := b.repos(ctx, dir, cmp)
	if err != nil {
		return rr, err
	}
	stored := func(tool string) int64 {
		if tool == "pgkeep" {
			return rp.pkStored()
		}
		return rp.peerStored()
	}
	backup := func(tool, typ string) (measure, error) {
		duRead(b.c.DataDir)
		before := stored(tool)
		var m measure
		var err error
		if tool == "pgkeep" {
			m, err = b.timed(ctx, b.c.Env(), b.pgkeep, append([]string{"backup", "--quiet", "--type", typ}, rp.pkArgs...)...)
		} else {
			peerType := map[string]string{"full": "full", "incremental": "incr"}[typ]
			m, err = b.timed(ctx, b.c.Env(), "/usr/bin/pgbackrest", rp.peer("backup", "--type="+peerType)...)
		}
		m.Stored = stored(tool) - before
		return m, err
	}
	for _, tool := range tools {
		m, err := backup(tool, "full")
		if err != nil {
			return rr, err
		}
		put(tool, "full_backup", m)
		fmt.Printf("%s full backup: %.2fs, %.1f MiB stored\n", tool, m.Seconds, float64(m.Stored)/(1<<20))
	}

	// A contiguous 1% of the rows, in the middle of the table.
	rows, err := b.c.SQL(ctx, "SELECT count(*) FROM pgbench_accounts")
	if err != nil {
		return rr, err
	}
	n, _ := strconv.Atoi(rows)
	from := n / 2
	if _, err := b.c.SQL(ctx, fmt.Sprintf("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN %d AND %d", from, from+n/100-1)); err != nil {
		return rr, err
	}
	fmt.Printf("updated rows %d..%d of %d (1%%)\n", from, from+n/100-1, n)
	// The update's WAL is archived before either backup starts, so that
	// neither pays for the backlog (as in the other comparisons).
	pending, _ := b.c.SQL(ctx, "SELECT pg_walfile_name(pg_switch_wal())")
	if err := b.waitArchived(ctx, pending); err != nil {
		return rr, err
	}
	for _, tool := range tools {
		m, err := backup(tool, "incremental")
		if err != nil {
			return rr, err
		}
		put(tool, "incr_backup", m)
		fmt.Printf("%s incremental backup: %.2fs, %.1f MiB stored\n", tool, m.Seconds, float64(m.Stored)/(1<<20))
	}
	ids, err := b.pgkeepBackups(ctx, rp.pkArgs)
	if err != nil {
		return rr, err
	}
	if len(ids) != 2 || ids[1].Type != "incremental" || ids[1].Parent != ids[0].ID {
		return rr, fmt.Errorf("pgkeep's second backup is not an incremental one on its first: %+v", ids)
	}
	peerSets, err := b.peerBackups(ctx, rp.peer)
	if err != nil {
		return rr, err
	}
	if len(peerSets) != 2 {
		return rr, fmt.Errorf("pgBackRest has %d backups, want 2", len(peerSets))
	}

	for _, tool := range tools {
		// The full restore of the incremental backup, into an empty file
		// system.
		mnt, release, err := b.freshFS(dir, "restore-"+tool)
		if err != nil {
			return rr, err
		}
		m, err := b.restore(ctx, tool, filepath.Join(mnt, "data"), rp.pkArgs, rp.peer)
		release()
		if err != nil {
			return rr, err
		}
		put(tool, "full_restore", m)

		// The delta restore of the same backup onto a restore of the
		// full one (made untimed), both read cold.
		mnt, release, err = b.freshFS(dir, "delta-"+tool)
		if err != nil {
			return rr, err
		}
		target := filepath.Join(mnt, "data")
		if tool == "pgkeep" {
			_, err = b.timed(ctx, nil, b.pgkeep, append([]string{"restore", "--quiet", "--archive-off", "--pgdata", target, "--backup", ids[0].ID}, rp.pkArgs...)...)
		} else if err = b.mkdir(target); err == nil {
			_, err = b.timed(ctx, nil, "/usr/bin/pgbackrest", rp.peer("restore", "--pg1-path="+target, "--archive-mode=off", "--set="+peerSets[0])...)
		}
		if err != nil {
			release()
			return rr, err
		}
		dropCaches()
		var d measure
		if tool == "pgkeep" {
			d, err = b.timed(ctx, nil, b.pgkeep, append([]string{"restore", "--quiet", "--delta", "--archive-off", "--pgdata", target, "--backup", ids[1].ID}, rp.pkArgs...)...)
		} else {
			d, err = b.timed(ctx, nil, "/usr/bin/pgbackrest", rp.peer("restore", "--delta", "--pg1-path="+target, "--archive-mode=off", "--set="+peerSets[1])...)
		}
		release()
		if err != nil {
			return rr, err
		}
		put(tool, "delta_restore", d)
		fmt.Printf("%s restore of the incremental backup: %.2fs; delta restore onto the full one: %.2fs\n", tool, m.Seconds, d.Seconds)
	}
	if out, err := b.r.Run(ctx, nil, b.pgkeep, append([]string{"verify", "--quiet"}, rp.pkArgs...)...); err != nil {
		return rr, fmt.Errorf("pgkeep verify: %v\n%s", err, out)
	}
	return rr, nil
}

type pgkeepBackup struct {
	ID     string `json:"id"`
	Type   string `json:"type"`
	Parent string `json:"parent"`
}

// pgkeepBackups lists pgkeep's complete backups, oldest first.
func (b *bench) pgkeepBackups(ctx context.Context, pkArgs []string) ([]pgkeepBackup, error) {
	out, err := b.r.Run(ctx, nil, b.pgkeep, append([]string{"list", "--json"}, pkArgs...)...)
	if err != nil {
		return nil, fmt.Errorf("pgkeep list: %v\n%s", err, out)
	}
	var l struct {
		Backups []pgkeepBackup `json:"backups"`
	}
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		return nil, err
	}
	return l.Backups, nil
}

// peerBackups lists pgBackRest's backup labels, oldest first.
func (b *bench) peerBackups(ctx context.Context, peer func(...string) []string) ([]string, error) {
	out, err := b.r.Run(ctx, nil, "/usr/bin/pgbackrest", peer("info", "--output=json")...)
	if err != nil {
		return nil, fmt.Errorf("pgbackrest info: %v\n%s", err, out)
	}
	var info []struct {
		Backup []struct {
			Label string `json:"label"`
		} `json:"backup"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil || len(info) == 0 {
		return nil, fmt.Errorf("pgbackrest info: %v", err)
	}
	var labels []string
	for _, bk := range info[0].Backup {
		labels = append(labels, bk.Label)
	}
	return labels, nil
}

// incrementalTargets are issue 16's goals: each a ratio of pgkeep's own
// figures.
var incrementalTargets = map[string]target{
	"incremental stored / full stored": {max: 0.03, text: "<= 0.03"},
	"incremental time / full time":     {max: 0.25, text: "<= 0.25"},
	"delta restore / full restore":     {max: 0.25, text: "<= 0.25"},
}

// incrementalRows computes the incremental comparison's table.
func incrementalRows(c comparison) []row {
	var out []row
	own := func(name string, f func(m map[string]measure) float64) {
		a, p := f(c.Pgkeep), f(c.Peer)
		r := row{Figure: name, Pgkeep: a, Peer: p, Unit: "x"}
		if p > 0 {
			r.Ratio = a / p
		}
		if t, ok := incrementalTargets[name]; ok {
			met := a <= t.max
			r.Target, r.Met = t.text, &met
		}
		out = append(out, r)
	}
	ratio := func(a, b string, stored bool) func(m map[string]measure) float64 {
		return func(m map[string]measure) float64 {
			x, y := m[a].Seconds, m[b].Seconds
			if stored {
				x, y = float64(m[a].Stored), float64(m[b].Stored)
			}
			if y == 0 {
				return 0
			}
			return x / y
		}
	}
	abs := func(name, fig, unit string, stored bool) {
		a, p := c.Pgkeep[fig].Seconds, c.Peer[fig].Seconds
		if stored {
			a, p = float64(c.Pgkeep[fig].Stored)/(1<<20), float64(c.Peer[fig].Stored)/(1<<20)
		}
		r := row{Figure: name, Pgkeep: a, Peer: p, Unit: unit}
		if p > 0 {
			r.Ratio = a / p
		}
		out = append(out, r)
	}
	abs("full backup time", "full_backup", "s", false)
	abs("full backup stored", "full_backup", "MiB", true)
	abs("incremental backup time", "incr_backup", "s", false)
	abs("incremental backup stored", "incr_backup", "MiB", true)
	abs("full restore time", "full_restore", "s", false)
	abs("delta restore time", "delta_restore", "s", false)
	own("incremental stored / full stored", ratio("incr_backup", "full_backup", true))
	own("incremental time / full time", ratio("incr_backup", "full_backup", false))
	own("delta restore / full restore", ratio("delta_restore", "full_restore", false))
	return out
}
