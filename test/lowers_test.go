package test

import (
	"fmt"
	"path"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/whiteout"
)

// TestLowersNeverWritten tries every way a process can change a file or a
// directory on the lower layers through the union, each on an entry nothing
// has touched yet (so that each one is a first copy-up), and checks after each
// that every lower layer is still exactly as it was: content, mode, owner,
// mtime, ctime, inode numbers and xattrs (snapRaw). mountStrata checks once
// more after the unmount.
func TestLowersNeverWritten(t *testing.T) {
	requireRoot(t)
	// Every operation gets its own targets: a file f, a directory d (with a
	// file and a subdirectory in it), and a directory m that both layers hold
	// (a merged one), all in the lower layers.
	type op struct {
		name string
		do   func(r *opRun, f, d, m string)
	}
	utimes := func(r *opRun, rel string) { r.utimes(rel) }
	ops := []op{
		// Files.
		{"open O_RDWR and write", func(r *opRun, f, _, _ string) { r.writeAt(f, 1, "X") }},
		{"open O_WRONLY without writing", func(r *opRun, f, _, _ string) { r.openClose(f, unix.O_WRONLY) }},
		{"open O_RDWR without writing", func(r *opRun, f, _, _ string) { r.openClose(f, unix.O_RDWR) }},
		{"open O_TRUNC", func(r *opRun, f, _, _ string) { r.writeTrunc(f, "new") }},
		{"open O_APPEND", func(r *opRun, f, _, _ string) { r.appendTo(f, "more") }},
		{"open O_CREAT of an existing file", func(r *opRun, f, _, _ string) { r.openClose(f, unix.O_RDONLY|unix.O_CREAT) }},
		{"truncate", func(r *opRun, f, _, _ string) { r.truncate(f, 2) }},
		{"truncate to a bigger size", func(r *opRun, f, _, _ string) { r.truncate(f, 1<<20) }},
		{"ftruncate", func(r *opRun, f, _, _ string) { r.ftruncate(f, 1) }},
		{"chmod", func(r *opRun, f, _, _ string) { r.chmod(f, 0o600) }},
		{"chmod set-user-ID", func(r *opRun, f, _, _ string) { r.chmod(f, 0o4755) }},
		{"chown", func(r *opRun, f, _, _ string) { r.lchown(f, 7, 8) }},
		{"utimes", func(r *opRun, f, _, _ string) { utimes(r, f) }},
		{"setxattr", func(r *opRun, f, _, _ string) { r.setxattr(f, "user.new", "v") }},
		{"setxattr replacing", func(r *opRun, f, _, _ string) { r.setxattr(f, "user.x", "changed") }},
		{"removexattr", func(r *opRun, f, _, _ string) { r.removexattr(f, "user.x") }},
		{"fchmod on a read-only descriptor", func(r *opRun, f, _, _ string) {
			r.openWrite("fchmod "+f, f, unix.O_RDONLY, func(fd int) error { return unix.Fchmod(fd, 0o640) })
		}},
		{"fchown on a read-only descriptor", func(r *opRun, f, _, _ string) {
			r.openWrite("fchown "+f, f, unix.O_RDONLY, func(fd int) error { return unix.Fchown(fd, 5, 6) })
		}},
		{"futimens on a read-only descriptor", func(r *opRun, f, _, _ string) {
			ts := []unix.Timespec{unix.NsecToTimespec(utimesTime.UnixNano()), unix.NsecToTimespec(utimesTime.UnixNano())}
			r.openWrite("futimens "+f, f, unix.O_RDONLY, func(fd int) error { return unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH) })
		}},
		{"fsetxattr on a read-only descriptor", func(r *opRun, f, _, _ string) {
			r.openWrite("fsetxattr "+f, f, unix.O_RDONLY, func(fd int) error { return unix.Fsetxattr(fd, "user.fd", []byte("1"), 0) })
		}},
		{"fremovexattr on a read-only descriptor", func(r *opRun, f, _, _ string) {
			r.openWrite("fremovexattr "+f, f, unix.O_RDONLY, func(fd int) error { return unix.Fremovexattr(fd, "user.x") })
		}},
		{"write through a descriptor opened read-only before", func(r *opRun, f, _, _ string) {
			r.openWrite("read-only, then write "+f, f, unix.O_RDONLY, func(ro int) error {
				r.writeAt(f, 0, "Y")
				buf := make([]byte, 1)
				if _, err := unix.Pread(ro, buf, 0); err != nil {
					return err
				}
				// As in overlayfs, the old descriptor reads the copy
				// (with Config.LowerPassthrough it would keep the lower
				// file: TestWritesAfterPassthroughReaders).
				if buf[0] != 'Y' {
					return fmt.Errorf("the old descriptor reads %q, want the new %q", buf, "Y")
				}
				return nil
			})
		}},
		{"link", func(r *opRun, f, _, _ string) { r.link(f, f+".link") }},
		{"rename", func(r *opRun, f, _, _ string) { r.rename(f, f+".moved") }},
		{"rename over another lower file", func(r *opRun, f, d, _ string) { r.rename(f, path.Join(d, "inner")) }},
		{"mmap write", func(r *opRun, f, _, _ string) { r.mmapWrite(f, 3, "mapped") }},
		{"mmap private write", func(r *opRun, f, _, _ string) {
			r.openWrite("mmap MAP_PRIVATE write "+f, f, unix.O_RDONLY, func(fd int) error {
				mem, err := unix.Mmap(fd, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE)
				if err != nil {
					return err
				}
				err = fillFromPipe(mem[:7], "private") // see mmapWrite
				if uerr := unix.Munmap(mem); err == nil {
					err = uerr
				}
				return err
			})
		}},
		{"fallocate", func(r *opRun, f, _, _ string) { r.fallocate(f, 0, 0, 1<<16) }},
		{"fallocate punch hole", func(r *opRun, f, _, _ string) {
			r.fallocate(f, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 4)
		}},
		{"fsync after write", func(r *opRun, f, _, _ string) { r.fsyncWrite(f, "synced") }},
		{"unlink", func(r *opRun, f, _, _ string) { r.unlink(f) }},
		{"chown of a symlink", func(r *opRun, f, _, _ string) { r.lchown(f+".sym", 3, 4) }},
		{"utimes of a symlink", func(r *opRun, f, _, _ string) { utimes(r, f+".sym") }},
		{"write through a symlink", func(r *opRun, f, _, _ string) { r.writeAt(f+".sym", 0, "via link") }},
		{"chmod of a fifo", func(r *opRun, f, _, _ string) { r.chmod(f+".fifo", 0o600) }},
		{"rename of a fifo", func(r *opRun, f, _, _ string) { r.rename(f+".fifo", f+".fifo2") }},

		// Directories.
		{"chmod of a directory", func(r *opRun, _, d, _ string) { r.chmod(d, 0o700) }},
		{"chown of a directory", func(r *opRun, _, d, _ string) { r.lchown(d, 9, 9) }},
		{"utimes of a directory", func(r *opRun, _, d, _ string) { utimes(r, d) }},
		{"setxattr on a directory", func(r *opRun, _, d, _ string) { r.setxattr(d, "user.dir", "v") }},
		{"removexattr on a directory", func(r *opRun, _, d, _ string) { r.removexattr(d, "user.x") }},
		{"mkdir inside", func(r *opRun, _, d, _ string) { r.mkdir(path.Join(d, "sub", "new"), 0o755) }},
		{"create inside", func(r *opRun, _, d, _ string) { r.create(path.Join(d, "sub", "new"), "n", 0o644) }},
		{"symlink inside", func(r *opRun, _, d, _ string) { r.symlink("target", path.Join(d, "sub", "ln")) }},
		{"mknod inside", func(r *opRun, _, d, _ string) { r.mknod(path.Join(d, "sub", "fifo"), unix.S_IFIFO|0o644, 0) }},
		{"mknod of a device inside", func(r *opRun, _, d, _ string) {
			r.mknod(path.Join(d, "sub", "null"), unix.S_IFCHR|0o666, unix.Mkdev(1, 3))
		}},
		{"link into", func(r *opRun, f, d, _ string) { r.link(f, path.Join(d, "sub", "linked")) }},
		{"unlink inside", func(r *opRun, _, d, _ string) { r.unlink(path.Join(d, "inner")) }},
		{"rename inside", func(r *opRun, _, d, _ string) { r.rename(path.Join(d, "inner"), path.Join(d, "sub", "inner2")) }},
		{"rmdir of an empty directory", func(r *opRun, _, d, _ string) { r.rmdir(path.Join(d, "empty")) }},
		{"rename a directory", func(r *opRun, _, d, _ string) { r.renameDir(d, d+".moved") }},
		{"rename a directory over an empty one", func(r *opRun, _, d, _ string) { r.renameDir(path.Join(d, "sub"), path.Join(d, "empty")) }},
		{"exchange two directories", func(r *opRun, _, d, m string) { r.renameat2(d, m, unix.RENAME_EXCHANGE) }},
		{"remove a whole tree", func(r *opRun, _, d, _ string) { r.removeAll(d) }},
		{"mkdir over a removed directory", func(r *opRun, _, d, _ string) {
			r.removeAll(d)
			if r.last == nil {
				r.mkdir(d, 0o700)
			}
		}},
		{"chmod of a merged directory", func(r *opRun, _, _, m string) { r.chmod(m, 0o711) }},
		{"create in a merged directory", func(r *opRun, _, _, m string) { r.create(path.Join(m, "new"), "n", 0o600) }},
		{"unlink in a merged directory", func(r *opRun, _, _, m string) { r.unlink(path.Join(m, "top")) }},
		{"unlink in a merged directory, from the bottom layer", func(r *opRun, _, _, m string) { r.unlink(path.Join(m, "bottom")) }},
		{"remove a merged tree", func(r *opRun, _, _, m string) { r.removeAll(m) }},
		{"rename a merged directory", func(r *opRun, _, _, m string) { r.renameDir(m, m+".moved") }},
	}

	var bottom, top []fx
	for i := range ops {
		f, d, m := fmt.Sprintf("f%02d", i), fmt.Sprintf("d%02d", i), fmt.Sprintf("m%02d", i)
		bottom = append(bottom,
			fFile(f, "lower content of "+f+"\n"+string(bigContent(5000))),
			fXattr(f, "user.x", "1"),
			fChown(f, 1, 2),
			fSymlink(f+".sym", f),
			fFifo(f+".fifo"),
			fFile(path.Join(d, "inner"), "inner"),
			fDirM(path.Join(d, "sub"), 0o750),
			fFile(path.Join(d, "sub", "deep"), "deep"),
			fDir(path.Join(d, "empty")),
			fXattr(d, "user.x", "1"),
			fFile(path.Join(m, "bottom"), "bottom"),
			fDir(path.Join(m, "both")),
			fFile(path.Join(m, "both", "b"), "b"),
		)
		top = append(top,
			fFile(path.Join(m, "top"), "top"),
			fFile(path.Join(m, "both", "t"), "t"),
		)
	}
	for _, format := range []whiteout.Format{whiteout.OCI, whiteout.Overlay} {
		t.Run(format.String(), func(t *testing.T) {
			s := newStack(t, 2, func(i int, dir string) { applyFixture(t, dir, [][]fx{bottom, top}[i]) })
			before := snapshotLowers(t, s)
			mnt := mountStrata(t, s, format)
			for i, o := range ops {
				r := &opRun{t: t, mnt: mnt}
				o.do(r, fmt.Sprintf("f%02d", i), fmt.Sprintf("d%02d", i), fmt.Sprintf("m%02d", i))
				for _, line := range r.log {
					if !strings.HasSuffix(line, ": ok") {
						t.Errorf("%s: %s", o.name, line)
					}
				}
				syncfs(t, mnt)
				for j, b := range before {
					if !compareTrees(t, fmt.Sprintf("after %q, lower %d", o.name, j), "before", b, "after", snapshot(t, s.Lowers[j], snapRaw)) {
						t.FailNow() // the first op that writes a lower is the one to look at
					}
				}
			}
		})
	}
}
