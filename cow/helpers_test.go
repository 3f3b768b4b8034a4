package cow

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/xattr"
	"github.com/strata-fs/strata/whiteout"
)

// requireRoot skips a test that needs CAP_SYS_ADMIN (trusted.* xattrs, mount)
// or CAP_MKNOD and CAP_CHOWN.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
}

// env is one union's worth of directories under a test's temp dir.
type env struct {
	base, lower, upper, workDir string
	lowerFd                     int // O_PATH descriptor of lower
	u                           *Upper
}

// newEnv makes lower, upper and work directories and opens the upper. fill, if
// not nil, populates the lower first; the lower must be the same at the end of
// the test (checked in a cleanup).
func newEnv(t *testing.T, f whiteout.Format, fill func(lower string)) *env {
	t.Helper()
	base := t.TempDir()
	e := &env{base: base, lower: filepath.Join(base, "lower"), upper: filepath.Join(base, "upper"), workDir: filepath.Join(base, "work")}
	for _, d := range []string{e.lower, e.upper, e.workDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if fill != nil {
		fill(e.lower)
	}
	e.lowerFd = openPath(t, e.lower)
	u, err := Open(e.upper, e.workDir, f, true)
	if err != nil {
		t.Fatal(err)
	}
	e.u = u
	t.Cleanup(func() {
		if err := u.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	keepUnchanged(t, e.lower)
	t.Cleanup(func() { e.checkWorkEmpty(t) })
	return e
}

func openPath(t testing.TB, path string) int {
	t.Helper()
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(fd) })
	return fd
}

// checkWorkEmpty fails the test if a change left anything in work/work.
func (e *env) checkWorkEmpty(t *testing.T) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.workDir, "work"))
	if err != nil {
		t.Errorf("read work: %v", err)
		return
	}
	for _, ent := range ents {
		t.Errorf("left in work: %s", ent.Name())
	}
}

// keepUnchanged records a digest of the tree at dir now and checks, when the test
// ends, that it is the same.
func keepUnchanged(t *testing.T, dir string) {
	t.Helper()
	before := treeSum(t, dir)
	t.Cleanup(func() {
		after := treeSum(t, dir)
		if before != after {
			t.Errorf("tree %s changed:\nbefore:\n%s\nafter:\n%s", dir, before, after)
		}
	})
}

// treeSum describes every entry below dir: type, mode, owner, size, device,
// times (atime too, except for symlinks: readlink(2) touches it, as overlayfs's
// copy-up does), ctime (so that any chown, chmod or setxattr shows), data of
// regular files by extent, link targets and xattrs. It walks with descriptors, so
// that paths longer than PATH_MAX work, and reads with O_NOATIME, so that taking
// the digest changes nothing.
func treeSum(t testing.TB, dir string) string {
	t.Helper()
	var b strings.Builder
	root, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(root)
	var walk func(dirfd int, name, rel string)
	walk = func(dirfd int, name, rel string) {
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%q mode=%o uid=%d gid=%d size=%d rdev=%d mtime=%d ctime=%d", rel, st.Mode, st.Uid, st.Gid, st.Size, st.Rdev, st.Mtim.Nano(), st.Ctim.Nano())
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			fmt.Fprintf(&b, " atime=%d", st.Atim.Nano())
		}
		names, err := xattr.List(dirfd, name)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(names)
		for _, n := range names {
			v, err := xattr.Get(dirfd, name, n)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, " %s=%x", n, v)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOATIME|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, " data=%s", extentsFd(t, fd))
			_ = unix.Close(fd) // read-only
		case unix.S_IFLNK:
			buf := make([]byte, unix.PathMax)
			n, err := unix.Readlinkat(dirfd, name, buf)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, " -> %q", buf[:n])
		}
		b.WriteByte('\n')
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOATIME|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			f := os.NewFile(uintptr(fd), rel)
			defer f.Close()
			names, err := f.Readdirnames(-1)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(names)
			for _, n := range names {
				walk(fd, n, rel+"/"+n)
			}
		}
	}
	walk(root, ".", ".")
	return b.String()
}

// extents digests the data extents of the file at p (offset and hash of each),
// so that a 3 GiB sparse file costs only its data.
func extents(t testing.TB, p string) string {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	return extentsFd(t, fd)
}

func extentsFd(t testing.TB, fd int) string {
	t.Helper()
	var b strings.Builder
	for off := int64(0); ; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		buf := make([]byte, 1<<20)
		for o := data; o < hole; {
			n, err := unix.Pread(fd, buf[:min(int64(len(buf)), hole-o)], o)
			if err != nil || n == 0 {
				t.Fatalf("pread at %d: %d, %v", o, n, err)
			}
			h.Write(buf[:n])
			o += int64(n)
		}
		fmt.Fprintf(&b, "[%d+%d %s]", data, hole-data, hex.EncodeToString(h.Sum(nil))[:16])
		off = hole
	}
	return b.String()
}

// lstat stats path without following a symlink.
func lstat(t testing.TB, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// exists reports whether path names an entry, a dangling symlink included.
func exists(t testing.TB, path string) bool {
	t.Helper()
	var st unix.Stat_t
	err := unix.Lstat(path, &st)
	if errors.Is(err, unix.ENOENT) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// xattrs returns the xattrs of path (not followed) as name=value.
func xattrs(t testing.TB, path string) map[string]string {
	t.Helper()
	names, err := xattr.List(unix.AT_FDCWD, path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, n := range names {
		v, err := xattr.Get(unix.AT_FDCWD, path, n)
		if err != nil {
			t.Fatal(err)
		}
		m[n] = string(v)
	}
	return m
}

// setTimes sets atime and mtime of path (not followed) in nanoseconds.
func setTimes(t testing.TB, path string, atime, mtime int64) {
	t.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(atime), unix.NsecToTimespec(mtime)}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		t.Fatal(err)
	}
}

func setXattr(t testing.TB, path, name, value string) {
	t.Helper()
	if err := xattr.Set(unix.AT_FDCWD, path, name, []byte(value), 0); err != nil {
		t.Fatal(err)
	}
}

// mountTmpfs mounts a tmpfs of size bytes on a new temp dir.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func mustWrite(t testing.TB, path, data string, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), perm); err != nil {
		t.Fatal(err)
	}
}

func mustMkdir(t testing.TB, path string) {
	t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
}

// victim makes a directory outside every layer with one file in it, for the
// symlinks a hostile tree points there, and checks at the end that it survived.
func victim(t *testing.T) string {
	t.Helper()
	v := filepath.Join(t.TempDir(), "victim")
	mustMkdir(t, v)
	mustWrite(t, filepath.Join(v, "keep"), "precious", 0o644)
	keepUnchanged(t, v)
	return v
}
