// Package cow writes the upper layer of a union: it copies lower entries up
// (whole, or metadata only: metacopy.go), makes whiteouts and opaque
// directories, and creates new entries so that each change appears at once or
// not at all.
//
// Every multi-step change is staged in the work directory, which must sit on the
// same filesystem as the upper, and renamed into place: a crash leaves either the
// old state or the new one, plus debris in the work directory that Open removes at
// the next mount.
package cow

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/beneath"
	"github.com/strata-fs/strata/internal/xattr"
	"github.com/strata-fs/strata/whiteout"
)

// Upper is the writable layer of a union and the work directory beside it.
type Upper struct {
	// Root is an O_PATH descriptor of the upper directory.
	Root int
	// Format is the whiteout format written (both are always read).
	Format whiteout.Format
	// Privileged chooses trusted.overlay.* over user.overlay.* xattrs.
	Privileged bool
	// Sync fsyncs a copied-up file before it is renamed into place, as kernel
	// overlayfs does; false is overlayfs's "volatile".
	Sync bool

	work int // O_PATH descriptor of <workdir>/work, where changes are staged
}

// workSubdir is strata's staging directory inside the work dir; overlayfs names
// its own the same way.
const workSubdir = "work"

// Open opens upperDir and workDir (creating workDir/work), and removes whatever an
// interrupted change left in workDir/work.
func Open(upperDir, workDir string, f whiteout.Format, sync bool) (_ *Upper, err error) {
	u := &Upper{Root: -1, work: -1, Format: f, Sync: sync}
	defer func() {
		if err != nil {
			_ = u.Close() // already failing
		}
	}()
	if u.Root, err = unix.Open(upperDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		return nil, &os.PathError{Op: "open upper", Path: upperDir, Err: err}
	}
	wd, err := unix.Open(workDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open work", Path: workDir, Err: err}
	}
	defer unix.Close(wd)
	var su, sw unix.Stat_t
	if err := unix.Fstat(u.Root, &su); err != nil {
		return nil, &os.PathError{Op: "stat", Path: upperDir, Err: err}
	}
	if err := unix.Fstat(wd, &sw); err != nil {
		return nil, &os.PathError{Op: "stat", Path: workDir, Err: err}
	}
	if su.Dev != sw.Dev {
		// Every change ends in a rename from work to upper.
		return nil, fmt.Errorf("upper %s and work %s are on different filesystems: %w", upperDir, workDir, unix.EXDEV)
	}
	if err := unix.Mkdirat(wd, workSubdir, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, &os.PathError{Op: "mkdir", Path: filepath.Join(workDir, workSubdir), Err: err}
	}
	if u.work, err = beneath.OpenDir(wd, workSubdir); err != nil {
		return nil, err
	}
	if err := clearDir(u.work); err != nil {
		return nil, fmt.Errorf("clean %s: %w", filepath.Join(workDir, workSubdir), err)
	}
	if u.Privileged, err = u.probeTrusted(); err != nil {
		return nil, fmt.Errorf("probe trusted xattrs in %s: %w", filepath.Join(workDir, workSubdir), err)
	}
	return u, nil
}

// probeTrusted learns whether trusted.* xattrs can be written here, by trying on
// a scratch file in the work dir. Being uid 0 is not enough: root in a user
// namespace, or without CAP_SYS_ADMIN, gets EPERM; a filesystem without trusted
// xattrs says EOPNOTSUPP. Either way the union marks opaque directories with
// user.overlay.opaque, as an unprivileged overlayfs (userxattr) reads them.
func (u *Upper) probeTrusted() (ok bool, err error) {
	name := tempName("probe")
	fd, err := unix.Openat(u.work, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return false, &os.PathError{Op: "openat", Path: name, Err: err}
	}
	_ = unix.Close(fd) // empty and never read
	defer func() {
		if rerr := unix.Unlinkat(u.work, name, 0); rerr != nil && err == nil {
			err = &os.PathError{Op: "unlinkat", Path: name, Err: rerr}
		}
	}()
	err = xattr.Set(u.work, name, "trusted.strata.probe", []byte("1"), 0)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EOPNOTSUPP):
		return false, nil
	}
	return false, err
}

// Close releases the descriptors.
func (u *Upper) Close() error {
	var errs []error
	for _, fd := range []int{u.Root, u.work} {
		if fd >= 0 {
			errs = append(errs, unix.Close(fd))
		}
	}
	u.Root, u.work = -1, -1
	return errors.Join(errs...)
}

// tempName is a fresh name for a staged entry.
func tempName(kind string) string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand never fails on Linux
	return kind + "-" + hex.EncodeToString(b[:])
}

// clearDir removes everything inside the directory dirfd, never following a
// symlink.
func clearDir(dirfd int) error {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "openat", Path: ".", Err: err}
	}
	f := os.NewFile(uintptr(fd), "dir")
	defer f.Close()
	for {
		names, err := f.Readdirnames(256)
		for _, name := range names {
			if err := removeAt(dirfd, name); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) || (err == nil && len(names) == 0) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// removeAt removes name in dirfd, a directory with everything below it. A
// missing name is no error.
func removeAt(dirfd int, name string) error {
	err := unix.Unlinkat(dirfd, name, 0)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if !errors.Is(err, unix.EISDIR) && !errors.Is(err, unix.EPERM) {
		return &os.PathError{Op: "unlinkat", Path: name, Err: err}
	}
	sub, err := beneath.OpenDir(dirfd, name)
	if err != nil {
		return err
	}
	err = clearDir(sub)
	if errors.Is(err, unix.EACCES) {
		// A directory without write or search permission, which stops an
		// unprivileged union (root does not care). It is on its way out of
		// a private directory: open it up and try again.
		if cerr := unix.Fchmodat(dirfd, name, 0o700, 0); cerr == nil {
			err = clearDir(sub)
		}
	}
	_ = unix.Close(sub) // O_PATH: nothing to flush
	if err != nil {
		return err
	}
	if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "rmdir", Path: name, Err: err}
	}
	return nil
}

// dir opens the upper directory rel as an O_PATH descriptor.
func (u *Upper) dir(rel string) (int, error) {
	return beneath.OpenDir(u.Root, rel)
}

// RemoveAll removes rel from the upper with everything below it (whiteouts and
// markers included): renamed into the work directory first, so the name goes at
// once, then deleted. A missing rel is no error. If the deletion fails, rel is
// gone all the same and the rest waits in the work directory for the next Open.
func (u *Upper) RemoveAll(rel string) error {
	dirRel, name := beneath.Split(rel)
	if name == "" || name == "." || name == ".." {
		return &os.PathError{Op: "remove", Path: rel, Err: unix.EINVAL} // the upper root, or outside it
	}
	dfd, err := u.dir(dirRel)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	tmp := tempName("remove")
	if err := unix.Renameat2(dfd, name, u.work, tmp, unix.RENAME_NOREPLACE); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return &os.PathError{Op: "rename to work", Path: rel, Err: err}
	}
	if err := removeAt(u.work, tmp); err != nil {
		return fmt.Errorf("remove %s: %w", rel, err)
	}
	return nil
}
