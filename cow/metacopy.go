package cow

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/beneath"
	"github.com/strata-fs/strata/internal/xattr"
	"github.com/strata-fs/strata/whiteout"
)

// A metacopy (CopyUp with Options.MetaOnly) is overlayfs's metadata-only
// copy-up: a chmod, chown, utimes or xattr change of a lower file makes an
// upper file that holds every attribute and the size, but no data, and a
// marker xattr naming the lower path that still holds the data. Readers get
// the lower data; the first write, or truncation, copies the data into the
// upper file in place (CopyData), and drops the marker last.
//
// Crash safety: the stub is built in the work directory, marker first, and
// renamed into place like any copy-up, so the upper holds either no entry or a
// marked one. CopyData fills the same inode (open handles and hard links keep
// pointing at it), fsyncs the data, and only then removes the marker: a crash
// before that leaves the marker, and the data is read from below as before.

// MetacopyOf reads the metacopy marker of the open upper file fd: the lower
// path ("a/b", no leading slash) that holds its data, and whether it has one.
// Both marker names are read, whichever privilege wrote them.
func MetacopyOf(fd int) (string, bool, error) {
	return marker(func(name string) ([]byte, error) { return getxattrFd(fd, name) })
}

// MetacopyAt is MetacopyOf for the entry rel below the directory dirfd, which
// needs no permission to open the file.
func MetacopyAt(dirfd int, rel string) (string, bool, error) {
	return marker(func(name string) ([]byte, error) { return xattr.Get(dirfd, rel, name) })
}

func marker(get func(name string) ([]byte, error)) (string, bool, error) {
	for _, name := range []string{whiteout.TrustedMetacopyXattr, whiteout.UserMetacopyXattr} {
		v, err := get(name)
		switch {
		case errors.Is(err, unix.ENODATA), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.EPERM):
			continue
		case err != nil:
			return "", false, fmt.Errorf("read %s: %w", name, err)
		}
		p := string(v)
		if len(p) < 2 || p[0] != '/' {
			return "", false, fmt.Errorf("metacopy marker %q: %w", p, unix.EINVAL)
		}
		return p[1:], true, nil
	}
	return "", false, nil
}

// CopyData copies the data of a metacopy upper file rel from src (the lower
// file its marker names) into it, in place, and removes the marker. size is as
// in Options: -1 for all of it, N for a file about to be truncated to N. The
// file keeps its mode, owner, times and xattrs; a file that is no metacopy is
// left alone.
func (u *Upper) CopyData(src Source, rel string, size int64) (res Result, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("copy-up data %s: %w", rel, err)
		}
	}()
	dirRel, name := beneath.Split(rel)
	if err := checkName("copy-up", rel, name); err != nil {
		return res, err
	}
	dfd, err := u.dir(dirRel)
	if err != nil {
		return res, err
	}
	defer unix.Close(dfd)
	out, err := beneath.Open(dfd, name, unix.O_WRONLY|unix.O_NOFOLLOW, 0)
	if errors.Is(err, unix.EACCES) && !u.Privileged {
		// A read-only file of an unprivileged union's own: its owner may
		// open it up for the copy; the mode is set back below.
		if cerr := unix.Fchmodat(dfd, name, 0o600, 0); cerr == nil {
			out, err = beneath.Open(dfd, name, unix.O_WRONLY|unix.O_NOFOLLOW, 0)
		}
	}
	if err != nil {
		return res, err
	}
	defer func() {
		if cerr := unix.Close(out); cerr != nil && err == nil {
			err = &os.PathError{Op: "close", Path: rel, Err: cerr}
		}
	}()
	if _, ok, err := MetacopyOf(out); err != nil || !ok {
		return res, err
	}
	if err := unix.Fstat(out, &res.Stat_t); err != nil {
		return res, &os.PathError{Op: "fstat", Path: rel, Err: err}
	}
	st := res.Stat_t
	// Writing drops security.capability (and, without CAP_FSETID, the set-id
	// bits): keep it to put back.
	capv, capErr := getxattrFd(out, "security.capability")

	sdirRel, sname := beneath.Split(src.Rel)
	sdir, err := beneath.OpenDir(src.Root, sdirRel)
	if err != nil {
		return res, err
	}
	defer unix.Close(sdir)
	in, err := beneath.Open(sdir, sname, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		in, err = beneath.Open(sdir, sname, unix.O_RDONLY|unix.O_NOFOLLOW, 0)
	}
	if err != nil {
		return res, err
	}
	defer unix.Close(in)
	var sst unix.Stat_t
	if err := unix.Fstat(in, &sst); err != nil {
		return res, &os.PathError{Op: "fstat", Path: src.Rel, Err: err}
	}
	if sst.Mode&unix.S_IFMT != unix.S_IFREG || sst.Size != st.Size {
		// The layers changed under the upper: the stub's data is gone.
		return res, fmt.Errorf("lower %s no longer matches (size %d, want %d): %w", src.Rel, sst.Size, st.Size, unix.EIO)
	}
	want, final := st.Size, st.Size
	if size >= 0 {
		want, final = min(size, st.Size), size
	}
	res.Bytes = want
	if want == st.Size && want > 0 && unix.IoctlFileClone(out, in) == nil {
		res.Method = Reflink
	} else {
		c := copier{in: in, out: out, name: src.Rel}
		if err := c.copyData(want); err != nil {
			return res, err
		}
		res.Method = c.method()
	}
	if final != st.Size {
		if err := unix.Ftruncate(out, final); err != nil {
			return res, &os.PathError{Op: "ftruncate", Path: rel, Err: err}
		}
	}
	if capErr == nil {
		if err := unix.Fsetxattr(out, "security.capability", capv, 0); err != nil {
			return res, &os.PathError{Op: "setxattr security.capability", Path: rel, Err: err}
		}
	}
	if err := unix.Fchmod(out, st.Mode&0o7777); err != nil {
		return res, &os.PathError{Op: "fchmod", Path: rel, Err: err}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(st.Atim.Nano()), unix.NsecToTimespec(st.Mtim.Nano())}
	if err := unix.UtimesNanoAt(out, "", ts, unix.AT_EMPTY_PATH); err != nil {
		return res, &os.PathError{Op: "futimens", Path: rel, Err: err}
	}
	if u.Sync {
		if err := unix.Fsync(out); err != nil {
			return res, &os.PathError{Op: "fsync", Path: rel, Err: err}
		}
	}
	for _, name := range []string{whiteout.TrustedMetacopyXattr, whiteout.UserMetacopyXattr} {
		if err := unix.Fremovexattr(out, name); err != nil && !errors.Is(err, unix.ENODATA) &&
			!errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EOPNOTSUPP) {
			return res, &os.PathError{Op: "removexattr", Path: rel, Err: err}
		}
	}
	if err := unix.Fstat(out, &res.Stat_t); err != nil {
		return res, &os.PathError{Op: "fstat", Path: rel, Err: err}
	}
	return res, nil
}

func getxattrFd(fd int, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Fgetxattr(fd, name, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
