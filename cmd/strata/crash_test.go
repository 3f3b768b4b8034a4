package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/whiteout"
)

// The crash test: a strata daemon is killed with SIGKILL at random moments
// while another process copies big lower files up, renames files and
// directories and deletes them through its union. After each kill the union is
// cleared (strata umount, or the next strata mount on the same point) and
// mounted again on the same upper and work directories, and the merged tree
// must be exactly what the operations that had returned made of it, give or
// take the one operation the kill interrupted: that one is either whole or not
// there at all. No staged entry may show, and the work directory must be empty
// once mounted again.
//
//	go test ./cmd/strata -run TestCrash -v -args -crash.time=5m   # make stress

var (
	crashTime = flag.Duration("crash.time", 35*time.Second, "crash test: how long to go on killing daemons")
	crashSeed = flag.Uint64("crash.seed", 0, "crash test: the random seed (0: from the clock)")
)

// crashFile is what the test knows of one entry of the union. Values are never
// changed once in a model: an operation makes a new one.
type crashFile struct {
	dir  bool
	data []byte
	mode uint32
}

// crashModel maps a slash path relative to the union's root to its entry.
type crashModel map[string]*crashFile

// crashLower builds the lower layer: four 2 MiB files (their copy-up takes
// long enough to be killed in the middle), small files, and directories.
func crashLower(t *testing.T, dir string) crashModel {
	t.Helper()
	m := crashModel{}
	add := func(rel string, f *crashFile) {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		var err error
		if f.dir {
			err = os.Mkdir(p, fs.FileMode(f.mode))
		} else {
			err = os.WriteFile(p, f.data, fs.FileMode(f.mode))
		}
		if err != nil {
			t.Fatal(err)
		}
		m[rel] = f
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	content := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
		return b
	}
	for i := range 4 {
		add(fmt.Sprintf("big%d", i), &crashFile{data: content(2 << 20), mode: 0o644})
	}
	for i := range 6 {
		add(fmt.Sprintf("s%d", i), &crashFile{data: content(1024 + i), mode: 0o644})
	}
	for i := range 3 {
		d := fmt.Sprintf("d%d", i)
		add(d, &crashFile{dir: true, mode: 0o755})
		add(d+"/x", &crashFile{data: content(600), mode: 0o644})
		add(d+"/big", &crashFile{data: content(256 << 10), mode: 0o640})
		add(d+"/sub", &crashFile{dir: true, mode: 0o750})
		add(d+"/sub/z", &crashFile{data: content(700), mode: 0o600})
	}
	return m
}

// crashOp is one operation: what it does, and the model it leaves.
type crashOp struct {
	desc  string
	do    func(mnt string) error
	after crashModel
}

// nextOp picks a random operation on model m.
func nextOp(rnd *rand.Rand, m crashModel, seq int) crashOp {
	var files, dirs []string
	for p, f := range m {
		if f.dir {
			dirs = append(dirs, p)
		} else {
			files = append(files, p)
		}
	}
	slices.Sort(files)
	slices.Sort(dirs)
	after := maps.Clone(m)
	pick := func(s []string) string { return s[rnd.IntN(len(s))] }
	newName := func() string {
		if len(dirs) > 0 && rnd.IntN(2) == 0 {
			return pick(dirs) + fmt.Sprintf("/n%d", seq)
		}
		return fmt.Sprintf("n%d", seq)
	}
	if len(files) == 0 {
		// Everything is gone: ask the daemon for the root's attributes (past
		// the kernel's cache), which fails once it is killed.
		return crashOp{desc: "statx", after: after, do: func(mnt string) error {
			var stx unix.Statx_t
			return unix.Statx(unix.AT_FDCWD, mnt, unix.AT_STATX_FORCE_SYNC, unix.STATX_TYPE, &stx)
		}}
	}
	switch k := rnd.IntN(10); {
	case k < 3: // write 512 bytes into a file: a copy-up of all of it first
		f := pick(files)
		old := m[f]
		off := rnd.IntN(max(len(old.data)-512, 0) + 1)
		patch := make([]byte, min(512, len(old.data)))
		for i := range patch {
			patch[i] = byte(rnd.Uint32())
		}
		data := slices.Clone(old.data)
		copy(data[off:], patch)
		after[f] = &crashFile{data: data, mode: old.mode}
		return crashOp{desc: fmt.Sprintf("write %s @%d", f, off), after: after, do: func(mnt string) error {
			fd, err := unix.Open(filepath.Join(mnt, f), unix.O_WRONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			if _, err := unix.Pwrite(fd, patch, int64(off)); err != nil {
				return err
			}
			return unix.Fsync(fd)
		}}
	case k < 5: // chmod: a copy-up with nothing written
		f := pick(files)
		mode := []uint32{0o600, 0o640, 0o755, 0o444}[rnd.IntN(4)]
		after[f] = &crashFile{data: m[f].data, mode: mode}
		return crashOp{desc: fmt.Sprintf("chmod %s %o", f, mode), after: after, do: func(mnt string) error {
			return unix.Chmod(filepath.Join(mnt, f), mode)
		}}
	case k < 7: // rename a file, over another file or to a new name
		f := pick(files)
		to := newName()
		if rnd.IntN(2) == 0 {
			to = pick(files)
		}
		if to == f {
			to = newName()
		}
		delete(after, f)
		after[to] = m[f]
		return crashOp{desc: fmt.Sprintf("rename %s %s", f, to), after: after, do: func(mnt string) error {
			return unix.Rename(filepath.Join(mnt, f), filepath.Join(mnt, to))
		}}
	case k < 9: // unlink a file
		f := pick(files)
		delete(after, f)
		return crashOp{desc: "unlink " + f, after: after, do: func(mnt string) error {
			return unix.Unlink(filepath.Join(mnt, f))
		}}
	default: // rename a directory (with lower parts: copied up whole) or remove an empty one
		if len(dirs) == 0 {
			return nextOp(rnd, m, seq)
		}
		d := pick(dirs)
		empty := true
		for p := range m {
			empty = empty && !strings.HasPrefix(p, d+"/")
		}
		if empty {
			delete(after, d)
			return crashOp{desc: "rmdir " + d, after: after, do: func(mnt string) error {
				return unix.Rmdir(filepath.Join(mnt, d))
			}}
		}
		to := fmt.Sprintf("dn%d", seq)
		for p, f := range m {
			if p == d || strings.HasPrefix(p, d+"/") {
				delete(after, p)
				after[to+strings.TrimPrefix(p, d)] = f
			}
		}
		return crashOp{desc: fmt.Sprintf("rename %s %s", d, to), after: after, do: func(mnt string) error {
			return unix.Rename(filepath.Join(mnt, d), filepath.Join(mnt, to))
		}}
	}
}

// readUnion reads the merged tree under mnt into a model.
func readUnion(root string) (crashModel, error) {
	m := crashModel{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, root+"/"))
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		f := &crashFile{mode: st.Mode & 0o7777}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			f.dir = true
		case unix.S_IFREG:
			if f.data, err = os.ReadFile(p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unexpected file type %o", rel, st.Mode&unix.S_IFMT)
		}
		m[rel] = f
		return nil
	})
	return m, err
}

// diffModels lists how got differs from want, at most a few lines.
func diffModels(want, got crashModel) []string {
	var d []string
	for _, p := range slices.Sorted(maps.Keys(want)) {
		w, g := want[p], got[p]
		switch {
		case g == nil:
			d = append(d, p+": missing")
		case w.dir != g.dir:
			d = append(d, fmt.Sprintf("%s: dir %v, want %v", p, g.dir, w.dir))
		case w.mode != g.mode:
			d = append(d, fmt.Sprintf("%s: mode %o, want %o", p, g.mode, w.mode))
		case !w.dir && !bytes.Equal(w.data, g.data):
			d = append(d, fmt.Sprintf("%s: content differs (size %d, want %d; first difference at %d)",
				p, len(g.data), len(w.data), firstDiff(g.data, w.data)))
		}
	}
	for _, p := range slices.Sorted(maps.Keys(got)) {
		if want[p] == nil {
			d = append(d, p+": should not be there")
		}
	}
	return d
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// upperStray checks that every entry of the upper is a name of the model, or a
// whiteout or opaque marker: nothing staged may have been left in place.
func upperStray(upper string, m crashModel) []string {
	var stray []string
	_ = filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == upper {
			return nil
		}
		rel := filepath.ToSlash(strings.TrimPrefix(p, upper+"/"))
		if strings.HasPrefix(d.Name(), whiteout.Prefix) {
			return nil
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil && whiteout.IsOverlayWhiteout(st.Mode, st.Rdev) {
			return nil
		}
		if m[rel] == nil {
			stray = append(stray, rel)
		}
		return nil
	})
	return stray
}

func TestCrash(t *testing.T) {
	requireMount(t)
	budget := *crashTime
	if testing.Short() {
		budget = min(budget, 3*time.Second)
	}
	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (-args -crash.seed=%d repeats it), for %v", seed, seed, budget)
	rnd := rand.New(rand.NewPCG(seed, 7))

	lower, _, mnt := stack(t) // its cleanup detaches whatever is left on mnt
	base := filepath.Dir(lower)
	upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
	if err := os.RemoveAll(lower); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(lower, 0o755); err != nil {
		t.Fatal(err)
	}
	initial := crashLower(t, lower)

	var fg *foreground
	t.Cleanup(func() {
		if fg != nil && fg.cmd.ProcessState == nil {
			_ = fg.cmd.Process.Kill() // the test failed midway
			_, _ = fg.wait()
		}
		_ = unix.Unmount(mnt, unix.MNT_DETACH) // never leave a dead union behind
	})

	var (
		model                       crashModel
		format                      = "oci"
		kills, opsDone, inFlightNew int
		debris, viaMount            int
		errnos                      = map[string]int{} // what the interrupted operations saw
	)
	start := time.Now()
	epoch := 0
	for ; time.Since(start) < budget && !t.Failed(); epoch++ {
		// Each epoch starts from an empty upper, so that there are lower
		// files left to copy up, and alternates the whiteout formats: with
		// oci, metacopy is on (a chmod makes a stub, the next write fills
		// it), with overlay off, so kills land in both kinds of copy-up.
		for _, d := range []string{upper, work} {
			if err := os.RemoveAll(d); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		model = maps.Clone(initial)
		format = map[string]string{"oci": "overlay", "overlay": "oci"}[format]
		args := []string{"--layer", lower, "--upper", upper, "--work", work, "--whiteout", format, mnt}
		fg = serve(t, args...)
		for iter := 0; len(model) > len(initial)/2 && time.Since(start) < budget && !t.Failed(); iter++ {
			// Operations in a goroutine, until one fails: the kill.
			type result struct {
				model   crashModel
				pending *crashOp
				err     error
				alive   bool // the daemon answered after the error
			}
			done := make(chan result, 1)
			wrnd := rand.New(rand.NewPCG(seed, uint64(kills))) // the goroutine's own
			go func(m crashModel, seq int) {
				for i := 0; ; i++ {
					op := nextOp(wrnd, m, seq*1000+i)
					if err := op.do(mnt); err != nil {
						// Failed because the daemon was killed, or a real
						// failure? Ask the daemon, past the kernel's cache.
						var stx unix.Statx_t
						alive := unix.Statx(unix.AT_FDCWD, mnt, unix.AT_STATX_FORCE_SYNC, unix.STATX_TYPE, &stx) == nil
						done <- result{m, &op, err, alive}
						return
					}
					m = op.after
					opsDone++
				}
			}(model, kills)
			time.Sleep(time.Duration(rnd.IntN(10000)) * time.Microsecond)
			if err := fg.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_, _ = fg.wait() // killed; its status is known
			kills++
			res := <-done
			if res.alive {
				t.Errorf("%s: %v, from a daemon that was still alive", res.pending.desc, res.err)
			}
			var errno unix.Errno
			if errors.As(res.err, &errno) {
				errnos[unix.ErrnoName(errno)]++
			}
			if ents, _ := os.ReadDir(filepath.Join(work, "work")); len(ents) > 0 {
				debris++
			}

			// Clear the dead union: by strata umount, or by mounting again.
			if iter%2 == 0 {
				code, _, stderr := strata(t, "umount", mnt)
				if code != 0 || !strings.Contains(stderr, "detached") {
					t.Fatalf("umount of the dead union: exit %d, stderr %q; want 0 and a note", code, stderr)
				}
				fg = serve(t, args...)
			} else {
				fg = serve(t, args...)
				viaMount++
				if !strings.Contains(fg.early, "detached") {
					t.Errorf("mount over the dead union: stderr %q, want a note that it was detached", fg.early)
				}
			}
			if ents, err := os.ReadDir(filepath.Join(work, "work")); err != nil || len(ents) > 0 {
				t.Errorf("work dir after the mount: %d entries (%v), want none", len(ents), err)
			}

			got, err := readUnion(mnt)
			if err != nil {
				t.Fatalf("read the union after kill %d: %v", kills, err)
			}
			model = res.model
			if d := diffModels(model, got); len(d) > 0 {
				if d2 := diffModels(res.pending.after, got); len(d2) > 0 {
					t.Fatalf("after a kill during %q (format %s), the union is neither as before nor as after it:\nagainst before:\n\t%s\nagainst after:\n\t%s",
						res.pending.desc, format, strings.Join(d, "\n\t"), strings.Join(d2, "\n\t"))
				}
				inFlightNew++
				model = res.pending.after
			}
			if s := upperStray(upper, model); len(s) > 0 {
				t.Errorf("after a kill during %q, the upper holds entries the union does not show: %q", res.pending.desc, s)
			}
		}
		if err := fg.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if stderr, err := fg.wait(); err != nil {
			t.Fatalf("strata mount after SIGTERM: %v; stderr %q", err, stderr)
		}
	}
	t.Logf("%d epochs (an empty upper each); %d daemons killed in %v (%d cleared by the next mount, the rest by strata umount); %d operations done through them; "+
		"the interrupted operation had taken effect %d times; %d kills left staged debris in the work dir; the interrupted operations failed with %v",
		epoch, kills, time.Since(start).Round(time.Second), viaMount, opsDone, inFlightNew, debris, errnos)
	if kills == 0 {
		t.Error("no daemon was killed")
	}
}
