package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// A Workload is a named benchmark: a fixture in the lower layers and the
// measurements taken over it, each a row of the report.
type Workload struct {
	Name string
	// Doc is one line for --help.
	Doc      string
	fixture  *fixture
	measures []measure
	// prepare makes inputs outside the mounts, once per run of the bench.
	prepare func(sz Sizes, scratch string) error
	// writes is the disk space one system's upper needs at most.
	writes func(sz Sizes, runs int) int64
	// needs is a command the workload runs, if any: without it, the
	// workload is skipped.
	needs string
	// weight is the share of the workload in the time of a run (seconds
	// of a default run, fixture included, on a 2-CPU machine), for the
	// estimate of the time left.
	weight float64
}

// A measure is one row: op timed Runs times on each system.
type measure struct {
	name string
	// cold drops the kernel's caches before each timed call; warm makes
	// one untimed call of warmup (op if nil) first.
	cold, warm bool
	warmup     func(context.Context, Env) (Work, error)
	// rate names the unit of Work.Ops per second the row reports instead
	// of a time ("IOPS"); higher is better then.
	rate string
	op   func(context.Context, Env) (Work, error)
	// after runs untimed after each call of op: cleanup.
	after func(context.Context, Env) error
	// chained runs right after the measure before it, on the same system
	// in the same run, and as many times: the warm half of coldWarm, whose
	// cold call is its warm-up, and a removal of what the measure before it
	// made (which, timed apart under a budget, would run more often than
	// its maker and find nothing to remove).
	chained bool
}

// coldWarm is op timed with cold caches, then at once again with the caches
// the cold call filled.
func coldWarm(name string, op func(context.Context, Env) (Work, error)) []measure {
	return []measure{
		{name: name + " cold", cold: true, op: op},
		{name: name + " warm", warm: true, chained: true, op: op},
	}
}

// Workloads are every workload of `strata bench`, in the order they run.
var Workloads = []*Workload{
	{
		Name: "stat-walk", Doc: "lstat every entry of a ~50k-file, 3-layer tree; cold and warm",
		weight:  50,
		fixture: treeFixture, measures: coldWarm("stat-walk", StatWalk),
	},
	{
		Name: "find", Doc: "find(1) over the same tree; cold and warm",
		weight:  9,
		fixture: treeFixture, measures: coldWarm("find", Find), needs: "find",
	},
	{
		Name: "ls-lR", Doc: "ls -lR over the same tree (stat and xattrs of every entry); cold and warm",
		weight:  25,
		fixture: treeFixture, measures: coldWarm("ls -lR", LsLR), needs: "ls",
	},
	{
		Name: "tar", Doc: "archive 20k files of the merged tree to nowhere, reading every file",
		weight:  12,
		fixture: treeFixture, measures: []measure{{name: "tar", warm: true, op: Tar}},
	},
	{
		Name: "readdir", Doc: "list directories of 10k entries spread over 3 layers; cold and warm",
		weight:  12,
		fixture: dirsFixture, measures: coldWarm("readdir", Readdir),
	},
	{
		Name: "seqread", Doc: "read a 1 GiB lower file in 1 MiB blocks; cold and warm",
		weight:  11,
		fixture: bigFixture, measures: coldWarm("seqread 1M", SeqRead),
	},
	{
		Name: "randread", Doc: "random 4 KiB reads of a 1 GiB lower file, in IOPS; cold and warm",
		weight:  10,
		fixture: bigFixture,
		measures: []measure{
			{name: "randread 4K cold", cold: true, rate: "IOPS", op: RandRead},
			{name: "randread 4K warm", warm: true, warmup: SeqRead, rate: "IOPS", op: RandRead},
		},
	},
	{
		Name: "seqwrite", Doc: "write a new 1 GiB file in 1 MiB blocks; buffered and with fsync",
		weight:  15,
		fixture: emptyFixture,
		measures: []measure{
			{name: "seqwrite", op: SeqWrite, after: removeWritten},
			{name: "seqwrite fsync", op: SeqWriteFsync, after: removeWritten},
		},
		writes: func(sz Sizes, _ int) int64 { return sz.BigFile },
	},
	{
		Name: "copy-up", Doc: "first 1-byte write into a 1 GiB lower file",
		weight:   20,
		fixture:  copyUpFixture,
		measures: []measure{{name: "copy-up 1 byte", op: CopyUp, after: removeCopiedUp}},
		writes:   func(sz Sizes, _ int) int64 { return sz.BigFile },
	},
	{
		Name: "small-files", Doc: "create 20k files of 4 KiB in nested dirs, then delete them",
		weight:  47,
		fixture: createFixture,
		measures: []measure{
			{name: "small-files create", op: SmallFilesCreate},
			{name: "small-files delete", chained: true, op: SmallFilesDelete},
		},
		writes: func(sz Sizes, runs int) int64 { return int64(runs) * int64(sz.SmallFiles) * 4096 * 11 / 10 },
	},
	{
		Name: "untar", Doc: "unpack 20k small files into the mount, then rm -rf them",
		weight:  67,
		fixture: createFixture,
		measures: []measure{
			{name: "untar", op: Untar},
			{name: "rm -rf", chained: true, op: UntarRemove},
		},
		prepare: func(sz Sizes, scratch string) error { return writeArchive(sz, filepath.Join(scratch, untarArchive)) },
		writes:  func(sz Sizes, runs int) int64 { return int64(runs) * untarBytes(sz) },
	},
	{
		Name: "build", Doc: "go build of a generated module, GOCACHE inside the mount",
		weight:   13,
		fixture:  modFixture,
		measures: []measure{{name: "go build", op: Build, after: removeGocache}},
		writes:   func(sz Sizes, _ int) int64 { return int64(sz.BuildPkgs) * 1 << 20 },
		needs:    "go",
	},
	{
		Name: "metadata-ops", Doc: "chmod, chown, utimes and rename of lower files",
		weight:   9,
		fixture:  metaFixture,
		measures: []measure{{name: "metadata-ops", op: MetadataOps}},
		writes:   func(sz Sizes, runs int) int64 { return int64(runs) * int64(sz.MetaFiles) * (sz.MetaFileSize + 4096) },
	},
}

// ParseWorkloads returns the workloads named in a comma-separated list, in
// the order of Workloads; "" or "all" is every one. An unknown name is an
// ErrInput.
func ParseWorkloads(list string) ([]*Workload, error) {
	if list == "" || list == "all" {
		return Workloads, nil
	}
	want := map[string]bool{}
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if workloadByName(n) == nil {
			return nil, inputErrorf("unknown workload %q (known: %s)", n, strings.Join(WorkloadNames(), ", "))
		}
		want[n] = true
	}
	var ws []*Workload
	for _, w := range Workloads {
		if want[w.Name] {
			ws = append(ws, w)
		}
	}
	return ws, nil
}

// WorkloadNames are the names of Workloads.
func WorkloadNames() []string {
	var ns []string
	for _, w := range Workloads {
		ns = append(ns, w.Name)
	}
	return ns
}

func workloadByName(n string) *Workload {
	for _, w := range Workloads {
		if w.Name == n {
			return w
		}
	}
	return nil
}

// available says why w cannot run here, or "".
func (w *Workload) available() string {
	if w.needs == "" {
		return ""
	}
	if _, err := lookPath(w.needs); err != nil {
		return fmt.Sprintf("no %s command", w.needs)
	}
	return ""
}

// diskBytes is the scratch space w needs with n systems: its layers, the disk
// copy of them, what each system writes, and the inputs.
func (w *Workload) diskBytes(sz Sizes, runs, n int) int64 {
	b := 2 * w.fixture.bytes(sz, runs)
	if w.writes != nil {
		b += int64(n) * w.writes(sz, runs)
	}
	if w.prepare != nil {
		b += untarBytes(sz)
	}
	return b
}

// build writes the layers of f under dir: dir/lower-N, bottom first, and returns
// them top first, as overlayfs lists them.
func (f *fixture) build(ctx context.Context, sz Sizes, runs int, dir string) ([]string, error) {
	var lowers []string
	for i := range f.layers {
		d := filepath.Join(dir, fmt.Sprintf("lower-%d", i))
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
		if err := f.fill(ctx, sz, runs, i, d); err != nil {
			return nil, fmt.Errorf("build fixture %s: %w", f.name, err)
		}
		lowers = append([]string{d}, lowers...)
	}
	return lowers, nil
}

// flatten writes the merged tree of f into dir, which exists.
func (f *fixture) flatten(ctx context.Context, sz Sizes, runs int, dir string) error {
	for i := range f.layers {
		if err := f.fill(ctx, sz, runs, i, dir); err != nil {
			return fmt.Errorf("build fixture %s: %w", f.name, err)
		}
	}
	return nil
}
