package unionfs

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/beneath"
	"github.com/strata-fs/strata/internal/xattr"
)

// Stat override: fuse-overlayfs's xattr_permissions=N.
//
// A daemon without privilege cannot chown, and containers/storage's force_mask
// keeps the files of its layers at one mode on disk. Both keep the owner and the
// permission bits a file should show in an xattr instead, "UID:GID:MODE"
// (decimal ids as stored in the layers, octal mode), which the union shows in
// place of the disk's. Config.StatOverride names the xattr; "" turns it off and
// costs nothing but a string comparison per attribute.
//
// With it on:
//   - regular files and directories of every layer show the owner and mode of
//     their xattr when they have one (the ids are then mapped by Config.IDs as
//     stored ids are); a value that does not parse is ignored;
//   - chown and chmod of one, after its copy-up, rewrite the xattr of the upper
//     copy and leave the disk's owner and mode alone;
//   - a regular file or directory created through the union gets the xattr with
//     its creator and mode and no chown; on disk its owner (the daemon) gets rwx,
//     so that the daemon can always reach what the xattr may forbid others;
//   - symlinks and special files show what the disk says, as fuse-overlayfs
//     shows them (Linux refuses user.* xattrs on them). A chown or chmod of one,
//     or of one created through the union, changes the disk when the daemon may
//     and is accepted without effect when it may not (EPERM), as fuse-overlayfs
//     accepts it;
//   - the xattr itself is hidden from the merged tree (ownXattr); a copy-up
//     keeps it, as it keeps every xattr;
//   - the upper's root gets the xattr at mount if it has none, with its disk
//     owner and mode, as fuse-overlayfs 1.10 writes it: fuse-overlayfs reads a
//     layer's xattrs only when its root has one, so the upper stays readable
//     by it as a lower.
//
// fuse-overlayfs reads the xattr of a lower layer's files only when the layer's
// root has an override xattr of its own, and then fails to stat a file that has
// none; it also reads "user.containers.override_stat", which containers/storage
// writes with force_mask, from a layer whose root has that one. strata reads the
// xattr it is given from every layer's files, with or without the root's, and
// shows a file without one as the disk does.
const (
	// OverrideXattrPrivileged is fuse-overlayfs's xattr_permissions=1.
	OverrideXattrPrivileged = "security.fuseoverlayfs.override_stat"
	// OverrideXattrUser is fuse-overlayfs's xattr_permissions=2.
	OverrideXattrUser = "user.fuseoverlayfs.override_stat"
)

// statOverride is one value of the override xattr: ids as stored, permission
// bits (07777).
type statOverride struct {
	uid, gid, mode uint32
}

// parseStatOverride reads "UID:GID:MODE", as fuse-overlayfs's sscanf("%d:%d:%o")
// does: whatever follows the mode (newer containers/storage adds ":TYPE") is
// ignored, and so are file type bits in the mode (fuse-overlayfs 1.10 writes
// them).
func parseStatOverride(v []byte) (statOverride, bool) {
	f := strings.SplitN(string(v), ":", 4)
	if len(f) < 3 {
		return statOverride{}, false
	}
	uid, err1 := strconv.ParseUint(f[0], 10, 32)
	gid, err2 := strconv.ParseUint(f[1], 10, 32)
	mode, err3 := strconv.ParseUint(strings.TrimRight(f[2], "\x00\n"), 8, 32)
	if err1 != nil || err2 != nil || err3 != nil {
		return statOverride{}, false
	}
	return statOverride{uid: uint32(uid), gid: uint32(gid), mode: uint32(mode) & 0o7777}, true
}

func (o statOverride) value() []byte {
	return []byte(fmt.Sprintf("%d:%d:%o", o.uid, o.gid, o.mode))
}

// apply puts the override into attributes read from disk.
func (o statOverride) apply(a *fuse.Attr) {
	a.Uid, a.Gid = o.uid, o.gid
	a.Mode = a.Mode&syscall.S_IFMT | o.mode
}

// overridable reports whether files of type mode (st_mode) take the override.
func (u *union) overridable(mode uint32) bool {
	if u.statOverride == "" {
		return false
	}
	t := mode & syscall.S_IFMT
	return t == syscall.S_IFREG || t == syscall.S_IFDIR
}

// overrideAt applies to a (read from layer l's rel) the override xattr rel has,
// if any.
func (u *union) overrideAt(a *fuse.Attr, l int, rel string) {
	if !u.overridable(a.Mode) {
		return
	}
	if o, ok := u.readOverrideAt(l, rel); ok {
		o.apply(a)
	}
}

// readOverrideAt reads the override xattr of layer l's rel.
func (u *union) readOverrideAt(l int, rel string) (statOverride, bool) {
	var v []byte
	var err error
	if rel == "" || len(rel) < unix.PathMax {
		v, err = xattr.Get(u.layers[l].root, rel, u.statOverride)
	} else {
		dir, name := beneath.Split(rel)
		var fd int
		if fd, err = beneath.OpenDir(u.layers[l].root, dir); err == nil {
			v, err = xattr.Get(fd, name, u.statOverride)
			_ = unix.Close(fd) // read only
		}
	}
	if err != nil {
		// None (ENODATA), none possible (EOPNOTSUPP), or unreadable: the
		// disk's attributes stand.
		return statOverride{}, false
	}
	return parseStatOverride(v)
}

// readOverrideFd reads the override xattr of an open file.
func (u *union) readOverrideFd(fd int) (statOverride, bool) {
	buf := make([]byte, 64)
	n, err := unix.Fgetxattr(fd, u.statOverride, buf)
	if err != nil {
		return statOverride{}, false
	}
	return parseStatOverride(buf[:n])
}

// writeOverrideAt writes o as the override xattr of dirfd's name.
func (u *union) writeOverrideAt(dirfd int, name string, o statOverride) error {
	if err := xattr.Set(dirfd, name, u.statOverride, o.value(), 0); err != nil {
		return fmt.Errorf("write %s: %w", u.statOverride, err)
	}
	return nil
}

// initStatOverride turns the override on with the xattr name and gives the
// upper's root one if it has none (see above). A privileged name that cannot be
// written fails the mount, as it fails fuse-overlayfs's.
func (u *union) initStatOverride(name string) error {
	u.statOverride = name
	if name == "" || u.upper == nil {
		return nil
	}
	if _, err := xattr.Get(u.layers[upperLayer].root, "", name); !errors.Is(err, unix.ENODATA) {
		return nil // there, or the filesystem has no xattrs: nothing to write
	}
	var st unix.Stat_t
	if err := unix.Fstat(u.layers[upperLayer].root, &st); err != nil {
		return fmt.Errorf("stat upper %s: %w", u.layers[upperLayer].path, err)
	}
	o := statOverride{uid: st.Uid, gid: st.Gid, mode: st.Mode & 0o7777}
	if err := xattr.Set(u.layers[upperLayer].root, "", name, o.value(), 0); err != nil {
		return fmt.Errorf("upper %s: write %s: %w", u.layers[upperLayer].path, name, err)
	}
	return nil
}

// setattrOverride applies the owner and mode of a SETATTR to the upper file
// (fd when fd >= 0, else dirfd's name), of type typ: into its override xattr
// for a regular file or directory; on disk otherwise, EPERM forgiven (see
// above). It returns in without the owner and mode, for the rest of Setattr.
func (n *node) setattrOverride(in *fuse.SetAttrIn, fd, dirfd int, name string) (*fuse.SetAttrIn, error) {
	uid, gid, chown, err := n.u.ownerOf(in)
	if err != nil {
		return nil, err
	}
	mode, chmod := in.GetMode()
	if !chown && !chmod {
		return in, nil
	}
	rest := *in
	rest.Valid &^= fuse.FATTR_UID | fuse.FATTR_GID | fuse.FATTR_MODE
	typ := n.StableAttr().Mode
	if !n.u.overridable(typ) {
		if chown {
			if fd >= 0 {
				err = unix.Fchown(fd, uid, gid)
			} else {
				err = unix.Fchownat(dirfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
			}
		}
		if chmod && err == nil {
			if typ == syscall.S_IFLNK {
				return nil, syscall.EOPNOTSUPP
			}
			if fd >= 0 {
				err = unix.Fchmod(fd, mode&0o7777)
			} else {
				err = unix.Fchmodat(dirfd, name, mode&0o7777, 0)
			}
		}
		if errors.Is(err, unix.EPERM) {
			err = nil
		}
		return &rest, err
	}

	o, err := currentOverride(fd, dirfd, name, n.u.statOverride)
	if err != nil {
		return nil, &fsError{op: "stat", layer: upperLayer, rel: n.rel(), err: err}
	}
	if uid >= 0 {
		o.uid = uint32(uid)
	}
	if gid >= 0 {
		o.gid = uint32(gid)
	}
	if chmod {
		o.mode = mode & 0o7777
	}
	if fd >= 0 {
		err = unix.Fsetxattr(fd, n.u.statOverride, o.value(), 0)
	} else {
		err = xattr.Set(dirfd, name, n.u.statOverride, o.value(), 0)
	}
	if err != nil {
		return nil, &fsError{op: "set " + n.u.statOverride, layer: upperLayer, rel: n.rel(), err: err}
	}
	return &rest, nil
}

// currentOverride is what the upper file (fd when fd >= 0, else dirfd's name)
// shows: its override xattr, or the disk's owner and mode without one.
func currentOverride(fd, dirfd int, name, xname string) (statOverride, error) {
	var v []byte
	var err error
	if fd >= 0 {
		buf := make([]byte, 64)
		var n int
		n, err = unix.Fgetxattr(fd, xname, buf)
		v = buf[:max(n, 0)]
	} else {
		v, err = xattr.Get(dirfd, name, xname)
	}
	if err == nil {
		if o, ok := parseStatOverride(v); ok {
			return o, nil
		}
	}
	var st unix.Stat_t
	if fd >= 0 {
		err = unix.Fstat(fd, &st)
	} else {
		err = unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return statOverride{}, err
	}
	return statOverride{uid: st.Uid, gid: st.Gid, mode: st.Mode & 0o7777}, nil
}

// backingMode is the mode on disk of a new regular file or directory whose
// mode the union shows is perm: with the override on, the daemon that owns it
// on disk keeps rwx, whatever the override says.
func (u *union) backingMode(perm uint32) uint32 {
	if u.statOverride != "" {
		return perm | 0o700
	}
	return perm
}

// overrideCreate wraps the create function of a new entry of type mode (st_mode,
// permission bits included) for Upper.Make when the override is on: the entry
// gets the override xattr for uid:gid (stored ids) instead of a chown, or for a
// symlink or special file, a chown that may fail with EPERM. On failure it
// removes what create made.
func (u *union) overrideCreate(create func(dirfd int, name string) error, mode uint32, uid, gid int) func(dirfd int, name string) error {
	return func(dirfd int, name string) error {
		if err := create(dirfd, name); err != nil {
			return err
		}
		var err error
		if u.overridable(mode) {
			err = u.writeOverrideAt(dirfd, name, statOverride{uid: uint32(uid), gid: uint32(gid), mode: mode & 0o7777})
		} else if err = unix.Fchownat(dirfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); errors.Is(err, unix.EPERM) {
			err = nil
		}
		if err != nil {
			flags := 0
			if mode&syscall.S_IFMT == syscall.S_IFDIR {
				flags = unix.AT_REMOVEDIR
			}
			_ = unix.Unlinkat(dirfd, name, flags) // undo; err says why
			return err
		}
		return nil
	}
}
