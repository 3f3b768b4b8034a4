package cow

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/beneath"
	"github.com/strata-fs/strata/internal/xattr"
	"github.com/strata-fs/strata/whiteout"
)

// Make creates a new entry name in the upper directory dirRel. create makes the
// entry at (dirfd, name) it is given, which may be in the work directory. The new
// entry is owned by uid:gid (-1 keeps what create made, as for a hard link); it
// is opaque if opaque is set (a directory replacing a whiteout). A whiteout for
// name in dirRel, in either format, is replaced when mayReplace is set; a caller
// that knows there is none (its index says so) clears it, which spares two
// system calls per new entry. It does not stat the new entry: a caller that
// needs its attributes has a better way (the descriptor create opened), or
// none.
//
// create must refuse an existing name (EEXIST: O_EXCL, mkdirat, linkat...), as
// Make removes what it made when a later step fails. A descriptor create opens
// stays valid: a staged entry is renamed, not copied. On error no new entry is
// left, except when create itself fails in place, or when the final removal of
// an OCI whiteout fails: then the entry exists, and so does the whiteout, which
// hides nothing of its own layer.
func (u *Upper) Make(dirRel, name string, uid, gid int, opaque, mayReplace bool, create func(dirfd int, name string) error) (err error) {
	rel := beneath.Join(dirRel, name)
	if err := checkName("make", rel, name); err != nil {
		return err
	}
	dfd, err := u.dir(dirRel)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)

	var old unix.Stat_t
	charWhiteout := mayReplace && unix.Fstatat(dfd, name, &old, unix.AT_SYMLINK_NOFOLLOW) == nil &&
		whiteout.IsOverlayWhiteout(old.Mode, old.Rdev)
	if !opaque && !charWhiteout {
		// Nothing to replace atomically: make it in place.
		if err := create(dfd, name); err != nil {
			return &os.PathError{Op: "create", Path: rel, Err: err}
		}
		if err := chown(dfd, name, rel, uid, gid); err != nil {
			_ = removeAt(dfd, name) // undo the entry create made; err says why
			return err
		}
	} else {
		tmp := tempName("create")
		defer func() {
			if err != nil {
				_ = removeAt(u.work, tmp) // staged entry, if still there
			}
		}()
		if err := create(u.work, tmp); err != nil {
			return &os.PathError{Op: "create", Path: rel, Err: err}
		}
		if err := chown(u.work, tmp, rel, uid, gid); err != nil {
			return err
		}
		var ts unix.Stat_t
		if err := unix.Fstatat(u.work, tmp, &ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return &os.PathError{Op: "stat", Path: rel, Err: err}
		}
		isDir := ts.Mode&unix.S_IFMT == unix.S_IFDIR
		if opaque && isDir {
			if err := u.setOpaqueAt(u.work, tmp); err != nil {
				return err
			}
		}
		switch {
		case charWhiteout && isDir:
			// rename(2) cannot put a directory over a device node: swap
			// them, then drop the whiteout, now in the work dir.
			if err := unix.Renameat2(u.work, tmp, dfd, name, unix.RENAME_EXCHANGE); err != nil {
				return &os.PathError{Op: "rename", Path: rel, Err: err}
			}
			_ = unix.Unlinkat(u.work, tmp, 0) // the old whiteout; debris is cleaned at mount
		case charWhiteout:
			if err := unix.Renameat(u.work, tmp, dfd, name); err != nil {
				return &os.PathError{Op: "rename", Path: rel, Err: err}
			}
		default:
			if err := unix.Renameat2(u.work, tmp, dfd, name, unix.RENAME_NOREPLACE); err != nil {
				return &os.PathError{Op: "rename", Path: rel, Err: err}
			}
		}
	}
	// An OCI whiteout beside the new entry hides nothing any more (a whiteout
	// never hides its own layer); remove it after the entry exists.
	if mayReplace {
		if err := unix.Unlinkat(dfd, whiteout.Prefix+name, 0); err != nil && !noEntry(err) {
			return &os.PathError{Op: "unlink whiteout", Path: rel, Err: err}
		}
	}
	return nil
}

// chown gives the new entry name in dirfd (rel in the upper) to uid:gid, -1
// keeping either. chown(2) clears set-user-ID, and set-group-ID with group
// execute, on a non-directory even for root, but those are bits create chose for
// the caller, who owns the file: put them back.
func chown(dirfd int, name, rel string, uid, gid int) error {
	if uid < 0 && gid < 0 {
		return nil
	}
	var before unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &before, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "fstatat", Path: rel, Err: err}
	}
	if err := unix.Fchownat(dirfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "fchownat", Path: rel, Err: err}
	}
	typ := before.Mode & unix.S_IFMT
	if before.Mode&(unix.S_ISUID|unix.S_ISGID) == 0 || typ == unix.S_IFLNK || typ == unix.S_IFDIR {
		return nil
	}
	if err := unix.Fchmodat(dirfd, name, before.Mode&0o7777, 0); err != nil {
		return &os.PathError{Op: "fchmodat", Path: rel, Err: err}
	}
	return nil
}

// Whiteout hides name in the upper directory dirRel from the layers below, writing
// u.Format's whiteout. An upper entry name, file or directory tree, is replaced.
func (u *Upper) Whiteout(dirRel, name string) error {
	rel := beneath.Join(dirRel, name)
	if err := checkName("whiteout", rel, name); err != nil {
		return err
	}
	dfd, err := u.dir(dirRel)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	var st unix.Stat_t
	exists := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil

	obj := whiteout.WhiteoutFor(u.Format, name)
	if obj.Name != name {
		// OCI: the marker first, then the entry; the marker hides nothing of
		// its own layer, so no moment shows the lower entry.
		// O_EXCL also refuses to follow a symlink of that name out of the
		// upper; an existing whiteout is the job done.
		fd, err := unix.Openat(dfd, obj.Name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, obj.Mode&07777)
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return &os.PathError{Op: "create whiteout", Path: rel, Err: err}
		}
		if err == nil {
			_ = unix.Close(fd) // empty file, nothing written
		}
		if exists {
			return u.RemoveAll(rel)
		}
		return nil
	}
	// Overlay: a 0/0 device made in the work dir and moved over the entry.
	if exists && whiteout.IsOverlayWhiteout(st.Mode, st.Rdev) {
		return nil
	}
	tmp := tempName("whiteout")
	if err := unix.Mknodat(u.work, tmp, obj.Mode, int(obj.Rdev)); err != nil {
		return &os.PathError{Op: "mknod whiteout", Path: rel, Err: err}
	}
	if !exists {
		// NOREPLACE: should name have appeared since the stat, exchange below.
		err := unix.Renameat2(u.work, tmp, dfd, name, unix.RENAME_NOREPLACE)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EEXIST) {
			_ = unix.Unlinkat(u.work, tmp, 0) // the unused whiteout; err says why
			return &os.PathError{Op: "rename whiteout", Path: rel, Err: err}
		}
	}
	if err := unix.Renameat2(u.work, tmp, dfd, name, unix.RENAME_EXCHANGE); err != nil {
		_ = unix.Unlinkat(u.work, tmp, 0) // the unused whiteout; err says why
		return &os.PathError{Op: "exchange whiteout", Path: rel, Err: err}
	}
	return removeAt(u.work, tmp) // the old entry, now in the work dir
}

// WhiteoutFirst prepares the whiteout for name in the upper directory dirRel
// ahead of a rename that takes the upper entry name away while lower layers
// hold the name. Written after the rename, the whiteout would leave a moment,
// and after a crash for good, where the lower entry shows again beside the
// renamed one. In the OCI format WhiteoutFirst writes the marker now: it hides
// nothing of its own layer while the entry is there. In the overlay format the
// whiteout is a device in the entry's place, which only the rename itself can
// leave: WhiteoutFirst returns RENAME_WHITEOUT for it. Call Whiteout after the
// rename all the same; it finds the job done.
func (u *Upper) WhiteoutFirst(dirRel, name string) (renameFlags uint, err error) {
	rel := beneath.Join(dirRel, name)
	if err := checkName("whiteout", rel, name); err != nil {
		return 0, err
	}
	obj := whiteout.WhiteoutFor(u.Format, name)
	if obj.Name == name {
		return unix.RENAME_WHITEOUT, nil
	}
	dfd, err := u.dir(dirRel)
	if err != nil {
		return 0, err
	}
	defer unix.Close(dfd)
	fd, err := unix.Openat(dfd, obj.Name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, obj.Mode&07777)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return 0, &os.PathError{Op: "create whiteout", Path: rel, Err: err}
	}
	if err == nil {
		_ = unix.Close(fd) // empty file, nothing written
	}
	return 0, nil
}

// RemoveWhiteout removes a whiteout for name from dirRel, in either format; none
// is not an error.
func (u *Upper) RemoveWhiteout(dirRel, name string) error {
	rel := beneath.Join(dirRel, name)
	if err := checkName("remove whiteout", rel, name); err != nil {
		return err
	}
	dfd, err := u.dir(dirRel)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	if err := unix.Unlinkat(dfd, whiteout.Prefix+name, 0); err != nil && !noEntry(err) {
		return &os.PathError{Op: "unlink whiteout", Path: rel, Err: err}
	}
	var st unix.Stat_t
	if unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && whiteout.IsOverlayWhiteout(st.Mode, st.Rdev) {
		if err := unix.Unlinkat(dfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
			return &os.PathError{Op: "unlink whiteout", Path: rel, Err: err}
		}
	}
	return nil
}

// SetOpaque marks the upper directory dirRel opaque in u.Format.
func (u *Upper) SetOpaque(dirRel string) error {
	parent, name := beneath.Split(dirRel)
	if dirRel == "" {
		name = "." // the upper root
	} else if err := checkName("set opaque", dirRel, name); err != nil {
		return err
	}
	dfd, err := u.dir(parent)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	return u.setOpaqueAt(dfd, name)
}

func (u *Upper) setOpaqueAt(dirfd int, name string) error {
	o := whiteout.OpaqueFor(u.Format, u.Privileged)
	if o.Entry == nil {
		if err := xattr.Set(dirfd, name, o.XattrName, o.XattrValue, 0); err != nil {
			return err
		}
		return nil
	}
	// The marker is bookkeeping, not a change the directory's owner made:
	// keep its times, as the overlay format's xattr does.
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "stat", Path: name, Err: err}
	}
	fd, err := beneath.Open(dirfd, name+"/"+o.Entry.Name, unix.O_WRONLY|unix.O_CREAT, o.Entry.Mode&07777)
	if err != nil {
		return err
	}
	if err := unix.Close(fd); err != nil {
		return &os.PathError{Op: "close", Path: o.Entry.Name, Err: err}
	}
	times := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(dirfd, name, times, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: name, Err: err}
	}
	return nil
}

// noEntry reports an error that means "no such entry". ENAMETOOLONG counts: a
// name within 4 bytes of NAME_MAX has no room for the ".wh." of an OCI whiteout,
// so it cannot have one.
func noEntry(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENAMETOOLONG)
}
