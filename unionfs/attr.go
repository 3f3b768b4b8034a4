package unionfs

import (
	"context"
	"errors"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/beneath"
	"github.com/strata-fs/strata/internal/xattr"
)

var _ = (fs.NodeSetattrer)((*node)(nil))

// Setattr copies the node up (only the bytes a truncation keeps) and changes the
// upper copy: owner first, since chown clears set-id bits, then mode, size and
// times, so that an explicit mtime is not clobbered by the truncation.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	errno := n.setattr(f, in, out)
	n.forgetGroup()
	if errno == 0 {
		// The answer is as good as a GETATTR's. go-fuse leaves its timeout
		// at 0, and the kernel then asks again at the next stat or
		// permission check: a GETATTR for every file tar extracts.
		out.SetTimeout(cacheTimeout)
	}
	return errno
}

func (n *node) setattr(f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	size, hasSize := in.GetSize()
	cp := int64(-1)
	if hasSize {
		cp = int64(size)
	}
	var err error
	if hasSize {
		err = n.copyUpData(cp)
	} else {
		err = n.copyUpMeta() // chmod, chown, utimes: no data needed
	}
	if err != nil {
		return toErrno(err)
	}
	// Through the caller's descriptor when it has one on the upper file
	// (fchmod, futimens, ftruncate...): fewer calls than by name, and the
	// only way to a file unlinked while open.
	if fh, ok := asFile(f); ok {
		errno := fh.use(func(fd int, lower bool) syscall.Errno {
			if lower {
				return syscall.ESTALE
			}
			return n.setattrFd(fd, in)
		})
		if errno != syscall.ESTALE {
			if errno != 0 {
				return errno
			}
			return n.fstat(fh, false, out)
		}
	}
	if n.isOrphan() {
		return syscall.ESTALE
	}
	rel := n.rel()
	dir, name := beneath.Split(rel)
	dfd, err := beneath.OpenDir(n.u.layers[upperLayer].root, dir)
	if err != nil {
		return toErrno(err)
	}
	defer unix.Close(dfd)
	if name == "" {
		name = "."
	}

	if n.u.statOverride != "" {
		if in, err = n.setattrOverride(in, -1, dfd, name); err != nil {
			return toErrno(err)
		}
	}
	if u, g, ok, err := n.u.ownerOf(in); err != nil {
		return toErrno(err)
	} else if ok {
		if err := unix.Fchownat(dfd, name, u, g, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return toErrno(err)
		}
	}
	if mode, ok := in.GetMode(); ok {
		if n.StableAttr().Mode == syscall.S_IFLNK {
			return syscall.EOPNOTSUPP
		}
		if err := unix.Fchmodat(dfd, name, mode&07777, 0); err != nil {
			return toErrno(err)
		}
	}
	if hasSize {
		// Through the caller's descriptor when it has one on the upper file,
		// which needs no write permission on it (ftruncate(2) of a file
		// opened for writing).
		errno := syscall.ESTALE
		if fh, ok := asFile(f); ok {
			errno = fh.use(func(fd int, lower bool) syscall.Errno {
				if lower {
					return syscall.ESTALE
				}
				return toErrno(unix.Ftruncate(fd, int64(size)))
			})
		}
		if errno == syscall.ESTALE {
			errno = toErrno(truncateAt(dfd, name, int64(size)))
		}
		if errno != 0 {
			return errno
		}
	}
	if ts, ok := timesOf(in); ok {
		if err := unix.UtimesNanoAt(dfd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return toErrno(err)
		}
	}
	var st unix.Statx_t
	if err := n.u.statx(upperLayer, rel, &st); err != nil {
		return toErrno(err)
	}
	attrFromStatx(&out.Attr, &st)
	n.metaBlocks(&out.Attr)
	n.u.overrideAt(&out.Attr, upperLayer, rel)
	n.fixAttr(&out.Attr)
	return 0
}

// setattrFd applies in to an upper file reachable only through fd.
func (n *node) setattrFd(fd int, in *fuse.SetAttrIn) syscall.Errno {
	if n.u.statOverride != "" {
		var err error
		if in, err = n.setattrOverride(in, fd, -1, ""); err != nil {
			return toErrno(err)
		}
	}
	if u, g, ok, err := n.u.ownerOf(in); err != nil {
		return toErrno(err)
	} else if ok {
		if err := unix.Fchown(fd, u, g); err != nil {
			return toErrno(err)
		}
	}
	if mode, ok := in.GetMode(); ok {
		if err := unix.Fchmod(fd, mode&07777); err != nil {
			return toErrno(err)
		}
	}
	if size, ok := in.GetSize(); ok {
		if err := unix.Ftruncate(fd, int64(size)); err != nil {
			return toErrno(err)
		}
	}
	if ts, ok := timesOf(in); ok {
		if err := unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH); err != nil {
			// utimensat(fd, NULL) is the descriptor form; x/sys has no NULL
			// path, and AT_EMPTY_PATH is refused on old kernels.
			return toErrno(err)
		}
	}
	return 0
}

// ownerOf is the chown(2) pair of a SETATTR as stored in the layers, -1 for
// the id not given; ok is false when it changes no owner.
func (u *union) ownerOf(in *fuse.SetAttrIn) (uid, gid int, ok bool, err error) {
	su, uok := in.GetUID()
	sg, gok := in.GetGID()
	uid, gid = -1, -1
	if uok {
		uid = int(su)
	}
	if gok {
		gid = int(sg)
	}
	if !uok && !gok {
		return uid, gid, false, nil
	}
	uid, gid, err = u.storedOwner(uid, gid)
	return uid, gid, err == nil, err
}

func truncateAt(dfd int, name string, size int64) error {
	fd, err := beneath.Open(dfd, name, unix.O_WRONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Ftruncate(fd, size)
}

// timesOf turns the times of a SETATTR into utimensat's pair, UTIME_OMIT for the
// one not given.
func timesOf(in *fuse.SetAttrIn) ([]unix.Timespec, bool) {
	mtime, mok := in.GetMTime()
	atime, aok := in.GetATime()
	if !mok && !aok {
		return nil, false
	}
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	if aok {
		ts[0] = unix.NsecToTimespec(atime.UnixNano())
	}
	if mok {
		ts[1] = unix.NsecToTimespec(mtime.UnixNano())
	}
	return ts, true
}

// loadXattrs fills the node's xattr cache from its layer, once. The cache is
// kept true by Setxattr and Removexattr, the only ways the union changes xattrs;
// a copy-up carries them over unchanged.
func (n *node) loadXattrs() (map[string][]byte, error) {
	n.mu.Lock()
	if n.xattrs != nil {
		defer n.mu.Unlock()
		return n.xattrs, nil
	}
	l := n.layer
	n.mu.Unlock()

	rel := n.rel()
	root := n.u.layers[l].root
	names, err := xattr.List(root, rel)
	if err != nil {
		return nil, err
	}
	m := make(map[string][]byte, len(names))
	for _, name := range names {
		if n.u.ownXattr(name) {
			continue
		}
		v, err := xattr.Get(root, rel, name)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return nil, err
		}
		m[name] = v
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.xattrs == nil {
		n.xattrs = m
	}
	return n.xattrs, nil
}

// selinuxXattr holds a file's SELinux label, capabilityXattr its file
// capabilities.
const (
	selinuxXattr    = "security.selinux"
	capabilityXattr = "security.capability"
)

var _ = (fs.NodeGetxattrer)((*node)(nil))

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if n.u.ownXattr(attr) {
		if attr == StackXattr && n.isRoot() {
			return n.u.getStackXattr(dest)
		}
		return 0, syscall.ENODATA
	}
	if attr == capabilityXattr {
		// The kernel asks before every write(2) whether the file has a
		// capability to drop. One this mount created has none until one
		// is set, which loads the cache first: no need to read the disk.
		n.mu.Lock()
		none := n.made && n.xattrs == nil
		n.mu.Unlock()
		if none {
			return 0, syscall.ENODATA
		}
	}
	m, err := n.loadXattrs()
	if err != nil {
		return 0, toErrno(err)
	}
	n.mu.Lock()
	v, ok := m[attr]
	n.mu.Unlock()
	if !ok {
		if attr == selinuxXattr && !n.u.selinux {
			// No label here, and none means anything on this host: say
			// the file system has none. `ls -l` asks for every file,
			// and takes this answer for the whole device (coreutils
			// caches it), which spares a round trip per file.
			return 0, syscall.EOPNOTSUPP
		}
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

var _ = (fs.NodeListxattrer)((*node)(nil))

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	m, err := n.loadXattrs()
	if err != nil {
		return 0, toErrno(err)
	}
	n.mu.Lock()
	var list []byte
	for name := range m {
		list = append(list, name...)
		list = append(list, 0)
	}
	n.mu.Unlock()
	if len(dest) < len(list) {
		return uint32(len(list)), syscall.ERANGE
	}
	return uint32(copy(dest, list)), 0
}

var _ = (fs.NodeSetxattrer)((*node)(nil))

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if n.u.ownXattr(attr) {
		return syscall.EPERM
	}
	if _, err := n.loadXattrs(); err != nil {
		return toErrno(err)
	}
	if err := n.copyUpMeta(); err != nil {
		return toErrno(err)
	}
	n.forgetGroup() // an ACL may have cleared set-group-ID
	if err := xattr.Set(n.u.layers[upperLayer].root, n.rel(), attr, data, int(flags)); err != nil {
		return toErrno(err)
	}
	n.mu.Lock()
	n.xattrs[attr] = append([]byte(nil), data...)
	n.mu.Unlock()
	return 0
}

var _ = (fs.NodeRemovexattrer)((*node)(nil))

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if n.u.ownXattr(attr) {
		return syscall.ENODATA
	}
	m, err := n.loadXattrs()
	if err != nil {
		return toErrno(err)
	}
	n.mu.Lock()
	_, ok := m[attr]
	n.mu.Unlock()
	if !ok {
		return syscall.ENODATA // no copy-up for nothing
	}
	if err := n.copyUpMeta(); err != nil {
		return toErrno(err)
	}
	n.forgetGroup()
	if err := xattr.Remove(n.u.layers[upperLayer].root, n.rel(), attr); err != nil {
		return toErrno(err)
	}
	n.mu.Lock()
	delete(n.xattrs, attr)
	n.mu.Unlock()
	return 0
}
