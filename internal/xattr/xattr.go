// Package xattr reads and writes extended attributes of a file named relative to a
// directory descriptor, without following a symlink in the last component.
//
// Linux 6.13 added getxattrat(2) and friends; strata uses them so that a layer file
// is reached from the layer's directory descriptor like every other *at() call.
// On older kernels (ENOSYS) it falls back to the l*xattr calls on the
// /proc/self/fd path of the directory, which keeps the no-follow rule for the last
// component.
package xattr

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// xattrArgs is struct xattr_args of the *xattrat calls.
type xattrArgs struct {
	value uint64
	size  uint32
	flags uint32
}

// noAt is set once the kernel has said ENOSYS to the *xattrat calls.
var noAt atomic.Bool

func atFlags(path string) uintptr { return unix.AT_SYMLINK_NOFOLLOW }

// atPath names the directory itself as "." rather than with AT_EMPTY_PATH, which
// the xattr calls refuse on an O_PATH descriptor.
func atPath(path string) string {
	if path == "" {
		return "."
	}
	return path
}

// procPath names path below dirfd for the path-based fallback.
func procPath(dirfd int, path string) string {
	p := "/proc/self/fd/" + strconv.Itoa(dirfd)
	if path != "" {
		p += "/" + path
	}
	return p
}

// List returns the names of the xattrs of path below dirfd ("" is dirfd itself).
func List(dirfd int, path string) ([]string, error) {
	buf := make([]byte, 256)
	for {
		n, err := listRaw(dirfd, path, buf)
		if errors.Is(err, unix.ERANGE) {
			size, err := listRaw(dirfd, path, nil)
			if err != nil {
				return nil, &os.PathError{Op: "listxattrat", Path: path, Err: err}
			}
			buf = make([]byte, size+64)
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "listxattrat", Path: path, Err: err}
		}
		var names []string
		for _, b := range bytes.Split(buf[:n], []byte{0}) {
			if len(b) > 0 {
				names = append(names, string(b))
			}
		}
		return names, nil
	}
}

func listRaw(dirfd int, path string, buf []byte) (int, error) {
	if !noAt.Load() {
		p, err := unix.BytePtrFromString(atPath(path))
		if err != nil {
			return 0, err
		}
		var ptr unsafe.Pointer
		if len(buf) > 0 {
			ptr = unsafe.Pointer(&buf[0])
		}
		for {
			r, _, e := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), atFlags(path), uintptr(ptr), uintptr(len(buf)), 0)
			if e == unix.EINTR {
				continue
			}
			if e == unix.ENOSYS {
				noAt.Store(true)
				break
			}
			if e != 0 {
				return 0, e
			}
			return int(r), nil
		}
	}
	return unix.Llistxattr(procPath(dirfd, path), buf)
}

// Get returns the value of xattr name of path below dirfd. A missing xattr is
// ENODATA, wrapped in *os.PathError.
func Get(dirfd int, path, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := getRaw(dirfd, path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			size, err := getRaw(dirfd, path, name, nil)
			if err != nil {
				return nil, &os.PathError{Op: "getxattrat", Path: path, Err: err}
			}
			buf = make([]byte, size+64)
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "getxattrat", Path: path, Err: err}
		}
		return buf[:n:n], nil
	}
}

func getRaw(dirfd int, path, name string, buf []byte) (int, error) {
	if !noAt.Load() {
		p, err := unix.BytePtrFromString(atPath(path))
		if err != nil {
			return 0, err
		}
		nm, err := unix.BytePtrFromString(name)
		if err != nil {
			return 0, err
		}
		args := xattrArgs{size: uint32(len(buf))}
		if len(buf) > 0 {
			args.value = uint64(uintptr(unsafe.Pointer(&buf[0])))
		}
		for {
			r, _, e := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), atFlags(path),
				uintptr(unsafe.Pointer(nm)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
			if e == unix.EINTR {
				continue
			}
			if e == unix.ENOSYS {
				noAt.Store(true)
				break
			}
			if e != 0 {
				return 0, e
			}
			return int(r), nil
		}
	}
	return unix.Lgetxattr(procPath(dirfd, path), name, buf)
}

// Set writes xattr name=value on path below dirfd with setxattr(2) flags
// (XATTR_CREATE, XATTR_REPLACE).
func Set(dirfd int, path, name string, value []byte, flags int) error {
	if !noAt.Load() {
		p, err := unix.BytePtrFromString(atPath(path))
		if err != nil {
			return err
		}
		nm, err := unix.BytePtrFromString(name)
		if err != nil {
			return err
		}
		args := xattrArgs{size: uint32(len(value)), flags: uint32(flags)}
		if len(value) > 0 {
			args.value = uint64(uintptr(unsafe.Pointer(&value[0])))
		}
		for {
			_, _, e := unix.Syscall6(unix.SYS_SETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), atFlags(path),
				uintptr(unsafe.Pointer(nm)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
			if e == unix.EINTR {
				continue
			}
			if e == unix.ENOSYS {
				noAt.Store(true)
				break
			}
			if e != 0 {
				return &os.PathError{Op: "setxattrat", Path: path, Err: e}
			}
			return nil
		}
	}
	if err := unix.Lsetxattr(procPath(dirfd, path), name, value, flags); err != nil {
		return &os.PathError{Op: "lsetxattr", Path: path, Err: err}
	}
	return nil
}

// Remove deletes xattr name of path below dirfd.
func Remove(dirfd int, path, name string) error {
	if !noAt.Load() {
		p, err := unix.BytePtrFromString(atPath(path))
		if err != nil {
			return err
		}
		nm, err := unix.BytePtrFromString(name)
		if err != nil {
			return err
		}
		for {
			_, _, e := unix.Syscall6(unix.SYS_REMOVEXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), atFlags(path),
				uintptr(unsafe.Pointer(nm)), 0, 0)
			if e == unix.EINTR {
				continue
			}
			if e == unix.ENOSYS {
				noAt.Store(true)
				break
			}
			if e != 0 {
				return &os.PathError{Op: "removexattrat", Path: path, Err: e}
			}
			return nil
		}
	}
	if err := unix.Lremovexattr(procPath(dirfd, path), name); err != nil {
		return &os.PathError{Op: "lremovexattr", Path: path, Err: err}
	}
	return nil
}
