package test

// Operations on a mounted union, recorded so that two unions can be held to the
// same results. Every operation but asUser is a system call made by this
// process, which serves the strata union too.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// opRun runs a case's operations on one mount and records each result.
type opRun struct {
	t   testing.TB
	mnt string
	// mvFallback makes renameDir do what mv(1) does when rename(2) says EXDEV:
	// copy the tree, then remove the source. Only the kernel overlay side
	// needs it (no redirect_dir).
	mvFallback bool
	log        []string
	last       error // the outcome of the last operation recorded
}

func (r *opRun) p(rel string) string { return filepath.Join(r.mnt, rel) }

// rec records the outcome of one operation.
func (r *opRun) rec(label string, err error) {
	r.log = append(r.log, label+": "+r.errString(err))
	r.last = err
}

// obs records something observed through the mount.
func (r *opRun) obs(label, format string, args ...any) {
	r.log = append(r.log, label+" = "+fmt.Sprintf(format, args...))
}

func (r *opRun) errString(err error) string {
	if err == nil {
		return "ok"
	}
	var en unix.Errno
	if errors.As(err, &en) {
		return unix.ErrnoName(en)
	}
	return "error " + strings.ReplaceAll(err.Error(), r.mnt, "$MNT")
}

// want fails the test unless the last operation ended in the errno want (0 for
// success). Use it where there is no second union to compare with.
func (r *opRun) want(want unix.Errno) {
	r.t.Helper()
	err := r.last
	var got unix.Errno
	if err != nil && !errors.As(err, &got) {
		r.t.Errorf("%s: got %v, want %v", r.log[len(r.log)-1], err, want)
		return
	}
	if got != want {
		r.t.Errorf("%s: got %v, want %v", r.log[len(r.log)-1], r.errString(err), r.errString(want))
	}
}

// wantFail fails the test unless the last operation failed.
func (r *opRun) wantFail() {
	r.t.Helper()
	if r.last == nil {
		r.t.Errorf("%s: got success, want an error", r.log[len(r.log)-1])
	}
}

func (r *opRun) openWrite(label, rel string, flags int, fn func(fd int) error) {
	fd, err := unix.Open(r.p(rel), flags|unix.O_CLOEXEC, 0o644)
	if err != nil {
		r.rec(label, err)
		return
	}
	err = fn(fd)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	r.rec(label, err)
}

func writeAll(fd int, data string, off int64) error {
	b := []byte(data)
	for len(b) > 0 {
		var n int
		var err error
		if off < 0 {
			n, err = unix.Write(fd, b)
		} else {
			n, err = unix.Pwrite(fd, b, off)
			off += int64(n)
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// create makes a new file with O_EXCL and writes data to it.
func (r *opRun) create(rel, data string, mode uint32) {
	fd, err := unix.Open(r.p(rel), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, mode)
	if err != nil {
		r.rec(fmt.Sprintf("create %s %o", rel, mode), err)
		return
	}
	err = writeAll(fd, data, -1)
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	r.rec(fmt.Sprintf("create %s %o", rel, mode), err)
}

// writeAt writes data at off without O_TRUNC: the rest of the file stays.
func (r *opRun) writeAt(rel string, off int64, data string) {
	r.openWrite(fmt.Sprintf("pwrite %s @%d %q", rel, off, trunc(data)), rel, unix.O_WRONLY,
		func(fd int) error { return writeAll(fd, data, off) })
}

func (r *opRun) appendTo(rel, data string) {
	r.openWrite(fmt.Sprintf("append %s %q", rel, trunc(data)), rel, unix.O_WRONLY|unix.O_APPEND,
		func(fd int) error { return writeAll(fd, data, -1) })
}

func (r *opRun) writeTrunc(rel, data string) {
	r.openWrite(fmt.Sprintf("write O_TRUNC %s %q", rel, trunc(data)), rel, unix.O_WRONLY|unix.O_TRUNC,
		func(fd int) error { return writeAll(fd, data, -1) })
}

// openClose opens rel with flags and closes it again.
func (r *opRun) openClose(rel string, flags int) {
	r.openWrite(fmt.Sprintf("open %s %#x", rel, flags), rel, flags, func(int) error { return nil })
}

func (r *opRun) fsyncWrite(rel, data string) {
	r.openWrite(fmt.Sprintf("write+fsync %s", rel), rel, unix.O_RDWR, func(fd int) error {
		if err := writeAll(fd, data, 0); err != nil {
			return err
		}
		return unix.Fsync(fd)
	})
}

func (r *opRun) ftruncate(rel string, size int64) {
	r.openWrite(fmt.Sprintf("ftruncate %s %d", rel, size), rel, unix.O_RDWR,
		func(fd int) error { return unix.Ftruncate(fd, size) })
}

func (r *opRun) fallocate(rel string, mode uint32, off, n int64) {
	r.openWrite(fmt.Sprintf("fallocate %s mode=%#x %d+%d", rel, mode, off, n), rel, unix.O_RDWR,
		func(fd int) error { return unix.Fallocate(fd, mode, off, n) })
}

// mmapWrite writes data at off through a shared mapping of the file's first
// page(s), then msyncs.
//
// This process serves the strata mount, so it must never fault on a mapped
// page of it in Go code: the faulting thread waits for the daemon, a garbage
// collection then waits for that thread to stop, and the daemon waits for the
// collection. The bytes go in through read(2) from a pipe instead, so that the
// fault happens inside a system call, which a collection does not wait for.
func (r *opRun) mmapWrite(rel string, off int, data string) {
	r.openWrite(fmt.Sprintf("mmap write %s @%d", rel, off), rel, unix.O_RDWR, func(fd int) error {
		size := (off + len(data) + 4095) &^ 4095
		mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return err
		}
		err = fillFromPipe(mem[off:off+len(data)], data)
		if err == nil {
			err = unix.Msync(mem, unix.MS_SYNC)
		}
		if uerr := unix.Munmap(mem); err == nil {
			err = uerr
		}
		return err
	})
}

// fillFromPipe copies data into dst by the kernel: written to a pipe, read
// back into dst.
func fillFromPipe(dst []byte, data string) error {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return err
	}
	defer func() { _ = unix.Close(p[0]) }() // a pipe of our own
	defer func() { _ = unix.Close(p[1]) }()
	if err := writeAll(p[1], data, -1); err != nil {
		return err
	}
	for len(dst) > 0 {
		n, err := unix.Read(p[0], dst)
		if err != nil {
			return err
		}
		dst = dst[n:]
	}
	return nil
}

func (r *opRun) truncate(rel string, size int64) {
	r.rec(fmt.Sprintf("truncate %s %d", rel, size), unix.Truncate(r.p(rel), size))
}

func (r *opRun) chmod(rel string, mode uint32) {
	r.rec(fmt.Sprintf("chmod %s %o", rel, mode), unix.Chmod(r.p(rel), mode))
}

func (r *opRun) lchown(rel string, uid, gid int) {
	r.rec(fmt.Sprintf("lchown %s %d:%d", rel, uid, gid), unix.Lchown(r.p(rel), uid, gid))
}

// utimes sets both times of rel to utimesTime, not following a symlink.
func (r *opRun) utimes(rel string) {
	ts := []unix.Timespec{unix.NsecToTimespec(utimesTime.UnixNano()), unix.NsecToTimespec(utimesTime.UnixNano())}
	r.rec("utimes "+rel, unix.UtimesNanoAt(unix.AT_FDCWD, r.p(rel), ts, unix.AT_SYMLINK_NOFOLLOW))
}

func (r *opRun) setxattr(rel, name, value string) {
	r.rec(fmt.Sprintf("lsetxattr %s %s=%q", rel, name, value), unix.Lsetxattr(r.p(rel), name, []byte(value), 0))
}

func (r *opRun) setxattrFlags(rel, name, value string, flags int) {
	r.rec(fmt.Sprintf("lsetxattr %s %s=%q flags=%d", rel, name, value, flags),
		unix.Lsetxattr(r.p(rel), name, []byte(value), flags))
}

func (r *opRun) removexattr(rel, name string) {
	r.rec(fmt.Sprintf("lremovexattr %s %s", rel, name), unix.Lremovexattr(r.p(rel), name))
}

func (r *opRun) getxattr(rel, name string) {
	v, err := getxattr(r.p(rel), name)
	if err != nil {
		r.rec("lgetxattr "+rel+" "+name, err)
		return
	}
	r.obs("lgetxattr "+rel+" "+name, "%q", v)
}

func (r *opRun) listxattr(rel string) {
	sz, err := unix.Llistxattr(r.p(rel), nil)
	if err != nil {
		r.rec("llistxattr "+rel, err)
		return
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(r.p(rel), buf)
	if err != nil {
		r.rec("llistxattr "+rel, err)
		return
	}
	var names []string
	for _, n := range strings.Split(string(buf[:sz]), "\x00") {
		if n != "" && !strings.HasPrefix(n, "security.") && !strings.HasPrefix(n, "system.") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	r.obs("llistxattr "+rel, "%q", names)
}

func (r *opRun) link(oldRel, newRel string) {
	r.rec("link "+oldRel+" "+newRel, unix.Link(r.p(oldRel), r.p(newRel)))
}

func (r *opRun) symlink(target, rel string) {
	r.rec(fmt.Sprintf("symlink %q %s", target, rel), unix.Symlink(target, r.p(rel)))
}

func (r *opRun) mknod(rel string, mode uint32, dev uint64) {
	r.rec(fmt.Sprintf("mknod %s %o %d:%d", rel, mode, unix.Major(dev), unix.Minor(dev)),
		unix.Mknod(r.p(rel), mode, int(dev)))
}

// asUser runs script with sh(1) in the mount's root as uid:gid, without
// supplementary groups and with umask 002, and records its status and what it
// printed. The child reaches the mount through a descriptor (the test's
// directories above it are private to root), and only after exec: between
// fork and exec it shares this process's memory, and must not wait on a union
// this process serves.
func (r *opRun) asUser(uid, gid int, script string) {
	root, err := os.Open(r.mnt)
	if err != nil {
		r.t.Fatal(err)
	}
	defer func() { _ = root.Close() }()
	cmd := exec.Command("/bin/sh", "-c", "cd /proc/self/fd/3 && umask 002 && "+script)
	cmd.ExtraFiles = []*os.File{root}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	status := "ok"
	if err != nil {
		status = err.Error()
	}
	r.obs(fmt.Sprintf("as %d:%d %q", uid, gid, script), "%s %q", status, out)
}

func (r *opRun) mkdir(rel string, mode uint32) {
	r.rec(fmt.Sprintf("mkdir %s %o", rel, mode), unix.Mkdir(r.p(rel), mode))
}

func (r *opRun) unlink(rel string) {
	r.rec("unlink "+rel, unix.Unlink(r.p(rel)))
}

func (r *opRun) rmdir(rel string) {
	r.rec("rmdir "+rel, unix.Rmdir(r.p(rel)))
}

func (r *opRun) rename(oldRel, newRel string) {
	r.rec("rename "+oldRel+" "+newRel, unix.Rename(r.p(oldRel), r.p(newRel)))
}

func (r *opRun) renameat2(oldRel, newRel string, flags uint) {
	r.rec(fmt.Sprintf("renameat2 %s %s %#x", oldRel, newRel, flags),
		unix.Renameat2(unix.AT_FDCWD, r.p(oldRel), unix.AT_FDCWD, r.p(newRel), flags))
}

// renameDir renames a directory as mv(1) does: where rename(2) answers EXDEV
// (kernel overlay moving a lower directory without redirect_dir) and the run
// allows it, it copies the tree and removes the source. Cases that use it on a
// lower directory compare merged trees only.
func (r *opRun) renameDir(oldRel, newRel string) {
	err := unix.Rename(r.p(oldRel), r.p(newRel))
	if errors.Is(err, unix.EXDEV) && r.mvFallback {
		// rename(2) replaces an empty directory: so does mv(1).
		if st, serr := os.Lstat(r.p(newRel)); serr == nil && st.IsDir() {
			err = unix.Rmdir(r.p(newRel))
		} else {
			err = nil
		}
		if err == nil {
			err = copyTree(r.p(oldRel), r.p(newRel), map[uint64]string{})
		}
		if err == nil {
			err = os.RemoveAll(r.p(oldRel))
		}
	}
	r.rec("mv "+oldRel+" "+newRel, err)
}

// removeAll removes rel and everything under it with unlink and rmdir, deepest
// first, recording only the first error.
func (r *opRun) removeAll(rel string) {
	var rm func(p string) error
	rm = func(p string) error {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return unix.Unlink(p)
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := rm(filepath.Join(p, e.Name())); err != nil {
				return err
			}
		}
		return unix.Rmdir(p)
	}
	r.rec("rm -r "+rel, rm(r.p(rel)))
}

// read records the content of rel (its digest when long).
func (r *opRun) read(rel string) {
	b, err := os.ReadFile(r.p(rel))
	if err != nil {
		r.rec("read "+rel, err)
		return
	}
	if len(b) > 64 {
		sum := sha256.Sum256(b)
		r.obs("read "+rel, "%d bytes sha %s", len(b), hex.EncodeToString(sum[:8]))
		return
	}
	r.obs("read "+rel, "%q", b)
}

// readAt records n bytes at off, read through one descriptor.
func (r *opRun) readAt(rel string, off int64, n int) {
	f, err := os.Open(r.p(rel))
	if err != nil {
		r.rec("read "+rel, err)
		return
	}
	defer func() { _ = f.Close() }() // read only
	b := make([]byte, n)
	got, err := f.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		r.rec(fmt.Sprintf("pread %s @%d", rel, off), err)
		return
	}
	r.obs(fmt.Sprintf("pread %s @%d", rel, off), "%q", b[:got])
}

// stat records what lstat (or stat, with follow) says of rel, leaving out inode
// numbers and times.
func (r *opRun) stat(rel string, follow bool) {
	var st unix.Stat_t
	var err error
	label := "lstat " + rel
	if follow {
		label = "stat " + rel
		err = unix.Stat(r.p(rel), &st)
	} else {
		err = unix.Lstat(r.p(rel), &st)
	}
	if err != nil {
		r.rec(label, err)
		return
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		r.obs(label, "%s %04o %d:%d", fileType(st.Mode), st.Mode&0o7777, st.Uid, st.Gid)
		return
	}
	r.obs(label, "%s %04o %d:%d size=%d nlink=%d", fileType(st.Mode), st.Mode&0o7777, st.Uid, st.Gid, st.Size, st.Nlink)
}

// sparse records whether rel has holes: fewer bytes allocated than half its size.
func (r *opRun) sparse(rel string) {
	var st unix.Stat_t
	if err := unix.Stat(r.p(rel), &st); err != nil {
		r.rec("stat "+rel, err)
		return
	}
	r.obs("sparse "+rel, "%v", st.Blocks*512 < st.Size/2)
}

func (r *opRun) access(rel string) {
	r.rec("access "+rel, unix.Faccessat(unix.AT_FDCWD, r.p(rel), unix.F_OK, unix.AT_SYMLINK_NOFOLLOW))
}

func (r *opRun) readlink(rel string) {
	s, err := os.Readlink(r.p(rel))
	if err != nil {
		r.rec("readlink "+rel, err)
		return
	}
	r.obs("readlink "+rel, "%q", s)
}

// readdir records the sorted names of rel, and how many there are.
func (r *opRun) readdir(rel string) {
	ents, err := os.ReadDir(r.p(rel))
	if err != nil {
		r.rec("readdir "+rel, err)
		return
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	if len(names) > 20 {
		h := sha256.Sum256([]byte(strings.Join(names, "/")))
		r.obs("readdir "+rel, "%d names, sha %s", len(names), hex.EncodeToString(h[:8]))
		return
	}
	r.obs("readdir "+rel, "%q", names)
}

func (r *opRun) statfs() {
	var st unix.Statfs_t
	if err := unix.Statfs(r.mnt, &st); err != nil {
		r.rec("statfs", err)
		return
	}
	r.obs("statfs", "namelen=%d", st.Namelen)
}

// copyTree copies src to dst the way mv(1) does across filesystems: content,
// mode, owner, xattrs, times, hard links within the tree.
func copyTree(src, dst string, links map[uint64]string) error {
	var st unix.Stat_t
	if err := unix.Lstat(src, &st); err != nil {
		return err
	}
	typ := st.Mode & unix.S_IFMT
	if typ != unix.S_IFDIR && st.Nlink > 1 {
		if first, ok := links[st.Ino]; ok {
			return os.Link(first, dst)
		}
		links[st.Ino] = dst
	}
	switch typ {
	case unix.S_IFDIR:
		if err := unix.Mkdir(dst, 0o700); err != nil {
			return &os.PathError{Op: "mkdir", Path: dst, Err: err}
		}
		ents, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := copyTree(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()), links); err != nil {
				return err
			}
		}
	case unix.S_IFREG:
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, bytes.NewReader(b))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case unix.S_IFLNK:
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		if err := os.Symlink(target, dst); err != nil {
			return err
		}
	default:
		if err := unix.Mknod(dst, st.Mode, int(st.Rdev)); err != nil {
			return &os.PathError{Op: "mknod", Path: dst, Err: err}
		}
	}
	if err := os.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if typ != unix.S_IFLNK {
		if err := unix.Chmod(dst, st.Mode&0o7777); err != nil {
			return &os.PathError{Op: "chmod", Path: dst, Err: err}
		}
	}
	sz, err := unix.Llistxattr(src, nil)
	if err != nil {
		return err
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(src, buf)
	if err != nil {
		return err
	}
	for _, name := range strings.Split(string(buf[:sz]), "\x00") {
		if name == "" {
			continue
		}
		v, err := getxattr(src, name)
		if err != nil {
			return err
		}
		if err := unix.Lsetxattr(dst, name, []byte(v), 0); err != nil {
			return &os.PathError{Op: "lsetxattr " + name, Path: dst, Err: err}
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(unix.AT_FDCWD, dst, ts, unix.AT_SYMLINK_NOFOLLOW)
}

func trunc(s string) string {
	if len(s) > 24 {
		return fmt.Sprintf("%s...(%d bytes)", s[:16], len(s))
	}
	return s
}
