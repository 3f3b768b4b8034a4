package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/unionfs"
	"github.com/strata-fs/strata/whiteout"
)

// TestWritesAfterPassthroughReaders runs, on kernel overlayfs (the reference)
// and on strata, interleavings of a reader that holds a lower file open (with
// FUSE passthrough, the lower file is then the kernel inode's backing file) and
// a writer that opens the same name after it. The writer must write the upper
// copy, never the lower file; new readers must see the writer's data; the
// reader that came first keeps the lower file, as in overlayfs. The lower
// layers are compared with their snapshot after every interleaving.
func TestWritesAfterPassthroughReaders(t *testing.T) {
	requireRoot(t)
	type scenario struct {
		name  string
		run   func(o *ptObs, f string)
		small bool // below unionfs's lowerPassthroughMin: kept in the page cache
	}
	scenarios := []scenario{
		{"pwrite", func(o *ptObs, f string) {
			r := o.open("reader", f, unix.O_RDONLY)
			o.pread("reader", r, 0, 24)
			w := o.open("writer", f, unix.O_RDWR)
			o.pwrite("writer", w, 0, "NEW!")
			o.close(w)
			o.pread("old reader", r, 0, 24)
			o.readAll("new reader", f)
			o.stat(f)
			o.close(r)
			o.readAll("after close", f)
		}, false},
		{"mmap write", func(o *ptObs, f string) {
			r := o.open("reader", f, unix.O_RDONLY)
			o.pread("reader", r, 100, 16)
			w := o.open("writer", f, unix.O_RDWR)
			o.mmapWrite("writer", w, 100, "MAPPED")
			o.close(w)
			o.pread("old reader", r, 100, 16)
			o.readAll("new reader", f)
			o.close(r)
		}, false},
		{"O_TRUNC", func(o *ptObs, f string) {
			r := o.open("reader", f, unix.O_RDONLY)
			o.pread("reader", r, 0, 24)
			w := o.open("writer", f, unix.O_WRONLY|unix.O_TRUNC)
			o.pwrite("writer", w, 0, "short")
			o.close(w)
			o.pread("old reader", r, 0, 24)
			o.readAll("new reader", f)
			o.stat(f)
			o.close(r)
		}, false},
		{"O_APPEND", func(o *ptObs, f string) {
			r := o.open("reader", f, unix.O_RDONLY)
			w := o.open("writer", f, unix.O_WRONLY|unix.O_APPEND)
			o.write("writer", w, "tail")
			o.close(w)
			o.readAll("new reader", f)
			o.stat(f)
			o.close(r)
		}, false},
		{"reader's mapping", func(o *ptObs, f string) {
			r := o.open("reader", f, unix.O_RDONLY)
			mem, err := unix.Mmap(r, 0, 4096, unix.PROT_READ, unix.MAP_SHARED)
			o.rec("reader mmap", err)
			w := o.open("writer", f, unix.O_RDWR)
			o.pwrite("writer", w, 0, "NEW!")
			o.close(w)
			if err == nil {
				if o.readsLower(mem[:24], 0) {
					o.log("old mapping: reads the lower file")
				} else {
					o.log("old mapping: reads %q", mem[:24])
				}
				o.rec("reader munmap", unix.Munmap(mem))
			}
			o.readAll("new reader", f)
			o.close(r)
		}, false},
		{"truncate by name, then write", func(o *ptObs, f string) {
			r := o.open("reader", f, unix.O_RDONLY)
			o.rec("truncate", unix.Truncate(o.p(f), 5))
			o.readAll("new reader", f)
			w := o.open("writer", f, unix.O_RDWR)
			o.pwrite("writer", w, 0, "ab")
			o.close(w)
			o.pread("old reader", r, 0, 24)
			o.readAll("new reader", f)
			o.close(r)
		}, false},
		{"two writers, two readers", func(o *ptObs, f string) {
			r1 := o.open("reader 1", f, unix.O_RDONLY)
			r2 := o.open("reader 2", f, unix.O_RDONLY)
			w1 := o.open("writer 1", f, unix.O_RDWR)
			o.pwrite("writer 1", w1, 0, "one")
			w2 := o.open("writer 2", f, unix.O_RDWR)
			o.pwrite("writer 2", w2, 10, "two")
			o.pread("writer 1", w1, 0, 16)
			o.close(w1)
			o.close(w2)
			o.pread("old reader 1", r1, 0, 16)
			o.close(r1)
			r3 := o.open("reader 3", f, unix.O_RDONLY)
			o.pread("reader 3", r3, 0, 16)
			o.pread("old reader 2", r2, 0, 16)
			o.close(r2)
			o.close(r3)
		}, false},
		{"rename, then write", func(o *ptObs, f string) {
			r := o.open("reader", f, unix.O_RDONLY)
			o.rec("rename", unix.Rename(o.p(f), o.p(f+".moved")))
			w := o.open("writer", f+".moved", unix.O_RDWR)
			o.pwrite("writer", w, 0, "NEW!")
			o.close(w)
			o.pread("old reader", r, 0, 24)
			o.readAll("new reader", f+".moved")
			o.close(r)
		}, false},
		{"small file: a lock, then a writer", func(o *ptObs, f string) {
			r := o.open("reader", f, unix.O_RDONLY)
			o.rec("reader flock", unix.Flock(r, unix.LOCK_EX|unix.LOCK_NB))
			w := o.open("writer", f, unix.O_RDWR)
			if w >= 0 {
				o.log("writer flock: %v", unix.Flock(w, unix.LOCK_EX|unix.LOCK_NB))
			}
			o.pwrite("writer", w, 0, "NEW!")
			o.close(w)
			o.pread("reader", r, 0, 24)
			o.readAll("new reader", f)
			o.close(r)
		}, true},
		{"chmod, then write", func(o *ptObs, f string) {
			r := o.open("reader", f, unix.O_RDONLY)
			o.rec("chmod", unix.Chmod(o.p(f), 0o600))
			o.stat(f)
			w := o.open("writer", f, unix.O_RDWR)
			o.pwrite("writer", w, 0, "NEW!")
			o.close(w)
			o.readAll("new reader", f)
			o.close(r)
		}, false},
	}
	var fixture []fx
	for i := range scenarios {
		f := fmt.Sprintf("f%02d", i)
		size := int64(100 << 10)
		if scenarios[i].small {
			size = 1000
		}
		fixture = append(fixture, fFile(f, "lower content of "+f+"\n"+string(bigContent(size))))
	}
	fill := func(i int, dir string) { applyFixture(t, dir, fixture) }

	type mode struct {
		name     string
		format   whiteout.Format
		follow   bool // without Config.LowerPassthrough
		metacopy bool // Config.Metacopy: chmod copies no data, the write does
	}
	for _, m := range []mode{
		{"oci", whiteout.OCI, false, false},
		{"overlay", whiteout.Overlay, false, false},
		{"default: readers follow the copy-up", whiteout.OCI, true, false},
		{"metacopy", whiteout.OCI, false, true},
	} {
		t.Run(m.name, func(t *testing.T) {
			ref := newStack(t, 1, fill)
			refMnt := mountOverlay(t, ref)
			s := newStack(t, 1, fill)
			before := snapshotLowers(t, s)
			guardLowers(t, s.Lowers)
			mnt, srv := mountStrataServer(t, unionfs.Config{Lowers: s.Lowers, Upper: s.Upper, Work: s.Work, Whiteout: m.format, LowerPassthrough: !m.follow, Metacopy: m.metacopy})
			// With lower files passed through, a reader that came before a
			// write keeps the lower file (overlayfs before Linux 4.19);
			// without passthrough, or without LowerPassthrough, it reads the copy,
			// as overlayfs does now.
			keepsLower := srv.Passthrough() && !m.follow
			for i, sc := range scenarios {
				f := fmt.Sprintf("f%02d", i)
				want := &ptObs{mnt: refMnt}
				sc.run(want, f)
				got := &ptObs{mnt: mnt, lower: filepath.Join(s.Lowers[0], f), keepsLower: keepsLower}
				sc.run(got, f)
				w, g := want.lines, got.lines
				if keepsLower {
					w = oldReadersReadLower(w)
				} else if srv.Passthrough() {
					// Known: a lower file read through the daemon has one
					// page cache with its copy, so a mapping made before
					// the copy-up shows the writes; overlayfs maps the
					// lower file itself.
					w, g = dropLines(w, "old mapping"), dropLines(g, "old mapping")
				}
				if strings.Join(w, "\n") != strings.Join(g, "\n") {
					t.Errorf("%s: strata differs from what overlayfs shows (want):\nwant:\n  %s\nstrata:\n  %s", sc.name,
						strings.Join(w, "\n  "), strings.Join(got.lines, "\n  "))
				}
				syncfs(t, mnt)
				for j, b := range before {
					if !compareTrees(t, fmt.Sprintf("after %q, lower %d", sc.name, j), "before", b, "after", snapshot(t, s.Lowers[j], snapRaw)) {
						t.FailNow()
					}
				}
			}
		})
	}
}

// oldReadersReadLower rewrites what readers that opened before a write saw to
// what they see when they keep the lower file.
func oldReadersReadLower(lines []string) []string {
	var out []string
	for _, l := range lines {
		if who, _, ok := strings.Cut(l, ": "); ok && (strings.HasPrefix(who, "old reader") || who == "old mapping") {
			l = who + ": reads the lower file"
		}
		out = append(out, l)
	}
	return out
}

// dropLines leaves out the lines of who.
func dropLines(lines []string, who string) []string {
	var out []string
	for _, l := range lines {
		if !strings.HasPrefix(l, who+": ") {
			out = append(out, l)
		}
	}
	return out
}

// ptObs records what one interleaving sees, for comparison line by line.
type ptObs struct {
	mnt   string
	lines []string
	// lower is the lower file; with keepsLower, what an old reader reads is
	// logged as "reads the lower file" when it is the lower file's data.
	lower      string
	keepsLower bool
}

// readsLower reports whether data, read at off, is the lower file's.
func (o *ptObs) readsLower(data []byte, off int64) bool {
	if !o.keepsLower {
		return false
	}
	all, err := os.ReadFile(o.lower)
	if err != nil || off > int64(len(all)) {
		return false
	}
	return string(all[off:min(int(off)+len(data), len(all))]) == string(data)
}

func (o *ptObs) p(rel string) string { return filepath.Join(o.mnt, rel) }

func (o *ptObs) log(format string, args ...any) {
	o.lines = append(o.lines, fmt.Sprintf(format, args...))
}

func (o *ptObs) rec(what string, err error) {
	if err != nil {
		o.log("%s: %v", what, err)
	}
}

func (o *ptObs) open(who, rel string, flags int) int {
	fd, err := unix.Open(o.p(rel), flags|unix.O_CLOEXEC, 0)
	o.rec(who+" open", err)
	return fd
}

func (o *ptObs) close(fd int) {
	if fd >= 0 {
		o.rec("close", unix.Close(fd))
	}
}

func (o *ptObs) pread(who string, fd int, off int64, n int) {
	if fd < 0 {
		return
	}
	buf := make([]byte, n)
	k, err := unix.Pread(fd, buf, off)
	if err != nil {
		o.log("%s: pread: %v", who, err)
		return
	}
	if strings.HasPrefix(who, "old reader") && o.readsLower(buf[:k], off) {
		o.log("%s: reads the lower file", who)
		return
	}
	o.log("%s: reads %q at %d", who, buf[:k], off)
}

func (o *ptObs) pwrite(who string, fd int, off int64, data string) {
	if fd >= 0 {
		o.rec(who+" pwrite", writeAll(fd, data, off))
	}
}

func (o *ptObs) write(who string, fd int, data string) {
	if fd >= 0 {
		o.rec(who+" write", writeAll(fd, data, -1))
	}
}

func (o *ptObs) mmapWrite(who string, fd int, off int, data string) {
	if fd < 0 {
		return
	}
	mem, err := unix.Mmap(fd, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		o.log("%s: mmap: %v", who, err)
		return
	}
	o.rec(who+" fill", fillFromPipe(mem[off:off+len(data)], data))
	o.rec(who+" msync", unix.Msync(mem, unix.MS_SYNC))
	o.rec(who+" munmap", unix.Munmap(mem))
}

// readAll opens rel afresh and logs its size and its first and last bytes.
func (o *ptObs) readAll(who, rel string) {
	data, err := os.ReadFile(o.p(rel))
	if err != nil {
		o.log("%s: %v", who, strings.ReplaceAll(err.Error(), o.mnt, "<mnt>"))
		return
	}
	head, tail := data[:min(24, len(data))], data[max(0, len(data)-8):]
	o.log("%s: %d bytes, %q...%q, digest %x", who, len(data), head, tail, digest(data))
}

func (o *ptObs) stat(rel string) {
	var st unix.Stat_t
	if err := unix.Stat(o.p(rel), &st); err != nil {
		o.log("stat: %v", err)
		return
	}
	o.log("stat: size %d, mode %o", st.Size, st.Mode)
}

// digest is a short fingerprint of data, enough to tell contents apart.
func digest(data []byte) uint32 {
	var h uint32 = 2166136261
	for _, b := range data {
		h = (h ^ uint32(b)) * 16777619
	}
	return h
}
