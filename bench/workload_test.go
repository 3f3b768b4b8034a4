package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// strataBin is the strata executable the tests mount with, built once by
// TestMain: the test process never serves a FUSE mount it touches.
var strataBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "strata-bench-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	strataBin = filepath.Join(dir, "strata")
	build := exec.Command("go", "build", "-o", strataBin, "../cmd/strata")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build strata:", err)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir) // a temp dir; nothing to report at exit
	os.Exit(code)
}

// requireRoot skips t unless it can mount.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

// setUp builds the fixture of w under a fresh temp dir, sets system name up
// over it and returns the Env to run w's measures in; a mount is taken off
// when the test ends, pass or fail.
func setUp(t *testing.T, w *Workload, name string, runs int) Env {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	lowers, err := w.fixture.build(ctx, TinySizes, runs, dir)
	if err != nil {
		t.Fatal(err)
	}
	if w.prepare != nil {
		if err := w.prepare(TinySizes, dir); err != nil {
			t.Fatal(err)
		}
	}
	r := &runner{o: Options{Sizes: TinySizes, Runs: runs, StrataBin: strataBin}}
	s := systemByName(name)
	if _, err := s.find(&r.o); err != nil {
		t.Skipf("%s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := r.unmountAll(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	m, err := r.mount(ctx, s, w.fixture, lowers, filepath.Join(dir, name))
	if err != nil {
		t.Fatalf("set up %s: %v", name, err)
	}
	return Env{Dir: m.dir, Scratch: dir, Sizes: TinySizes}
}

// TestWorkloads runs each measurement of each workload once, at TinySizes, on
// the disk and on strata, and checks that it did what it says.
func TestWorkloads(t *testing.T) {
	requireRoot(t)
	for _, sys := range []string{Disk, Strata} {
		for _, w := range Workloads {
			t.Run(sys+"/"+w.Name, func(t *testing.T) {
				if why := w.available(); why != "" {
					t.Skip(why)
				}
				e := setUp(t, w, sys, 2)
				for _, m := range w.measures {
					if m.cold {
						if err := dropCaches(); err != nil {
							t.Fatal(err)
						}
					}
					e.Run = 1
					work, err := m.op(context.Background(), e)
					if err != nil {
						t.Fatalf("%s: %v", m.name, err)
					}
					checkWork(t, m.name, e, work)
					if m.after != nil {
						if err := m.after(context.Background(), e); err != nil {
							t.Fatalf("%s: after: %v", m.name, err)
						}
					}
				}
			})
		}
	}
}

// checkWork checks what one call of measurement name did in e.
func checkWork(t *testing.T, name string, e Env, w Work) {
	t.Helper()
	sz := e.Sizes
	eq := func(what string, got, want int64) {
		t.Helper()
		if got != want {
			t.Errorf("%s: %s: got %d, want %d", name, what, got, want)
		}
	}
	gone := func(p string) {
		t.Helper()
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %s is still there (%v)", name, p, err)
		}
	}
	switch name {
	case "stat-walk cold", "stat-walk warm", "find cold", "find warm":
		eq("entries", w.Files, int64(TreeEntries(sz)))
	case "ls -lR cold", "ls -lR warm":
		// A line per entry, and per directory a blank line, a header and
		// a total.
		eq("lines", w.Files, int64(TreeEntries(sz)-1+3*(TreeEntries(sz)-sz.TreeFiles)-1))
	case "tar":
		n := tarTreeFiles(sz)
		eq("entries", w.Files, int64(tarTops(sz)+treeLeaves(n)+n))
		eq("bytes", w.Bytes, treeBytes(n))
	case "readdir cold", "readdir warm":
		eq("names", w.Files, int64(sz.Dirs*sz.DirEntries))
	case "seqread 1M cold", "seqread 1M warm":
		eq("bytes", w.Bytes, sz.BigFile)
	case "randread 4K cold", "randread 4K warm":
		eq("reads", w.Ops, int64(sz.RandReads))
		eq("bytes", w.Bytes, int64(sz.RandReads)*4096)
	case "seqwrite", "seqwrite fsync":
		eq("bytes", w.Bytes, sz.BigFile)
		fi, err := os.Stat(filepath.Join(e.Dir, writeName(e.Run)))
		if err != nil {
			t.Fatal(err)
		}
		eq("file size", fi.Size(), sz.BigFile)
	case "copy-up 1 byte":
		eq("bytes", w.Bytes, 1)
		got, err := os.ReadFile(filepath.Join(e.Dir, copyUpName(e.Run)))
		if err != nil {
			t.Fatal(err)
		}
		want := bytes.Repeat(patternBuf, int(sz.BigFile/int64(len(patternBuf)))+1)[:sz.BigFile]
		want[0] = 'x'
		if !bytes.Equal(got, want) {
			t.Errorf("%s: after the write, the file is not the lower file with its first byte changed (%d bytes)", name, len(got))
		}
	case "small-files create":
		eq("files", w.Files, int64(sz.SmallFiles))
		eq("bytes", w.Bytes, int64(sz.SmallFiles)*4096)
		eq("files found", countFiles(t, filepath.Join(e.Dir, smallName(e.Run))), int64(sz.SmallFiles))
	case "small-files delete":
		eq("files", w.Files, int64(sz.SmallFiles))
		gone(filepath.Join(e.Dir, smallName(e.Run)))
	case "untar":
		eq("files", w.Files, int64(sz.TarFiles))
		eq("files found", countFiles(t, filepath.Join(e.Dir, untarName(e.Run))), int64(sz.TarFiles))
	case "rm -rf":
		eq("files", w.Files, int64(sz.TarFiles))
		gone(filepath.Join(e.Dir, untarName(e.Run)))
	case "go build":
		eq("packages", w.Files, int64(sz.BuildPkgs))
		if n := countFiles(t, filepath.Join(e.Dir, gocacheName(e.Run))); n < int64(sz.BuildPkgs) {
			t.Errorf("%s: GOCACHE holds %d files, want at least %d", name, n, sz.BuildPkgs)
		}
	case "metadata-ops":
		eq("files", w.Files, int64(sz.MetaFiles))
		p := filepath.Join(e.Dir, metaDir(e.Run), "f00000")
		gone(p)
		fi, err := os.Lstat(p + ".moved")
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != 0o600 || st.Uid != 1 || st.Gid != 1 || fi.ModTime().Year() != 2001 || fi.Size() != sz.MetaFileSize {
			t.Errorf("%s: %s: mode %v, owner %d:%d, mtime %v, size %d; want 0600, 1:1, 2001, %d",
				name, p, fi.Mode(), st.Uid, st.Gid, fi.ModTime(), fi.Size(), sz.MetaFileSize)
		}
	default:
		t.Errorf("no check for measure %q", name)
	}
}

func countFiles(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// mountsUnder lists what is mounted under dir, from /proc/self/mountinfo.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var ms []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			ms = append(ms, f[4])
		}
	}
	return ms
}

// TestRun runs the whole bench at tiny sizes on disk, overlay and strata:
// every row has a time, and nothing is left behind.
func TestRun(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	var lines []string
	rep, err := Run(context.Background(), Options{
		Dir: dir, Systems: []string{Disk, Overlay, Strata}, Workloads: Workloads,
		Runs: 2, Sizes: TinySizes, StrataBin: strataBin,
		Progress: func(l string) { lines = append(lines, l) },
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range rep.Systems {
		if s.Skipped != "" {
			t.Errorf("%s skipped: %s", s.Name, s.Skipped)
		}
	}
	want := 0
	for _, w := range Workloads {
		if w.available() == "" {
			want += len(w.measures) * len(rep.Systems)
		}
	}
	if len(rep.Rows) != want {
		t.Errorf("rows: got %d, want %d", len(rep.Rows), want)
	}
	for _, r := range rep.Rows {
		if r.Error != "" || len(r.Seconds) != 2 || r.Median <= 0 {
			t.Errorf("%s on %s: %d times, median %g, error %q", r.Measure, r.System, len(r.Seconds), r.Median, r.Error)
		}
		if r.System == Overlay && r.XOverlay != 1 {
			t.Errorf("%s on overlay: ×overlay %g, want 1", r.Measure, r.XOverlay)
		}
	}
	if len(lines) == 0 {
		t.Error("no progress lines")
	}
	checkNothingLeft(t, dir)
}

// TestTarPart archives part of a tree larger than TarFiles, from the disk
// system's linked merged tree: the first top directories, whole, with the
// topmost layer's copy of each file.
func TestTarPart(t *testing.T) {
	ctx := context.Background()
	sz := TinySizes
	sz.TreeFiles, sz.TarFiles = 2_500, 1_200
	dir := t.TempDir()
	lowers, err := treeFixture.build(ctx, sz, 1, dir)
	if err != nil {
		t.Fatal(err)
	}
	merged := filepath.Join(dir, "merged")
	if err := os.Mkdir(merged, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := link(ctx, lowers, merged); err != nil {
		t.Fatal(err)
	}
	w, err := Tar(ctx, Env{Dir: merged, Sizes: sz})
	if err != nil {
		t.Fatal(err)
	}
	// Two top directories of ten leaves of a hundred files.
	if w.Files != 2+20+2000 || w.Bytes != treeBytes(2000) {
		t.Errorf("got %d entries, %d bytes; want %d, %d", w.Files, w.Bytes, 2+20+2000, treeBytes(2000))
	}
}

// TestRunBudget runs with a budget every run exceeds: one run of each
// measurement on each system, the chained warm row as many as its cold one,
// and the report says so.
func TestRunBudget(t *testing.T) {
	dir := t.TempDir()
	rep, err := Run(context.Background(), Options{
		Dir: dir, Systems: []string{Disk}, Workloads: []*Workload{workloadByName("stat-walk"), workloadByName("readdir")},
		Runs: 3, Budget: time.Nanosecond, Sizes: TinySizes,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rows) != 4 {
		t.Errorf("rows: got %d, want 4", len(rep.Rows))
	}
	for _, r := range rep.Rows {
		if r.Error != "" || len(r.Seconds) != 1 {
			t.Errorf("%s: %d runs, error %q; want 1 run", r.Measure, len(r.Seconds), r.Error)
		}
	}
	if rep.Runs != 3 || rep.Budget != 1e-9 || rep.Elapsed <= 0 {
		t.Errorf("report: runs %d, budget %g, elapsed %g", rep.Runs, rep.Budget, rep.Elapsed)
	}
	checkNothingLeft(t, dir)
}

func checkNothingLeft(t *testing.T, dir string) {
	t.Helper()
	if ms := mountsUnder(t, dir); len(ms) > 0 {
		t.Errorf("left mounted: %v", ms)
		for _, m := range ms {
			_ = unix.Unmount(m, unix.MNT_DETACH) // the test failed already; do not leave them
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left behind: %s", filepath.Join(dir, e.Name()))
	}
}

// TestRunInterrupted cancels a run while the systems are mounted and a
// workload runs: Run returns the cancellation, with nothing mounted and no
// scratch data left.
func TestRunInterrupted(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sz := TinySizes
	sz.SmallFiles = 1_000_000 // runs for long enough to be interrupted
	rep, err := Run(ctx, Options{
		Dir: dir, Systems: []string{Disk, Overlay, Strata}, Workloads: []*Workload{workloadByName("small-files")},
		Runs: 1, Sizes: sz, StrataBin: strataBin,
		Progress: func(l string) {
			if strings.Contains(l, "small-files create") {
				time.AfterFunc(300*time.Millisecond, cancel)
			}
		},
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, %v; want context.Canceled", rep, err)
	}
	checkNothingLeft(t, dir)
}

// TestRunNoRoom refuses sizes the scratch dir has no room for, before writing
// anything.
func TestRunNoRoom(t *testing.T) {
	dir := t.TempDir()
	sz := TinySizes
	sz.BigFile = 1 << 60
	_, err := Run(context.Background(), Options{
		Dir: dir, Systems: []string{Disk}, Workloads: []*Workload{workloadByName("seqread")},
		Runs: 1, Sizes: sz,
	})
	if !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "free") {
		t.Errorf("got %v, want an ErrInput about free space", err)
	}
	checkNothingLeft(t, dir)
}

// TestRunSkipsMissing reports a system that is not installed as skipped.
func TestRunSkipsMissing(t *testing.T) {
	dir := t.TempDir()
	rep, err := Run(context.Background(), Options{
		Dir: dir, Systems: []string{Disk, Strata}, Workloads: []*Workload{workloadByName("readdir")},
		Runs: 1, Sizes: TinySizes, StrataBin: filepath.Join(dir, "no-such-strata"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if s := rep.Systems[1]; s.Name != Strata || s.Skipped == "" {
		t.Errorf("strata: got %+v, want skipped", s)
	}
	for _, r := range rep.Rows {
		if r.System != Disk {
			t.Errorf("row for %s", r.System)
		}
	}
	checkNothingLeft(t, dir)
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		list string
		want []string
		err  bool
	}{
		{"", SystemNames(), false},
		{"strata,disk", []string{Disk, Strata}, false},
		{"strata,zfs", nil, true},
	} {
		got, err := ParseSystems(tc.list)
		if (err != nil) != tc.err || !tc.err && strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("ParseSystems(%q): got %v, %v; want %v, error %v", tc.list, got, err, tc.want, tc.err)
		}
		if err != nil && !errors.Is(err, ErrInput) {
			t.Errorf("ParseSystems(%q): %v is not an ErrInput", tc.list, err)
		}
	}
	ws, err := ParseWorkloads("seqread,readdir")
	if err != nil || len(ws) != 2 || ws[0].Name != "readdir" || ws[1].Name != "seqread" {
		t.Errorf("ParseWorkloads: got %v, %v", ws, err)
	}
	if _, err := ParseWorkloads("fsck"); !errors.Is(err, ErrInput) {
		t.Errorf("ParseWorkloads(fsck): got %v, want ErrInput", err)
	}
}

// TestOtherUnions runs a few workloads on fuse-overlayfs and unionfs-fuse,
// each skipped with a message when it is not installed.
func TestOtherUnions(t *testing.T) {
	requireRoot(t)
	for _, name := range []string{FuseOverlayfs, UnionfsFuse} {
		t.Run(name, func(t *testing.T) {
			if _, err := systemByName(name).find(&Options{}); err != nil {
				t.Skipf("%s: %v", name, err)
			}
			dir := t.TempDir()
			rep, err := Run(context.Background(), Options{
				Dir: dir, Systems: []string{name},
				Workloads: []*Workload{workloadByName("stat-walk"), workloadByName("copy-up"), workloadByName("small-files")},
				Runs:      1, Sizes: TinySizes,
			})
			if err != nil {
				t.Fatal(err)
			}
			if s := rep.Systems[0]; s.Skipped != "" {
				t.Fatalf("skipped: %s", s.Skipped)
			}
			if len(rep.Rows) != 5 {
				t.Errorf("rows: got %d, want 5", len(rep.Rows))
			}
			for _, r := range rep.Rows {
				if r.Error != "" || len(r.Seconds) != 1 {
					t.Errorf("%s: %d times, error %q", r.Measure, len(r.Seconds), r.Error)
				}
			}
			checkNothingLeft(t, dir)
		})
	}
}

// TestRunSkipsUnmountable reports a system whose mount fails as skipped, with
// the reason, and measures the others.
func TestRunSkipsUnmountable(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(t.TempDir(), "strata")
	script := "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'strata v0-fake'; exit 0; fi\necho 'no /dev/fuse here' >&2\nexit 2\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), Options{
		Dir: dir, Systems: []string{Disk, Strata}, Workloads: []*Workload{workloadByName("readdir")},
		Runs: 1, Sizes: TinySizes, StrataBin: fake,
	})
	if err != nil {
		t.Fatal(err)
	}
	if s := rep.Systems[1]; !strings.Contains(s.Skipped, "no /dev/fuse here") {
		t.Errorf("strata: got %+v, want skipped with the mount's message", s)
	}
	if len(rep.Rows) != 2 || rep.Rows[0].System != Disk || rep.Rows[0].Error != "" {
		t.Errorf("rows: got %+v, want the disk's two", rep.Rows)
	}
	checkNothingLeft(t, dir)
}
