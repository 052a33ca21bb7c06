package backup

import (
	"fmt"
	"testing"

	"github.com/pgkeep/pgkeep/internal/walsum"
)

func TestClassify(t *testing.T) {
	cases := []struct {
		rel  string
		dir  bool
		want excludeKind
	}{
		{"base", true, include},
		{"base/1/1259", false, include},
		{"pg_wal", true, skipContents},
		{"pg_replslot", true, skipContents},
		{"pg_stat_tmp", true, skipContents},
		{"pg_subtrans", true, skipContents},
		{"pg_dynshmem", true, skipContents},
		{"pg_notify", true, skipContents},
		{"pg_serial", true, skipContents},
		{"pg_snapshots", true, skipContents},
		{"pg_stat", true, include},
		{"postmaster.pid", false, skip},
		{"postmaster.opts", false, skip},
		{"backup_label", false, skip},
		{"tablespace_map", false, skip},
		{"backup_manifest", false, skip},
		{"postgresql.auto.conf.tmp", false, skip},
		{"current_logfiles.tmp", false, skip},
		{"recovery.signal", false, skip},
		{"postgresql.auto.conf", false, include},
		{"global/pg_internal.init", false, skip},
		{"base/16384/pg_internal.init.1234", false, skip},
		{"base/pgsql_tmp", true, skip},
		{"base/16384/pgsql_tmp1234.5", false, skip},
		{"pg_tblspc/16400/PG_15_202209061/pgsql_tmp", true, skip},
		{"base/1/backup_label", false, include}, // only at the top level
		{"global/pg_control", false, include},
	}
	for _, c := range cases {
		if got := classify(c.rel, c.dir); got != c.want {
			t.Errorf("classify(%q, dir=%v) = %v, want %v", c.rel, c.dir, got, c.want)
		}
	}
}

func rf(spc, db, rel uint32, fork uint8) walsum.RelFork {
	return walsum.RelFork{SpcOID: spc, DBOID: db, RelNumber: rel, Fork: fork}
}

func TestRelationOf(t *testing.T) {
	cases := []struct {
		rel  string
		fork walsum.RelFork
		seg  uint32
		ok   bool
	}{
		{"base/5/16384", rf(1663, 5, 16384, walsum.MainFork), 0, true},
		{"base/5/16384.3", rf(1663, 5, 16384, walsum.MainFork), 3, true},
		{"base/5/16384_fsm", rf(1663, 5, 16384, walsum.FSMFork), 0, true},
		{"base/5/16384_vm.1", rf(1663, 5, 16384, walsum.VMFork), 1, true},
		{"base/5/16384_init", rf(1663, 5, 16384, walsum.InitFork), 0, true},
		{"global/1262", rf(1664, 0, 1262, walsum.MainFork), 0, true},
		{"global/pg_control", walsum.RelFork{}, 0, false},
		{"base/5/PG_VERSION", walsum.RelFork{}, 0, false},
		{"base/5/pg_filenode.map", walsum.RelFork{}, 0, false},
		{"pg_tblspc/16400/PG_15_202209061/5/16385.2", rf(16400, 5, 16385, walsum.MainFork), 2, true},
		{"pg_xact/0000", walsum.RelFork{}, 0, false},
		{"base/5/sub/16384", walsum.RelFork{}, 0, false},
		{"base/5/99999999999", walsum.RelFork{}, 0, false},
	}
	for _, c := range cases {
		fork, seg, ok := relationOf(c.rel)
		if ok != c.ok || ok && (fork != c.fork || seg != c.seg) {
			t.Errorf("relationOf(%q) = %+v, %d, %v; want %+v, %d, %v", c.rel, fork, seg, ok, c.fork, c.seg, c.ok)
		}
	}
}

func TestUnloggedSkip(t *testing.T) {
	got := unloggedSkip([]string{"100", "100_init", "100_fsm", "100.1", "200", "200_vm", "PG_VERSION"})
	want := map[string]bool{"100": true, "100_fsm": true, "100.1": true}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for k := range want {
		if !got[k] {
			t.Errorf("%s should be skipped", k)
		}
	}
}

func TestPack(t *testing.T) {
	const obj = 64
	files := []srcFile{
		{rel: "big", size: 200}, // 64+64+64 and 8 left
		{rel: "mid", size: 60},
		{rel: "a", size: 10},
		{rel: "b", size: 0},
		{rel: "c", size: 3},
	}
	jobs := pack(wholeFiles(files), obj)
	// Every byte of every file is planned exactly once, in order, within
	// the object size limit.
	covered := map[int]int64{}
	for i, j := range jobs {
		if j.seq != i {
			t.Fatalf("job %d has seq %d", i, j.seq)
		}
		var sum int64
		for _, p := range j.pieces {
			if p.offset != covered[p.file] {
				t.Fatalf("file %s piece at %d, expected %d", files[p.file].rel, p.offset, covered[p.file])
			}
			covered[p.file] += p.size
			sum += p.size
		}
		if sum != j.size || sum > obj || sum == 0 {
			t.Fatalf("job %d: size %d (sum %d)", i, j.size, sum)
		}
	}
	for i, f := range files {
		if covered[i] != f.size {
			t.Errorf("%s: planned %d of %d bytes", f.rel, covered[i], f.size)
		}
	}
	// Split pieces of the big file start at multiples of the object size.
	if len(jobs) < 4 || jobs[0].pieces[0].size != obj || jobs[1].pieces[0].offset != obj {
		t.Errorf("big file not split at object boundaries: %+v", jobs)
	}
	// Small files share objects.
	var tiny []srcFile
	for i := 0; i < 100; i++ {
		tiny = append(tiny, srcFile{rel: fmt.Sprint(i), size: 8})
	}
	if n := len(pack(wholeFiles(tiny), 1024)); n != 1 {
		t.Errorf("100 files of 8 bytes took %d objects of 1024 bytes, want 1", n)
	}
	// A span that starts inside its file is split from its start.
	jobs = pack([]pieceJob{{file: 0, offset: 128, size: 150}}, obj)
	if len(jobs) != 3 || jobs[1].pieces[0].offset != 192 || jobs[2].pieces[0].size != 22 {
		t.Errorf("span at 128 of 150 bytes: %+v", jobs)
	}
}
