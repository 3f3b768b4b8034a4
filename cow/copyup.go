package cow

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

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
	// MetaOnly makes a metadata-only copy of a regular file (metacopy): an
	// upper file with every attribute and the size of the lower one, holes
	// only, marked with whiteout.MetacopyXattr naming the lower path where
	// its data stays until CopyData. Size must be -1. Other types copy whole.
	MetaOnly bool
}

// Sizes of one data transfer. copy_file_range(2) moves at most 2 GiB - 4 KiB per
// call anyway; 1 GiB keeps a call short enough to notice a signal. The read/write
// fallback moves 1 MiB per call, where the syscall cost stops mattering.
const (
	copyChunk   = 1 << 30
	fallbackBuf = 1 << 20
)

// Method is how a copy-up moved a regular file's data.
type Method int

const (
	// NoData: nothing to move (not a regular file, an empty one or one of
	// holes only, or a copy about to be truncated to nothing).
	NoData Method = iota
	// Reflink: the copy shares the lower file's blocks (FICLONE).
	Reflink
	// CopyFileRange: the kernel copied the data (copy_file_range(2)).
	CopyFileRange
	// ReadWrite: strata read and wrote it through a buffer, where the
	// kernel could not copy (across file systems of different types).
	ReadWrite
	// Metacopy: no data moved; the copy names the lower file that holds it.
	Metacopy
)

func (m Method) String() string {
	switch m {
	case NoData:
		return "no data"
	case Reflink:
		return "reflink"
	case CopyFileRange:
		return "copy_file_range"
	case ReadWrite:
		return "read-write"
	case Metacopy:
		return "metacopy"
	}
	return fmt.Sprintf("Method(%d)", int(m))
}

// Result is what a copy-up made: the stat of the new upper entry, and how its
// data got there (which traces report).
type Result struct {
	unix.Stat_t
	// Method is how a regular file's data was copied.
	Method Method
	// Bytes is how many bytes of data were asked for (holes included).
	Bytes int64
}

// CopyUp copies src to rel in the upper: data (holes kept, copy_file_range or a
// reflink), mode, owner, atime/mtime and xattrs. A directory is copied without its
// entries. The parent of rel must exist in the upper already; an existing entry at
// rel is an error (EEXIST). It returns the stat of the new upper entry and how
// its data was copied.
//
// With opt.MetaOnly a regular file is copied without its data (a metacopy,
// see metacopy.go).
//
// The copy is built in the work directory and renamed into place: on any error,
// or a crash, the upper holds no part of it. Errors name rel ("copy-up a/b: ...").
//
// The lower entry is read, never changed: its data is read with O_NOATIME where
// the kernel allows it. readlink(2) has no such flag, so copying a symlink up
// may update the lower symlink's atime, as kernel overlayfs does. Hard links are
// not kept: each name of a lower inode copies up to an inode of its own.
func (u *Upper) CopyUp(src Source, rel string, opt Options) (st Result, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("copy-up %s: %w", rel, err)
		}
	}()
	if opt.Size < -1 || (opt.MetaOnly && opt.Size != -1) {
		return st, fmt.Errorf("size %d: %w", opt.Size, unix.EINVAL)
	}
	sdirRel, sname := beneath.Split(src.Rel)
	if src.Rel == "" {
		sname = "." // the layer's root itself
	} else if err := checkName("copy-up", src.Rel, sname); err != nil {
		return st, err
	}
	dirRel, name := beneath.Split(rel)
	if rel == "" {
		return st, &os.PathError{Op: "copy-up", Path: rel, Err: unix.EEXIST} // the upper root always exists
	}
	if err := checkName("copy-up", rel, name); err != nil {
		return st, err
	}

	sdir, err := beneath.OpenDir(src.Root, sdirRel)
	if err != nil {
		return st, err
	}
	defer unix.Close(sdir)
	var sst unix.Stat_t
	if err := unix.Fstatat(sdir, sname, &sst, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, &os.PathError{Op: "fstatat", Path: src.Rel, Err: err}
	}
	ddir, err := u.dir(dirRel)
	if err != nil {
		return st, err
	}
	defer unix.Close(ddir)
	// RENAME_NOREPLACE below is what makes EEXIST safe; this only spares a
	// whole copy of the data when the answer is known already.
	var dst unix.Stat_t
	if err := unix.Fstatat(ddir, name, &dst, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		return st, &os.PathError{Op: "copy-up", Path: rel, Err: unix.EEXIST}
	} else if !errors.Is(err, unix.ENOENT) {
		return st, &os.PathError{Op: "fstatat", Path: rel, Err: err}
	}

	tmp := tempName("copyup")
	defer func() {
		if err != nil {
			_ = removeAt(u.work, tmp) // the staged copy, if any; err says what went wrong
		}
	}()
	if err := u.stage(sdir, sname, src.Rel, &sst, tmp, opt, &st); err != nil {
		return st, err
	}
	// A copy-up changes nothing the union shows, so the parent keeps its times,
	// as with overlayfs. (A change of the user's own racing with this one may
	// lose its mtime update; overlayfs has the same window.)
	var pst unix.Stat_t
	parentTimes := unix.Fstat(ddir, &pst) == nil
	if err := unix.Renameat2(u.work, tmp, ddir, name, unix.RENAME_NOREPLACE); err != nil {
		return st, &os.PathError{Op: "renameat2", Path: rel, Err: err}
	}
	if parentTimes {
		ts := []unix.Timespec{unix.NsecToTimespec(pst.Atim.Nano()), unix.NsecToTimespec(pst.Mtim.Nano())}
		_ = unix.UtimesNanoAt(ddir, ".", ts, 0) // cosmetic; the copy-up itself succeeded
	}
	// Stat after the rename: it changes the entry's ctime.
	if err := unix.Fstatat(ddir, name, &st.Stat_t, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, &os.PathError{Op: "fstatat", Path: rel, Err: err}
	}
	return st, nil
}

// checkName refuses a last path component that is not a name of its own: "",
// "." or ".." would make the *at() calls on it reach the directory itself or
// its parent, outside what beneath resolved. op and rel are for the error.
func checkName(op, rel, name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return &os.PathError{Op: op, Path: rel, Err: unix.EINVAL}
	}
	return nil
}

// stage builds the copy of sdir/sname (the lower entry srel, attributes sst) as
// work/tmp. The order of the attribute steps matters:
//
//   - chown first: chown(2) clears set-user-ID and set-group-ID and drops
//     security.capability (ATTR_KILL_SUID, ATTR_KILL_PRIV), even for root;
//   - then the xattrs, security.capability among them, and POSIX ACLs, which
//     set the group bits of the mode;
//   - then the mode, set-ID bits included; it agrees with the ACL mask, as it
//     did in the lower;
//   - the times last, since every step above may change them;
//   - then fsync, so that the name never points at data still in flight.
//
// It notes in res how the data was copied.
func (u *Upper) stage(sdir int, sname, srel string, sst *unix.Stat_t, tmp string, opt Options, res *Result) (err error) {
	out := -1 // the regular file's descriptor, open until fsync
	defer func() {
		if out >= 0 {
			if cerr := unix.Close(out); cerr != nil && err == nil {
				err = &os.PathError{Op: "close", Path: tmp, Err: cerr}
			}
		}
	}()
	typ := sst.Mode & unix.S_IFMT
	switch typ {
	case unix.S_IFREG:
		if out, err = u.copyFile(sdir, sname, srel, sst, tmp, opt, res); err != nil {
			return err
		}
	case unix.S_IFDIR:
		if err := unix.Mkdirat(u.work, tmp, 0o700); err != nil {
			return &os.PathError{Op: "mkdirat", Path: tmp, Err: err}
		}
	case unix.S_IFLNK:
		target, err := readlinkat(sdir, sname, srel)
		if err != nil {
			return err
		}
		if err := unix.Symlinkat(target, u.work, tmp); err != nil {
			return &os.PathError{Op: "symlinkat", Path: tmp, Err: err}
		}
	case unix.S_IFIFO, unix.S_IFSOCK, unix.S_IFCHR, unix.S_IFBLK:
		// Permission bits come with chmod below; 0600 keeps the node private
		// until then.
		if err := unix.Mknodat(u.work, tmp, typ|0o600, int(sst.Rdev)); err != nil {
			return &os.PathError{Op: "mknodat", Path: tmp, Err: err}
		}
	default:
		return &os.PathError{Op: "copy-up", Path: srel, Err: fmt.Errorf("file type %o: %w", typ, unix.EINVAL)}
	}

	if err := unix.Fchownat(u.work, tmp, int(sst.Uid), int(sst.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "fchownat", Path: tmp, Err: err}
	}
	if err := copyXattrs(sdir, sname, srel, u.work, tmp, u.Privileged); err != nil {
		return err
	}
	if typ != unix.S_IFLNK { // a symlink's mode cannot change, and is always 0777
		if err := unix.Fchmodat(u.work, tmp, sst.Mode&0o7777, 0); err != nil {
			return &os.PathError{Op: "fchmodat", Path: tmp, Err: err}
		}
	}
	ts := []unix.Timespec{unix.NsecToTimespec(sst.Atim.Nano()), unix.NsecToTimespec(sst.Mtim.Nano())}
	if err := unix.UtimesNanoAt(u.work, tmp, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: tmp, Err: err}
	}
	// Kernel overlayfs fsyncs the copied-up file and strata does the same unless
	// the union is volatile: without it, a crash after the rename could leave a
	// complete-looking upper file with lost data, shadowing the good lower one.
	if out >= 0 && u.Sync {
		if err := unix.Fsync(out); err != nil {
			return &os.PathError{Op: "fsync", Path: tmp, Err: err}
		}
	}
	return nil
}

func readlinkat(dirfd int, name, rel string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", &os.PathError{Op: "readlinkat", Path: rel, Err: err}
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// copyFile creates work/tmp (mode 0600 until stage sets the real one) and copies
// the data of sdir/sname into it. It returns the open descriptor of the copy,
// and notes in res how the data was copied.
func (u *Upper) copyFile(sdir int, sname, srel string, sst *unix.Stat_t, tmp string, opt Options, res *Result) (_ int, err error) {
	if opt.MetaOnly {
		return -1, u.stub(srel, sst, tmp, res)
	}
	// O_NOATIME: a copy-up is not a read by the user, and the lower must not
	// change. The kernel allows it to the file's owner and CAP_FOWNER only.
	in, err := beneath.Open(sdir, sname, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		in, err = beneath.Open(sdir, sname, unix.O_RDONLY|unix.O_NOFOLLOW, 0)
	}
	if err != nil {
		return -1, err
	}
	defer unix.Close(in)
	out, err := unix.Openat(u.work, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, &os.PathError{Op: "openat", Path: tmp, Err: err}
	}
	defer func() {
		if err != nil {
			_ = unix.Close(out) // the copy is being thrown away
		}
	}()

	want, final := sst.Size, sst.Size // bytes to copy, size of the copy
	if opt.Size >= 0 {
		want, final = min(opt.Size, sst.Size), opt.Size
	}
	// A reflink shares the blocks, holes included, in one call; filesystems
	// without it (ext4, tmpfs) answer EOPNOTSUPP or EINVAL, other mounts EXDEV.
	res.Bytes = want
	cloned := want == sst.Size && want > 0 && unix.IoctlFileClone(out, in) == nil
	if cloned {
		res.Method = Reflink
	} else {
		c := copier{in: in, out: out, name: srel}
		if err := c.copyData(want); err != nil {
			return -1, err
		}
		res.Method = c.method()
	}
	// Sets the size: after the last extent (a trailing hole), after a partial
	// copy (Size N), or past the end (Size beyond the lower's size).
	if err := unix.Ftruncate(out, final); err != nil {
		return -1, &os.PathError{Op: "ftruncate", Path: tmp, Err: err}
	}
	return out, nil
}

// stub makes work/tmp a metacopy of the lower file srel (attributes sst): its
// size, no data, and the marker naming srel. The marker comes before any other
// attribute, so that no crash leaves a stub that passes for the data; and
// there is no fsync (stage skips it), as no data can be in flight.
func (u *Upper) stub(srel string, sst *unix.Stat_t, tmp string, res *Result) error {
	out, err := unix.Openat(u.work, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return &os.PathError{Op: "openat", Path: tmp, Err: err}
	}
	defer unix.Close(out) // nothing written to flush
	if err := unix.Fsetxattr(out, whiteout.MetacopyXattr(u.Privileged), []byte("/"+srel), 0); err != nil {
		return &os.PathError{Op: "setxattr metacopy", Path: tmp, Err: err}
	}
	if err := unix.Ftruncate(out, sst.Size); err != nil {
		return &os.PathError{Op: "ftruncate", Path: tmp, Err: err}
	}
	res.Method = Metacopy
	return nil
}

// copier copies the data of one file.
type copier struct {
	in, out    int
	name       string // the lower entry, for errors
	noRange    bool   // copy_file_range refused this pair: read and write instead
	buf        []byte // the fallback's buffer, made on first use
	noSeekData bool   // SEEK_DATA is not supported: the rest is one extent
	ranged     bool   // copy_file_range moved some bytes
	readWrote  bool   // some bytes went through the buffer
}

// method says how the data went: through the buffer if any of it did (a file
// system that refuses copy_file_range refuses it for the whole file), and
// not at all for a file of holes only.
func (c *copier) method() Method {
	switch {
	case c.readWrote:
		return ReadWrite
	case c.ranged:
		return CopyFileRange
	}
	return NoData
}

// copyData copies the first size bytes extent by extent: holes are found with
// SEEK_DATA/SEEK_HOLE and skipped, so that they stay holes in the copy (the
// final ftruncate sets the size).
func (c *copier) copyData(size int64) error {
	for off := int64(0); off < size; {
		data, hole := off, size
		if !c.noSeekData {
			d, err := unix.Seek(c.in, off, unix.SEEK_DATA)
			switch {
			case errors.Is(err, unix.ENXIO):
				return nil // only a hole is left
			case err != nil:
				// A filesystem without SEEK_DATA (EINVAL): copy the rest whole.
				c.noSeekData = true
			default:
				data = d
				if h, err := unix.Seek(c.in, data, unix.SEEK_HOLE); err == nil {
					hole = min(h, size)
				}
			}
		}
		if data >= size {
			return nil
		}
		if err := c.copyRange(data, hole); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// copyRange copies bytes [off, end) with copy_file_range, falling back to reads
// and writes where the kernel cannot (across filesystems of different types,
// special files, old kernels).
func (c *copier) copyRange(off, end int64) error {
	roff, woff := off, off
	for !c.noRange && roff < end {
		n, err := unix.CopyFileRange(c.in, &roff, c.out, &woff, int(min(end-roff, copyChunk)), 0)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EXDEV), errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EOPNOTSUPP):
			c.noRange = true
		case err != nil:
			return &os.PathError{Op: "copy_file_range", Path: c.name, Err: err}
		case n > 0:
			c.ranged = true
		case n == 0:
			// The lower file is shorter than its stat said: layers must not
			// change under a union.
			return &os.PathError{Op: "copy_file_range", Path: c.name, Err: io.ErrUnexpectedEOF}
		}
	}
	return c.readWrite(roff, end)
}

// readWrite copies bytes [off, end) through a buffer.
func (c *copier) readWrite(off, end int64) error {
	if off < end && c.buf == nil {
		c.buf = make([]byte, fallbackBuf)
	}
	c.readWrote = c.readWrote || off < end
	for off < end {
		n, err := unix.Pread(c.in, c.buf[:min(end-off, int64(len(c.buf)))], off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "pread", Path: c.name, Err: err}
		}
		if n == 0 {
			return &os.PathError{Op: "pread", Path: c.name, Err: io.ErrUnexpectedEOF}
		}
		for w := 0; w < n; {
			k, err := unix.Pwrite(c.out, c.buf[w:n], off+int64(w))
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return &os.PathError{Op: "pwrite", Path: c.name, Err: err}
			}
			w += k
		}
		off += int64(n)
	}
	return nil
}

// copyXattrs copies the xattrs of sdir/sname (the lower entry srel) to
// ddir/dname, all but the union's own bookkeeping. Without privilege, trusted.*
// and security.* xattrs that the kernel refuses to write are skipped: strata
// could not have read trusted.* ones either, and security.capability needs
// CAP_SETFCAP.
func copyXattrs(sdir int, sname, srel string, ddir int, dname string, privileged bool) error {
	names, err := xattr.List(sdir, sname)
	if errors.Is(err, unix.EOPNOTSUPP) {
		return nil // the lower filesystem has no xattrs
	}
	if err != nil {
		return err
	}
	for _, name := range names {
		if whiteout.IsOwnXattr(name, privileged) {
			continue
		}
		v, err := xattr.Get(sdir, sname, name)
		if errors.Is(err, unix.ENODATA) {
			continue // gone since the list: nothing to copy
		}
		if err != nil {
			return err
		}
		if err := xattr.Set(ddir, dname, name, v, 0); err != nil {
			if !privileged && mayRefuse(name) && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EOPNOTSUPP)) {
				continue
			}
			return fmt.Errorf("copy xattr %s of %s: %w", name, srel, err)
		}
	}
	return nil
}

// mayRefuse reports whether the kernel may refuse xattr name to an unprivileged
// writer.
func mayRefuse(name string) bool {
	return strings.HasPrefix(name, "trusted.") || strings.HasPrefix(name, "security.")
}
