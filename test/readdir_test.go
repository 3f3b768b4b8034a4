package test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/whiteout"
)

// readNames reads up to want names (all if want < 0) from the open directory fd
// with small getdents calls, so that a big directory takes many READDIRs.
func readNames(t *testing.T, fd int, want int) []string {
	t.Helper()
	var names []string
	buf := make([]byte, 1024)
	for want < 0 || len(names) < want {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatalf("getdents: %v", err)
		}
		if n == 0 {
			break
		}
		for off := 0; off < n; {
			reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
			name := unix.ByteSliceToString(buf[off+19 : off+reclen])
			off += reclen
			if name != "." && name != ".." {
				names = append(names, name)
			}
		}
	}
	return names
}

// TestReaddirWhileChanging reads a merged directory of 3000 names in small
// steps while another descriptor deletes and creates names in it halfway: POSIX
// leaves added and removed names unspecified, but every name that stayed must
// come exactly once, and no name twice.
func TestReaddirWhileChanging(t *testing.T) {
	s := newStack(t, 2, func(i int, dir string) {
		for j := i; j < 3000; j += 2 { // the two layers interleave
			mustWrite(t, filepath.Join(dir, "d", "f"+itoa(j)), "")
		}
	})
	for _, f := range []whiteout.Format{whiteout.OCI, whiteout.Overlay} {
		t.Run(f.String(), func(t *testing.T) {
			s := s
			s.Upper, s.Work = t.TempDir(), t.TempDir()
			dir := filepath.Join(mountStrata(t, s, f), "d")
			fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)

			first := readNames(t, fd, 1000)
			removed := map[string]bool{}
			for j := 0; j < 3000; j += 3 { // read and unread ones, both layers
				name := "f" + itoa(j)
				if err := os.Remove(filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
				removed[name] = true
			}
			for j := 0; j < 200; j++ {
				mustWrite(t, filepath.Join(dir, "new"+itoa(j)), "")
			}
			all := append(first, readNames(t, fd, -1)...)

			seen := map[string]int{}
			for _, name := range all {
				seen[name]++
				if seen[name] > 1 {
					t.Errorf("%s listed twice", name)
				}
			}
			for j := 0; j < 3000; j++ {
				name := "f" + itoa(j)
				if !removed[name] && seen[name] != 1 {
					t.Errorf("%s, never removed, listed %d times", name, seen[name])
				}
			}

			// A fresh listing shows exactly the directory as it is now.
			fd2, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd2)
			now := readNames(t, fd2, -1)
			var want []string
			for j := 0; j < 3000; j++ {
				if name := "f" + itoa(j); !removed[name] {
					want = append(want, name)
				}
			}
			for j := 0; j < 200; j++ {
				want = append(want, "new"+itoa(j))
			}
			slices.Sort(now)
			slices.Sort(want)
			if !slices.Equal(now, want) {
				t.Errorf("fresh listing: %d names, want %d", len(now), len(want))
			}
		})
	}
}

// TestSeekdir returns to offsets told by telldir and reads the same names.
func TestSeekdir(t *testing.T) {
	s := newStack(t, 2, func(i int, dir string) {
		for j := i; j < 500; j += 2 {
			mustWrite(t, filepath.Join(dir, "f"+itoa(j)), "")
		}
	})
	mnt := mountStrata(t, s, whiteout.OCI)
	fd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	readNames(t, fd, 100)
	pos, err := unix.Seek(fd, 0, 1) // telldir
	if err != nil {
		t.Fatal(err)
	}
	rest := readNames(t, fd, -1)
	if _, err := unix.Seek(fd, pos, 0); err != nil { // seekdir
		t.Fatal(err)
	}
	again := readNames(t, fd, -1)
	if !slices.Equal(rest, again) {
		t.Errorf("after seekdir: %d names %v..., want %d %v...", len(again), again[:min(3, len(again))], len(rest), rest[:min(3, len(rest))])
	}
	if _, err := unix.Seek(fd, 0, 0); err != nil { // rewinddir
		t.Fatal(err)
	}
	if all := readNames(t, fd, -1); len(all) != 500 {
		t.Errorf("after rewinddir: %d names, want 500", len(all))
	}
}

// TestReaddirNeverStale lists a merged directory right after each change to
// it, from several goroutines that each change and list it at once. The
// kernel caches listings (FOPEN_CACHE_DIR) and fills its cache from whichever
// readers come along; a listing that starts after a change must show it,
// whoever filled the cache and when.
func TestReaddirNeverStale(t *testing.T) {
	s := newStack(t, 1, func(i int, dir string) {
		for j := range 150 { // several READDIRs to a listing
			mustWrite(t, filepath.Join(dir, "common", "lower"+itoa(j)), "")
		}
	})
	mnt := mountStrata(t, s, whiteout.OCI)
	common := filepath.Join(mnt, "common")
	list := func() []string {
		fd, err := unix.Open(common, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Error(err)
			return nil
		}
		defer unix.Close(fd)
		return readNames(t, fd, -1)
	}
	const writers = 3
	deadline := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	errs := make(chan string, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			own := filepath.Join(mnt, "own"+itoa(w))
			if err := os.Mkdir(own, 0o755); err != nil {
				errs <- err.Error()
				return
			}
			for i := 0; time.Now().Before(deadline); i++ {
				name := "w" + itoa(w) + "-" + itoa(i)
				if err := os.WriteFile(filepath.Join(own, name), nil, 0o644); err != nil {
					errs <- err.Error()
					return
				}
				if err := os.Rename(filepath.Join(own, name), filepath.Join(common, name)); err != nil {
					errs <- err.Error()
					return
				}
				if !slices.Contains(list(), name) {
					errs <- "a listing after renaming " + name + " in misses it"
					return
				}
				if err := os.Remove(filepath.Join(common, name)); err != nil {
					errs <- err.Error()
					return
				}
				if slices.Contains(list(), name) {
					errs <- "a listing after removing " + name + " still shows it"
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// dirent is one entry as getdents reports it.
type dirent struct {
	ino uint64
	typ uint8
}

// listDir reads the whole directory path with getdents.
func listDir(t *testing.T, path string) map[string]dirent {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	got := map[string]dirent{}
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatalf("getdents %s: %v", path, err)
		}
		if n == 0 {
			return got
		}
		for off := 0; off < n; {
			ino := binary.NativeEndian.Uint64(buf[off:])
			reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
			name := unix.ByteSliceToString(buf[off+19 : off+reclen])
			if name != "." && name != ".." {
				got[name] = dirent{ino: ino, typ: buf[off+18]}
			}
			off += reclen
		}
	}
}

// TestReaddirPlusThenStat lists directories and stats their entries in the
// patterns that make strata hand READDIRPLUS entries out with and without
// their attributes (unionfs/plus.go): listings nobody stats, then listings
// whose every entry is stated, then some of each. Whatever went out, every
// entry must stat as kernel overlayfs shows it, and as the number getdents
// gave it.
func TestReaddirPlusThenStat(t *testing.T) {
	const dirs, files = 30, 60
	s := newStack(t, 2, func(i int, dir string) {
		for d := range dirs {
			for f := i; f < files; f += 2 {
				mustWrite(t, filepath.Join(dir, "d"+itoa(d), "f"+itoa(f)), strings.Repeat("x", f+i))
			}
			mustWrite(t, filepath.Join(dir, "d"+itoa(d), "shadowed"), strings.Repeat("y", 10+i))
			if err := os.MkdirAll(filepath.Join(dir, "d"+itoa(d), "sub"+itoa(i)), 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("f0", filepath.Join(dir, "d"+itoa(d), "link"+itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
	})
	mnt := mountStrata(t, s, whiteout.OCI)
	ref := mountOverlay(t, stack{Lowers: s.Lowers})

	check := func(d int, stat bool) {
		t.Helper()
		rel := "d" + itoa(d)
		got, want := listDir(t, filepath.Join(mnt, rel)), listDir(t, filepath.Join(ref, rel))
		if len(got) != len(want) {
			t.Fatalf("%s: %d entries, overlay shows %d", rel, len(got), len(want))
		}
		if !stat {
			return
		}
		for name, w := range want {
			g, ok := got[name]
			if !ok || g.typ != w.typ {
				t.Errorf("%s/%s: listed %v (%t), overlay %v", rel, name, g, ok, w)
				continue
			}
			var gs, ws unix.Stat_t
			if err := unix.Lstat(filepath.Join(mnt, rel, name), &gs); err != nil {
				t.Fatal(err)
			}
			if err := unix.Lstat(filepath.Join(ref, rel, name), &ws); err != nil {
				t.Fatal(err)
			}
			if gs.Ino != g.ino {
				t.Errorf("%s/%s: st_ino %d, getdents said %d", rel, name, gs.Ino, g.ino)
			}
			if gs.Mode != ws.Mode || gs.Size != ws.Size || gs.Mtim != ws.Mtim {
				t.Errorf("%s/%s: mode %o size %d mtime %v, overlay mode %o size %d mtime %v",
					rel, name, gs.Mode, gs.Size, gs.Mtim, ws.Mode, ws.Size, ws.Mtim)
			}
		}
	}
	d := 0
	for range 5 { // find: listings only
		check(d, false)
		d++
	}
	for range 10 { // ls -l: every entry stated
		check(d, true)
		d++
	}
	for d < dirs { // a walk that stats every other directory
		check(d, d%2 == 0)
		d++
	}
	for d := range dirs { // and all again, from the kernel's caches or not
		check(d, true)
	}
}
