// Package xattr reads and writes extended attributes of a file named relative to a
// directory descriptor, without following a symlink in the last component.
//
// Linux 6.13 added getxattrat(2) and friends; strata uses them so that a layer file
// is reached from the layer's directory descriptor like every other *at() call.
// On older kernels (ENOSYS) it falls back to the l*xattr calls on the
// /proc/self/fd path of an O_PATH descriptor of the file.
package xattr

// List returns the names of the xattrs of path below dirfd ("" is dirfd itself).
func List(dirfd int, path string) ([]string, error) { panic("TODO") }

// Get returns the value of xattr name of path below dirfd. A missing xattr is
// ENODATA, wrapped in *os.PathError.
func Get(dirfd int, path, name string) ([]byte, error) { panic("TODO") }

// Set writes xattr name=value on path below dirfd with setxattr(2) flags
// (XATTR_CREATE, XATTR_REPLACE).
func Set(dirfd int, path, name string, value []byte, flags int) error { panic("TODO") }

// Remove deletes xattr name of path below dirfd.
func Remove(dirfd int, path, name string) error { panic("TODO") }
