// Package xattr reads and writes extended attributes of a file named relative to a
// directory descriptor, without following a symlink in the last component.
//
// Linux 6.13 added getxattrat(2) and friends; strata uses them so that a layer file
// is reached from the layer's directory descriptor like every other *at() call.
// On older kernels (ENOSYS) it falls back to the path xattr calls on the
// /proc/self/fd path of an O_PATH|O_NOFOLLOW descriptor of the file.
//
// Like every *at() call, path is resolved by the kernel: symlinks in its leading
// components are followed, only the last component is not. Callers that must stay
// inside a layer pass a dirfd they opened with package beneath and a single name.
//
// Three kernel facts shape the code (measured on 6.18):
//
//   - The *xattrat calls refuse an O_PATH descriptor with AT_EMPTY_PATH (EBADF):
//     they look the descriptor up with fdget(), which skips O_PATH files, just as
//     fgetxattr(2) does. strata keeps its layer roots as O_PATH descriptors, so
//     path "" on one of them takes the /proc route below. (Passing "." instead
//     only works for directories.)
//   - The /proc route must use the following calls (getxattr, not lgetxattr):
//     /proc/self/fd/N is itself a symlink, and l*xattr acts on that procfs link
//     (EOPNOTSUPP, or an empty list, with no error) instead of the file.
//     Following the magic link lands on exactly the inode the descriptor holds
//     and stops there, so for an O_PATH|O_NOFOLLOW descriptor of a symlink the
//     calls reach the symlink itself, never its target. This is the symlink
//     caveat: the no-follow guarantee of the fallback rests on the descriptor
//     having been opened with O_NOFOLLOW, not on the xattr call. It also needs
//     /proc mounted.
//   - Linux refuses user.* xattrs on symlinks (EPERM); trusted.* and security.*
//     work with privilege.
package xattr

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// xattrArgs is the kernel's struct xattr_args (include/uapi/linux/xattr.h), which
// getxattrat(2) and setxattrat(2) take with its size, so that the struct can grow.
type xattrArgs struct {
	Value uint64 // address of the value buffer
	Size  uint32 // its length
	Flags uint32 // XATTR_CREATE/XATTR_REPLACE for setxattrat; 0 for getxattrat
}

// firstSize is the buffer a first Get or List tries; most values and lists fit,
// and a bigger one costs one more call (ERANGE, then a size probe).
const firstSize = 256

// maxTries bounds the ERANGE loop: each round learns the current size, so only
// an xattr that keeps growing under us can exhaust it.
const maxTries = 8

// noAt is set once the kernel answered ENOSYS to a *xattrat call, so that a
// process on an old kernel pays the failed call once, not once per xattr.
var noAt atomic.Bool

// backend is one way of reaching xattrs by (dirfd, path): the *xattrat calls, or
// the path calls through /proc. Each method is one call: no buffer growth;
// errors are *os.PathError.
type backend interface {
	list(dirfd int, path string, dest []byte) (int, error)
	get(dirfd int, path, name string, dest []byte) (int, error)
	set(dirfd int, path, name string, value []byte, flags int) error
	remove(dirfd int, path, name string) error
}

// List returns the names of the xattrs of path below dirfd ("" is dirfd itself).
func List(dirfd int, path string) ([]string, error) {
	var names []string
	err := run(dirfd, path, func(b backend) error {
		var err error
		names, err = list(b, dirfd, path)
		return err
	})
	return names, err
}

// Get returns the value of xattr name of path below dirfd. A missing xattr is
// ENODATA, wrapped in *os.PathError.
func Get(dirfd int, path, name string) ([]byte, error) {
	var v []byte
	err := run(dirfd, path, func(b backend) error {
		var err error
		v, err = get(b, dirfd, path, name)
		return err
	})
	return v, err
}

// Set writes xattr name=value on path below dirfd with setxattr(2) flags
// (XATTR_CREATE, XATTR_REPLACE).
func Set(dirfd int, path, name string, value []byte, flags int) error {
	return run(dirfd, path, func(b backend) error {
		return b.set(dirfd, path, name, value, flags)
	})
}

// Remove deletes xattr name of path below dirfd.
func Remove(dirfd int, path, name string) error {
	return run(dirfd, path, func(b backend) error {
		return b.remove(dirfd, path, name)
	})
}

// run calls op with the *xattrat backend, and again through /proc when the
// kernel lacks the calls or refuses an O_PATH dirfd for path "".
func run(dirfd int, path string, op func(backend) error) error {
	if noAt.Load() {
		return op(procCalls{})
	}
	err := op(atCalls{})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOSYS):
		noAt.Store(true)
		return op(procCalls{})
	case path == "" && errors.Is(err, unix.EBADF) && isOPath(dirfd):
		return op(procCalls{})
	}
	return err
}

// isOPath reports whether fd is an open O_PATH descriptor; a closed one keeps
// its EBADF.
func isOPath(fd int) bool {
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	return err == nil && fl&unix.O_PATH != 0
}

// list reads the name list, growing the buffer while the kernel says ERANGE.
func list(b backend, dirfd int, path string) ([]string, error) {
	buf, err := grow(func(dest []byte) (int, error) { return b.list(dirfd, path, dest) })
	if err != nil {
		return nil, err
	}
	var names []string
	for _, n := range bytes.Split(buf, []byte{0}) {
		if len(n) > 0 {
			names = append(names, string(n))
		}
	}
	return names, nil
}

// get reads one value, growing the buffer while the kernel says ERANGE.
func get(b backend, dirfd int, path, name string) ([]byte, error) {
	return grow(func(dest []byte) (int, error) { return b.get(dirfd, path, name, dest) })
}

// grow calls read with a buffer until it fits: on ERANGE it asks for the size
// with an empty buffer and tries again, since the value may change in between.
func grow(read func(dest []byte) (int, error)) ([]byte, error) {
	buf := make([]byte, firstSize)
	for try := 0; ; try++ {
		n, err := read(buf)
		if err == nil {
			return buf[:n:n], nil
		}
		if !errors.Is(err, unix.ERANGE) || try == maxTries {
			return nil, err
		}
		size, err := read(nil)
		if err != nil {
			return nil, err
		}
		if size > len(buf) {
			buf = make([]byte, size)
		}
	}
}

// atFlags are the at_flags of a *xattrat call on path: never follow the last
// component, and let "" name dirfd itself.
func atFlags(path string) int {
	if path == "" {
		return unix.AT_SYMLINK_NOFOLLOW | unix.AT_EMPTY_PATH
	}
	return unix.AT_SYMLINK_NOFOLLOW
}

// atCalls are the Linux 6.13 calls:
//
//	setxattrat(int dfd, const char *path, unsigned int at_flags, const char *name, const struct xattr_args *args, size_t size)
//	getxattrat(int dfd, const char *path, unsigned int at_flags, const char *name, struct xattr_args *args, size_t size)
//	listxattrat(int dfd, const char *path, unsigned int at_flags, char *list, size_t size)
//	removexattrat(int dfd, const char *path, unsigned int at_flags, const char *name)
type atCalls struct{}

func (atCalls) list(dirfd int, path string, dest []byte) (int, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return 0, &os.PathError{Op: "listxattrat", Path: path, Err: err}
	}
	var d unsafe.Pointer
	if len(dest) > 0 {
		d = unsafe.Pointer(&dest[0])
	}
	for {
		r, _, e := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(atFlags(path)),
			uintptr(d), uintptr(len(dest)), 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, &os.PathError{Op: "listxattrat", Path: path, Err: e}
		}
		return int(r), nil
	}
}

func (atCalls) get(dirfd int, path, name string, dest []byte) (int, error) {
	p, n, err := cStrings(path, name)
	if err != nil {
		return 0, &os.PathError{Op: "getxattrat", Path: path, Err: err}
	}
	args := xattrArgs{Size: uint32(len(dest))}
	// The kernel writes through an address inside args, where the compiler's
	// rule for pointers in syscall arguments does not reach: pin the buffer so
	// that it lives on the heap and stays put until the call returns.
	var pin runtime.Pinner
	defer pin.Unpin()
	if len(dest) > 0 {
		pin.Pin(&dest[0])
		args.Value = uint64(uintptr(unsafe.Pointer(&dest[0])))
	}
	for {
		r, _, e := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(atFlags(path)),
			uintptr(unsafe.Pointer(n)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, &os.PathError{Op: "getxattrat", Path: path, Err: e}
		}
		return int(r), nil
	}
}

func (atCalls) set(dirfd int, path, name string, value []byte, flags int) error {
	p, n, err := cStrings(path, name)
	if err != nil {
		return &os.PathError{Op: "setxattrat", Path: path, Err: err}
	}
	args := xattrArgs{Size: uint32(len(value)), Flags: uint32(flags)}
	var pin runtime.Pinner // see get
	defer pin.Unpin()
	if len(value) > 0 {
		pin.Pin(&value[0])
		args.Value = uint64(uintptr(unsafe.Pointer(&value[0])))
	}
	for {
		_, _, e := unix.Syscall6(unix.SYS_SETXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(atFlags(path)),
			uintptr(unsafe.Pointer(n)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return &os.PathError{Op: "setxattrat", Path: path, Err: e}
		}
		return nil
	}
}

func (atCalls) remove(dirfd int, path, name string) error {
	p, n, err := cStrings(path, name)
	if err != nil {
		return &os.PathError{Op: "removexattrat", Path: path, Err: err}
	}
	for {
		_, _, e := unix.Syscall6(unix.SYS_REMOVEXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(atFlags(path)),
			uintptr(unsafe.Pointer(n)), 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return &os.PathError{Op: "removexattrat", Path: path, Err: e}
		}
		return nil
	}
}

// cStrings converts a path and an xattr name to C strings (EINVAL for a NUL).
func cStrings(path, name string) (*byte, *byte, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return nil, nil, err
	}
	n, err := unix.BytePtrFromString(name)
	if err != nil {
		return nil, nil, err
	}
	return p, n, nil
}

// procCalls reach the file through an O_PATH|O_NOFOLLOW descriptor and its
// /proc/self/fd link, with the calls that follow that link (see the package
// doc for why not the l* calls).
type procCalls struct{}

// at runs op on the /proc/self/fd path of path below dirfd. opName names the
// xattr call in errors.
func (procCalls) at(dirfd int, path, opName string, op func(proc string) error) error {
	fd := dirfd
	if path != "" {
		var err error
		for {
			fd, err = unix.Openat(dirfd, path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if !errors.Is(err, unix.EINTR) {
				break
			}
		}
		if err != nil {
			return &os.PathError{Op: "openat", Path: path, Err: err}
		}
		defer unix.Close(fd)
	}
	for {
		err := op("/proc/self/fd/" + strconv.Itoa(fd))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &os.PathError{Op: opName, Path: path, Err: err}
		}
		return nil
	}
}

func (c procCalls) list(dirfd int, path string, dest []byte) (int, error) {
	var n int
	err := c.at(dirfd, path, "listxattr", func(proc string) error {
		var err error
		n, err = unix.Listxattr(proc, dest)
		return err
	})
	return n, err
}

func (c procCalls) get(dirfd int, path, name string, dest []byte) (int, error) {
	var n int
	err := c.at(dirfd, path, "getxattr", func(proc string) error {
		var err error
		n, err = unix.Getxattr(proc, name, dest)
		return err
	})
	return n, err
}

func (c procCalls) set(dirfd int, path, name string, value []byte, flags int) error {
	return c.at(dirfd, path, "setxattr", func(proc string) error {
		return unix.Setxattr(proc, name, value, flags)
	})
}

func (c procCalls) remove(dirfd int, path, name string) error {
	return c.at(dirfd, path, "removexattr", func(proc string) error {
		return unix.Removexattr(proc, name)
	})
}
