package cow

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/beneath"
	"github.com/strata-fs/strata/internal/xattr"
	"github.com/strata-fs/strata/whiteout"
)

// Source is an entry of a lower layer.
type Source struct {
	Root int    // descriptor of the layer's root directory
	Rel  string // the entry's path below Root, "/"-separated, "" for the root
}

// Options tune one copy-up.
type Options struct {
	// Size is how many bytes of a regular file's data to copy: -1 for all of it;
	// 0 for a copy-up that will be truncated anyway (open with O_TRUNC); N when
	// the file is about to be truncated to N.
	Size int64
}

// CopyUp copies src to rel in the upper: data (holes kept, copy_file_range or a
// reflink), mode, owner, atime/mtime and xattrs. A directory is copied without its
// entries. The parent of rel must exist in the upper already; an existing entry at
// rel is an error (EEXIST). It returns the stat of the new upper entry.
//
// The copy is built in the work directory and renamed into place: on any error,
// or a crash, the upper holds no part of it.
func (u *Upper) CopyUp(src Source, rel string, opt Options) (st unix.Stat_t, err error) {
	sdirRel, sname := beneath.Split(src.Rel)
	sdir, err := beneath.OpenDir(src.Root, sdirRel)
	if err != nil {
		return st, err
	}
	defer unix.Close(sdir)
	if sname == "" {
		sname = "."
	}
	var sst unix.Stat_t
	if err := unix.Fstatat(sdir, sname, &sst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, &os.PathError{Op: "stat", Path: src.Rel, Err: err}
	}

	dirRel, name := beneath.Split(rel)
	ddir, err := u.dir(dirRel)
	if err != nil {
		return st, err
	}
	defer unix.Close(ddir)

	tmp := tempName("copyup")
	defer func() {
		if err != nil {
			_ = removeAt(u.work, tmp) // the staged copy, if any; the error says why
		}
	}()
	if err := u.stage(sdir, sname, &sst, tmp, opt); err != nil {
		return st, fmt.Errorf("copy-up %s: %w", rel, err)
	}
	if err := unix.Renameat2(u.work, tmp, ddir, name, unix.RENAME_NOREPLACE); err != nil {
		return st, &os.PathError{Op: "copy-up rename", Path: rel, Err: err}
	}
	if err := unix.Fstatat(ddir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, &os.PathError{Op: "stat", Path: rel, Err: err}
	}
	return st, nil
}

// stage builds the copy of sdir/sname (attributes sst) as work/tmp.
func (u *Upper) stage(sdir int, sname string, sst *unix.Stat_t, tmp string, opt Options) error {
	mode := sst.Mode & unix.S_IFMT
	switch mode {
	case unix.S_IFREG:
		if err := u.copyFile(sdir, sname, sst, tmp, opt); err != nil {
			return err
		}
	case unix.S_IFDIR:
		if err := unix.Mkdirat(u.work, tmp, 0o700); err != nil {
			return &os.PathError{Op: "mkdir", Path: tmp, Err: err}
		}
	case unix.S_IFLNK:
		target, err := readlinkat(sdir, sname)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(target, u.work, tmp); err != nil {
			return &os.PathError{Op: "symlink", Path: tmp, Err: err}
		}
	default: // fifo, socket, devices
		if err := unix.Mknodat(u.work, tmp, sst.Mode, int(sst.Rdev)); err != nil {
			return &os.PathError{Op: "mknod", Path: tmp, Err: err}
		}
	}
	if err := copyXattrs(sdir, sname, u.work, tmp, u.Privileged); err != nil {
		return err
	}
	if err := unix.Fchownat(u.work, tmp, int(sst.Uid), int(sst.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "chown", Path: tmp, Err: err}
	}
	if mode != unix.S_IFLNK {
		// After chown, which clears set-ID bits.
		if err := unix.Fchmodat(u.work, tmp, sst.Mode&07777, 0); err != nil {
			return &os.PathError{Op: "chmod", Path: tmp, Err: err}
		}
	}
	// Times last: every step above changes them.
	ts := []unix.Timespec{unix.NsecToTimespec(sst.Atim.Nano()), unix.NsecToTimespec(sst.Mtim.Nano())}
	if err := unix.UtimesNanoAt(u.work, tmp, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: tmp, Err: err}
	}
	return nil
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", &os.PathError{Op: "readlink", Path: name, Err: err}
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// copyFile copies the data of a regular file, keeping holes.
func (u *Upper) copyFile(sdir int, sname string, sst *unix.Stat_t, tmp string, opt Options) error {
	in, err := beneath.Open(sdir, sname, unix.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(in)
	out, err := unix.Openat(u.work, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "create", Path: tmp, Err: err}
	}
	defer unix.Close(out)
	size := sst.Size
	if opt.Size >= 0 && opt.Size < size {
		size = opt.Size
	}
	if size == sst.Size && size > 0 && unix.IoctlFileClone(out, in) == nil {
		// A reflink: the filesystem shares the blocks.
	} else if err := copyData(in, out, size); err != nil {
		return fmt.Errorf("copy data: %w", err)
	}
	final := size
	if opt.Size > sst.Size {
		final = opt.Size
	}
	if err := unix.Ftruncate(out, final); err != nil {
		return &os.PathError{Op: "truncate", Path: tmp, Err: err}
	}
	if u.Sync {
		if err := unix.Fsync(out); err != nil {
			return &os.PathError{Op: "fsync", Path: tmp, Err: err}
		}
	}
	return nil
}

// copyData copies the first size bytes of in to out, extent by extent: holes are
// found with SEEK_DATA/SEEK_HOLE and left as holes (the final ftruncate sets the
// size).
func copyData(in, out int, size int64) error {
	for off := int64(0); off < size; {
		data, err := unix.Seek(in, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole is left
		}
		if err != nil {
			// No SEEK_DATA here: treat the file as one extent.
			data = off
		}
		if data >= size {
			return nil
		}
		hole, err := unix.Seek(in, data, unix.SEEK_HOLE)
		if err != nil || hole > size {
			hole = size
		}
		if err := copyRange(in, out, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// copyRange copies n bytes at off with copy_file_range, falling back to a read and
// write loop where the kernel cannot (another filesystem, special files).
func copyRange(in, out int, off, n int64) error {
	roff, woff := off, off
	for n > 0 {
		k, err := unix.CopyFileRange(in, &roff, out, &woff, int(min(n, 1<<30)), 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP) {
				return copyLoop(in, out, roff, n)
			}
			return err
		}
		if k == 0 {
			return io.ErrUnexpectedEOF // the lower file shrank: layers must not change
		}
		n -= int64(k)
	}
	return nil
}

func copyLoop(in, out int, off, n int64) error {
	buf := make([]byte, 1<<20)
	for n > 0 {
		k, err := unix.Pread(in, buf[:min(n, int64(len(buf)))], off)
		if err != nil {
			return err
		}
		if k == 0 {
			return io.ErrUnexpectedEOF
		}
		if _, err := unix.Pwrite(out, buf[:k], off); err != nil {
			return err
		}
		off += int64(k)
		n -= int64(k)
	}
	return nil
}

// copyXattrs copies the xattrs of sdir/sname to ddir/dname, all but the union's
// own bookkeeping. Without privilege, trusted.* and security.* xattrs that the
// kernel refuses are skipped: they could not have been read either.
func copyXattrs(sdir int, sname string, ddir int, dname string, privileged bool) error {
	names, err := xattr.List(sdir, sname)
	if err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			return nil
		}
		return err
	}
	for _, name := range names {
		if whiteout.IsPrivateXattr(name) {
			continue
		}
		v, err := xattr.Get(sdir, sname, name)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return err
		}
		if err := xattr.Set(ddir, dname, name, v, 0); err != nil {
			if !privileged && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EOPNOTSUPP)) {
				continue
			}
			return fmt.Errorf("copy xattr %s: %w", name, err)
		}
	}
	return nil
}
