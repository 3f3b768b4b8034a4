// Package beneath opens paths inside a directory through its file descriptor, so
// that a layer's files are reached without gluing the layer's own path in front of
// the name, and never through a symlink.
//
// Every call resolves with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS): no
// component may be a symlink or "..", so a hostile layer cannot lead strata out of
// itself, and a relative path keeps the full PATH_MAX for itself, whatever the
// length of the layer's path. A relative path longer than PATH_MAX is walked in
// pieces, each opened from the directory the previous one reached.
package beneath

import (
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// maxChunk is the longest path handed to one openat2 call: PATH_MAX less the NUL.
const maxChunk = unix.PathMax - 1

const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// Open opens rel, a "/"-separated path relative to the directory dirfd, with
// open(2) flags and mode. rel "" or "." opens dirfd's directory itself. A symlink
// as the last component is refused with ELOOP unless flags hold O_PATH|O_NOFOLLOW,
// which return the link itself. Errors are *os.PathError naming rel.
func Open(dirfd int, rel string, flags int, mode uint32) (int, error) {
	if rel == "" {
		rel = "."
	}
	flags |= unix.O_CLOEXEC
	if len(rel) <= maxChunk {
		return openat2(dirfd, rel, flags, mode)
	}
	// Too long for one call: open the leading directories piece by piece.
	cur, owned := dirfd, false
	rest := rel
	for len(rest) > maxChunk {
		cut := strings.LastIndexByte(rest[:maxChunk], '/')
		if cut <= 0 {
			if owned {
				unix.Close(cur)
			}
			return -1, &os.PathError{Op: "openat2", Path: rel, Err: unix.ENAMETOOLONG}
		}
		next, err := openat2(cur, rest[:cut], unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if owned {
			unix.Close(cur)
		}
		if err != nil {
			return -1, err
		}
		cur, owned = next, true
		rest = rest[cut+1:]
	}
	fd, err := openat2(cur, rest, flags, mode)
	if owned {
		unix.Close(cur)
	}
	return fd, err
}

// OpenDir opens the directory rel below dirfd as an O_PATH descriptor, the handle
// the *at() calls take.
func OpenDir(dirfd int, rel string) (int, error) {
	return Open(dirfd, rel, unix.O_PATH|unix.O_DIRECTORY, 0)
}

func openat2(dirfd int, path string, flags int, mode uint32) (int, error) {
	how := unix.OpenHow{Flags: uint64(flags), Mode: uint64(mode), Resolve: resolve}
	for try := 0; ; try++ {
		fd, err := unix.Openat2(dirfd, path, &how)
		if (err == unix.EINTR || err == unix.EAGAIN) && try < 64 {
			// EAGAIN: a rename somewhere raced the RESOLVE_BENEATH check.
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "openat2", Path: path, Err: err}
		}
		return fd, nil
	}
}

// Split cuts rel into its directory and last name: "a/b/c" is "a/b" and "c",
// "c" is "" and "c".
func Split(rel string) (dir, name string) {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return "", rel
	}
	return rel[:i], rel[i+1:]
}

// Join joins a directory path relative to a root and a name; "" is the root.
func Join(dir, name string) string {
	if dir == "" || dir == "." {
		return name
	}
	return dir + "/" + name
}
