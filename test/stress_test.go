package test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/unionfs"
	"github.com/strata-fs/strata/whiteout"
)

// The concurrency stress test: goroutines of this process and other processes
// work on one strata mount at once, for a bounded time: creating, writing,
// reading, renaming, unlinking and listing, copying up lower files side by
// side in one directory, and writing disjoint parts of one lower file (a copy-up
// many race for). Each worker owns its names, so each can keep an exact model
// of them and check what it reads on the way; at the end the merged tree must
// be every model together, on the live mount and again after a remount. The
// union is served by this process, so that -race watches it, its heap is
// sampled (it must stay bounded), and its goroutines counted (none may leak).
//
//	go test ./test -run 'TestStress$' -v -args -stress.time=2m   # make stress
//	go test -race ./test -run 'TestStress$' -args -stress.time=5s # make race

var (
	stressTime = flag.Duration("stress.time", 5*time.Second, "stress test: how long the workers run")
)

const (
	stressGoroutines = 6
	stressProcesses  = 2
	stressRegion     = 4096 // each worker's part of the shared file
	stressChildEnv   = "STRATA_STRESS_CHILD"
	// stressMaxHeap bounds the heap of this process, union and workers
	// together: their working set is a few MiB.
	stressMaxHeap = 256 << 20
)

// stressEntry is what a worker knows of one of its names.
type stressEntry struct {
	Dir  bool   `json:",omitempty"`
	Data []byte `json:",omitempty"`
}

type stressModel map[string]stressEntry

func stressLowerFile(i, k int) string { return fmt.Sprintf("common/lw%d-%d", i, k) }

// stressFixture is the bottom layer: per worker, lower files in a shared
// directory; and the shared file.
func stressFixture(workers int) (layer []fx, model stressModel) {
	model = stressModel{"common": {Dir: true}}
	for i := range workers {
		for k := range 4 {
			data := bigContent(int64(8192 + 64*i + k))[64*i+k:]
			layer = append(layer, fFile(stressLowerFile(i, k), string(data)))
			model[stressLowerFile(i, k)] = stressEntry{Data: data}
		}
	}
	shared := bigContent(1 << 20)
	layer = append(layer, fFile("shared", string(shared)))
	model["shared"] = stressEntry{Data: shared}
	return layer, model
}

// stressWorker runs worker id's operations on mnt until the deadline and
// returns its model: its own directory w<id>, its lower files, the names it
// made in common/, and its region of the shared file as "shared@<id>".
type stressWorker struct {
	mnt   string
	id    int
	rnd   *rand.Rand
	model stressModel
	seq   int
	ops   int
	errs  []string
}

func (w *stressWorker) errorf(format string, args ...any) {
	if len(w.errs) < 20 {
		w.errs = append(w.errs, fmt.Sprintf("worker %d op %d: ", w.id, w.ops)+fmt.Sprintf(format, args...))
	}
}

func (w *stressWorker) p(rel string) string { return filepath.Join(w.mnt, rel) }

// files are the worker's regular files, sorted.
func (w *stressWorker) files() []string {
	var fs []string
	for rel, e := range w.model {
		if !e.Dir && !strings.HasPrefix(rel, "shared@") {
			fs = append(fs, rel)
		}
	}
	slices.Sort(fs)
	return fs
}

func (w *stressWorker) data(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(w.rnd.Uint32())
	}
	return b
}

func (w *stressWorker) run(until time.Time) {
	own := fmt.Sprintf("w%d", w.id)
	if err := os.Mkdir(w.p(own), 0o755); err != nil {
		w.errorf("mkdir %s: %v", own, err)
		return
	}
	w.model[own] = stressEntry{Dir: true}
	for ; time.Now().Before(until) && len(w.errs) == 0; w.ops++ {
		w.step(own)
	}
}

func (w *stressWorker) step(own string) {
	w.seq++
	files := w.files()
	pick := func() string { return files[w.rnd.IntN(len(files))] }
	switch op := w.rnd.IntN(12); {
	case op == 0 || len(files) == 0: // create
		rel := fmt.Sprintf("%s/f%d", own, w.seq)
		data := w.data(w.rnd.IntN(16 << 10))
		if err := writeWhole(w.p(rel), data, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY); err != nil {
			w.errorf("create %s: %v", rel, err)
			return
		}
		w.model[rel] = stressEntry{Data: data}
	case op == 1: // overwrite with O_TRUNC
		rel := pick()
		data := w.data(w.rnd.IntN(16 << 10))
		if err := writeWhole(w.p(rel), data, unix.O_TRUNC|unix.O_WRONLY); err != nil {
			w.errorf("write O_TRUNC %s: %v", rel, err)
			return
		}
		w.model[rel] = stressEntry{Data: data}
	case op == 2: // pwrite in the middle: a copy-up of a lower file first
		rel := pick()
		old := w.model[rel].Data
		off := w.rnd.IntN(len(old) + 1)
		patch := w.data(1 + w.rnd.IntN(2048))
		fd, err := unix.Open(w.p(rel), unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			_, err = unix.Pwrite(fd, patch, int64(off))
			if cerr := unix.Close(fd); err == nil {
				err = cerr
			}
		}
		if err != nil {
			w.errorf("pwrite %s: %v", rel, err)
			return
		}
		data := slices.Clone(old)
		if end := off + len(patch); end > len(data) {
			data = append(data, make([]byte, end-len(data))...)
		}
		copy(data[off:], patch)
		w.model[rel] = stressEntry{Data: data}
	case op == 3: // rename, within the own directory or into the shared one
		rel := pick()
		to := fmt.Sprintf("%s/r%d", own, w.seq)
		if w.rnd.IntN(2) == 0 {
			to = fmt.Sprintf("common/w%d-m%d", w.id, w.seq)
		}
		if err := os.Rename(w.p(rel), w.p(to)); err != nil {
			w.errorf("rename %s %s: %v", rel, to, err)
			return
		}
		w.model[to] = w.model[rel]
		delete(w.model, rel)
	case op == 4: // unlink
		rel := pick()
		if err := os.Remove(w.p(rel)); err != nil {
			w.errorf("unlink %s: %v", rel, err)
			return
		}
		delete(w.model, rel)
	case op == 5: // mkdir, or rmdir of an empty one
		for rel, e := range w.model {
			if e.Dir && rel != own && w.emptyDir(rel) {
				if err := os.Remove(w.p(rel)); err != nil {
					w.errorf("rmdir %s: %v", rel, err)
				}
				delete(w.model, rel)
				return
			}
		}
		rel := fmt.Sprintf("%s/d%d", own, w.seq)
		if err := os.Mkdir(w.p(rel), 0o755); err != nil {
			w.errorf("mkdir %s: %v", rel, err)
			return
		}
		w.model[rel] = stressEntry{Dir: true}
	case op == 6: // read a file whole
		rel := pick()
		got, err := os.ReadFile(w.p(rel))
		if err != nil || !bytes.Equal(got, w.model[rel].Data) {
			w.errorf("read %s: %d bytes (%v), want %d, first difference at %d", rel, len(got), err, len(w.model[rel].Data), firstDiff(got, w.model[rel].Data))
		}
	case op == 7: // list the own directory
		want := w.namesIn(own)
		got := listNames(w.p(own))
		if !slices.Equal(got, want) {
			w.errorf("readdir %s: %q, want %q", own, got, want)
		}
	case op == 8: // list the shared directory: the own names exactly, no name twice
		got := listNames(w.p("common"))
		var mine []string
		for i, n := range got {
			if i > 0 && got[i-1] == n {
				w.errorf("readdir common: %q listed twice", n)
			}
			if strings.HasPrefix(n, fmt.Sprintf("lw%d-", w.id)) || strings.HasPrefix(n, fmt.Sprintf("w%d-", w.id)) {
				mine = append(mine, n)
			}
		}
		if want := w.namesIn("common"); !slices.Equal(mine, want) {
			// Others change the directory meanwhile, so the kernel's
			// readdir cache is filled and dropped all the time: the own
			// names show whether a listing ever misses a change.
			w.errorf("readdir common: own names %q, want %q", mine, want)
		}
	case op == 9 || op == 10: // write the own region of the shared file
		region := w.data(stressRegion)
		fd, err := unix.Open(w.p("shared"), unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			_, err = unix.Pwrite(fd, region, int64(w.id*stressRegion))
			if cerr := unix.Close(fd); err == nil {
				err = cerr
			}
		}
		if err != nil {
			w.errorf("write the shared file: %v", err)
			return
		}
		w.model[fmt.Sprintf("shared@%d", w.id)] = stressEntry{Data: region}
	default: // read the own region of the shared file
		want, ok := w.model[fmt.Sprintf("shared@%d", w.id)]
		if !ok {
			return
		}
		buf := make([]byte, stressRegion)
		f, err := os.Open(w.p("shared"))
		if err == nil {
			_, err = f.ReadAt(buf, int64(w.id*stressRegion))
			_ = f.Close() // read only
		}
		if err != nil || !bytes.Equal(buf, want.Data) {
			w.errorf("read the own region of the shared file: %v, equal %v", err, bytes.Equal(buf, want.Data))
		}
	}
}

// namesIn lists the model's names directly in dir, sorted.
func (w *stressWorker) namesIn(dir string) []string {
	var names []string
	for rel := range w.model {
		if path.Dir(rel) == dir && !strings.HasPrefix(rel, "shared@") {
			names = append(names, path.Base(rel))
		}
	}
	slices.Sort(names)
	return names
}

func (w *stressWorker) emptyDir(dir string) bool {
	for rel := range w.model {
		if strings.HasPrefix(rel, dir+"/") {
			return false
		}
	}
	return true
}

func writeWhole(p string, data []byte, flags int) error {
	fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	err = writeAll(fd, string(data), -1)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

func listNames(dir string) []string {
	f, err := os.Open(dir)
	if err != nil {
		return []string{"ERROR " + err.Error()}
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return []string{"ERROR " + err.Error()}
	}
	slices.Sort(names)
	return names
}

// newStressWorker gives worker id the lower files of the fixture as its own.
func newStressWorker(mnt string, id int, seed uint64, lower stressModel) *stressWorker {
	w := &stressWorker{mnt: mnt, id: id, rnd: rand.New(rand.NewPCG(seed, uint64(id))), model: stressModel{}}
	for k := range 4 {
		w.model[stressLowerFile(id, k)] = lower[stressLowerFile(id, k)]
	}
	return w
}

// TestStressChild is a worker in a process of its own, started by TestStress.
func TestStressChild(t *testing.T) {
	spec := os.Getenv(stressChildEnv)
	if spec == "" {
		t.Skip("run by TestStress")
	}
	f := strings.Split(spec, ":") // mnt:id:seed:until(unix nanos):out
	id, _ := strconv.Atoi(f[1])
	seed, _ := strconv.ParseUint(f[2], 10, 64)
	until, _ := strconv.ParseInt(f[3], 10, 64)
	_, lower := stressFixture(stressGoroutines + stressProcesses)
	w := newStressWorker(f[0], id, seed, lower)
	w.run(time.Unix(0, until))
	out, err := json.Marshal(struct {
		Model stressModel
		Errs  []string
		Ops   int
	}{w.model, w.errs, w.ops})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f[4], out, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestStress(t *testing.T) {
	requireRoot(t)
	if os.Getenv(stressChildEnv) != "" {
		t.Skip("in a worker")
	}
	workers := stressGoroutines + stressProcesses
	fixture, lower := stressFixture(workers)
	s := newStack(t, 2, func(i int, dir string) {
		if i == 0 {
			applyFixture(t, dir, fixture)
		} else {
			applyFixture(t, dir, []fx{fFile("common/top", "top")})
		}
	})
	lower["common/top"] = stressEntry{Data: []byte("top")}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d goroutines and %d processes for %v", seed, stressGoroutines, stressProcesses, *stressTime)

	goroutinesBefore := runtime.NumGoroutine()
	guardLowers(t, s.Lowers)
	mnt := filepath.Join(t.TempDir(), "merged")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	srv, err := unionfs.Mount(mnt, unionfs.Config{Lowers: s.Lowers, Upper: s.Upper, Work: s.Work, Whiteout: whiteout.OCI})
	if err != nil {
		t.Fatal(err)
	}
	mounted := true
	unmount := func() {
		if !mounted {
			return
		}
		mounted = false
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v (detaching)", err)
			_ = unix.Unmount(mnt, unix.MNT_DETACH)
		}
		srv.Wait()
	}
	t.Cleanup(unmount)

	// The heap, sampled while the workers run.
	var peak atomic.Uint64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()

	until := time.Now().Add(*stressTime)
	var wg sync.WaitGroup
	ws := make([]*stressWorker, stressGoroutines)
	for i := range ws {
		ws[i] = newStressWorker(mnt, i, seed, lower)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ws[i].run(until)
		}()
	}
	type childResult struct {
		Model stressModel
		Errs  []string
		Ops   int
	}
	children := make([]childResult, stressProcesses)
	for j := range stressProcesses {
		id := stressGoroutines + j
		out := filepath.Join(t.TempDir(), "model.json")
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^TestStressChild$", "-test.v")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%d:%d:%d:%s", stressChildEnv, mnt, id, seed, until.UnixNano(), out))
			if b, err := cmd.CombinedOutput(); err != nil {
				children[j].Errs = append(children[j].Errs, fmt.Sprintf("worker process %d: %v\n%s", id, err, b))
				return
			}
			b, err := os.ReadFile(out)
			if err == nil {
				err = json.Unmarshal(b, &children[j])
			}
			if err != nil {
				children[j].Errs = append(children[j].Errs, fmt.Sprintf("worker process %d: %v", id, err))
			}
		}()
	}
	wg.Wait()
	close(stopSampling)
	<-sampled

	// Every model together: the lower files not owned by anyone, then each
	// worker's names, then the shared file with each worker's last region.
	want := stressModel{"common": {Dir: true}, "common/top": lower["common/top"]}
	shared := slices.Clone(lower["shared"].Data)
	ops := 0
	merge := func(m stressModel, errs []string, n int) {
		for _, e := range errs {
			t.Error(e)
		}
		ops += n
		for rel, e := range m {
			if id, ok := strings.CutPrefix(rel, "shared@"); ok {
				i, _ := strconv.Atoi(id)
				copy(shared[i*stressRegion:], e.Data)
				continue
			}
			want[rel] = e
		}
	}
	for _, w := range ws {
		merge(w.model, w.errs, w.ops)
	}
	for _, c := range children {
		merge(c.Model, c.Errs, c.Ops)
	}
	want["shared"] = stressEntry{Data: shared}
	t.Logf("%d operations; peak heap in use %d MiB", ops, peak.Load()>>20)
	if peak.Load() > stressMaxHeap {
		t.Errorf("peak heap in use %d MiB, want at most %d MiB", peak.Load()>>20, stressMaxHeap>>20)
	}

	checkStressTree(t, "the live mount", mnt, want)
	unmount()
	srv2, err := unionfs.Mount(mnt, unionfs.Config{Lowers: s.Lowers, Upper: s.Upper, Work: s.Work, Whiteout: whiteout.OCI})
	if err != nil {
		t.Fatal(err)
	}
	checkStressTree(t, "a fresh mount of the same layers", mnt, want)
	if err := srv2.Unmount(); err != nil {
		t.Errorf("unmount: %v (detaching)", err)
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
	}
	srv2.Wait()

	// The union's goroutines end with it.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > goroutinesBefore && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutinesBefore {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after the unmount, %d before the mount:\n%s", n, goroutinesBefore, buf[:runtime.Stack(buf, true)])
	}
}

// checkStressTree compares the tree under mnt with want.
func checkStressTree(t *testing.T, what, mnt string, want stressModel) {
	t.Helper()
	got := stressModel{}
	err := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == mnt {
			return err
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, mnt+"/"))
		if d.IsDir() {
			got[rel] = stressEntry{Dir: true}
			return nil
		}
		b, err := os.ReadFile(p)
		got[rel] = stressEntry{Data: b}
		return err
	})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	var diffs []string
	for _, rel := range slices.Sorted(maps.Keys(want)) {
		g, ok := got[rel]
		switch w := want[rel]; {
		case !ok:
			diffs = append(diffs, rel+": missing")
		case g.Dir != w.Dir || !bytes.Equal(g.Data, w.Data):
			diffs = append(diffs, fmt.Sprintf("%s: dir %v, %d bytes; want dir %v, %d bytes, first difference at %d", rel, g.Dir, len(g.Data), w.Dir, len(w.Data), firstDiff(g.Data, w.Data)))
		}
	}
	for _, rel := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[rel]; !ok {
			diffs = append(diffs, rel+": should not be there")
		}
	}
	if len(diffs) > 0 {
		t.Errorf("%s differs from the workers' models (%d):\n\t%s", what, len(diffs), strings.Join(diffs[:min(len(diffs), 30)], "\n\t"))
	}
}
