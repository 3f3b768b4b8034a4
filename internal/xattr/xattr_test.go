package xattr

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// backends are both ways to the xattrs; the public functions use the first and
// fall back to the second, which a 6.13+ kernel would otherwise never exercise.
var backends = []struct {
	name string
	b    backend
	op   string // the Op of a failed get
}{
	{"xattrat", atCalls{}, "getxattrat"},
	{"proc", procCalls{}, "getxattr"},
}

// fixture makes a directory with a file "f", a directory "d" and a symlink
// "l" -> "f", and returns it with an O_PATH descriptor of it.
func fixture(t *testing.T) (dir string, dirfd int) {
	t.Helper()
	dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", filepath.Join(dir, "l")); err != nil {
		t.Fatal(err)
	}
	return dir, openFd(t, dir, unix.O_PATH|unix.O_DIRECTORY)
}

func openFd(t *testing.T, path string, flags int) int {
	t.Helper()
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(fd) })
	return fd
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("trusted.* xattrs need CAP_SYS_ADMIN")
	}
}

// mountTmpfs mounts a tmpfs, whose xattr values may reach the kernel's 64 KiB
// limit (ext4 without ea_inode stops at a block).
func mountTmpfs(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

func TestRoundTrip(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			dir, dirfd := fixture(t)
			rdfd := openFd(t, filepath.Join(dir, "d"), unix.O_RDONLY|unix.O_DIRECTORY)
			pathfd := openFd(t, filepath.Join(dir, "d"), unix.O_PATH|unix.O_DIRECTORY)
			lnkfd := openFd(t, filepath.Join(dir, "l"), unix.O_PATH|unix.O_NOFOLLOW)
			for _, tc := range []struct {
				name  string
				dirfd int
				path  string
				attr  string
				root  bool
			}{
				{"file", dirfd, "f", "user.a", false},
				{"dir", dirfd, "d", "user.a", false},
				{"symlink trusted", dirfd, "l", "trusted.a", true},
				{"empty path, O_RDONLY dirfd", rdfd, "", "user.e", false},
				{"empty path, O_PATH dirfd", pathfd, "", "user.p", false},
				{"empty path, O_PATH symlink", lnkfd, "", "trusted.p", true},
				{"nested", dirfd, "d/../f", "user.n", false},
			} {
				t.Run(tc.name, func(t *testing.T) {
					if tc.root {
						requireRoot(t)
					}
					val := []byte("value of " + tc.name)
					if err := be.b.set(tc.dirfd, tc.path, tc.attr, val, 0); err != nil {
						if tc.path == "" && be.name == "xattrat" && errors.Is(err, unix.EBADF) && isOPath(tc.dirfd) {
							t.Skip("the kernel refuses O_PATH with AT_EMPTY_PATH; the public API falls back")
						}
						t.Fatalf("set: %v", err)
					}
					got, err := get(be.b, tc.dirfd, tc.path, tc.attr)
					if err != nil || !bytes.Equal(got, val) {
						t.Fatalf("get: got %q, %v, want %q", got, err, val)
					}
					names, err := list(be.b, tc.dirfd, tc.path)
					if err != nil || !slices.Contains(names, tc.attr) {
						t.Fatalf("list: got %q, %v, want %s in it", names, err, tc.attr)
					}
					if err := be.b.remove(tc.dirfd, tc.path, tc.attr); err != nil {
						t.Fatalf("remove: %v", err)
					}
					if _, err := get(be.b, tc.dirfd, tc.path, tc.attr); !errors.Is(err, unix.ENODATA) {
						t.Fatalf("get after remove: got %v, want ENODATA", err)
					}
				})
			}
		})
	}
}

// TestPublic checks the exported calls, including the fallback run() takes for
// an O_PATH dirfd with path "".
func TestPublic(t *testing.T) {
	dir, dirfd := fixture(t)
	pathfd := openFd(t, filepath.Join(dir, "f"), unix.O_PATH)
	for _, tc := range []struct {
		name  string
		dirfd int
		path  string
	}{
		{"below dirfd", dirfd, "f"},
		{"dirfd itself, O_PATH", dirfd, ""},
		{"file O_PATH fd", pathfd, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := Set(tc.dirfd, tc.path, "user.pub", []byte("v"), unix.XATTR_CREATE); err != nil {
				t.Fatalf("Set: %v", err)
			}
			if err := Set(tc.dirfd, tc.path, "user.pub", []byte("w"), unix.XATTR_CREATE); !errors.Is(err, unix.EEXIST) {
				t.Errorf("Set XATTR_CREATE over an existing xattr: got %v, want EEXIST", err)
			}
			if err := Set(tc.dirfd, tc.path, "user.none", []byte("w"), unix.XATTR_REPLACE); !errors.Is(err, unix.ENODATA) {
				t.Errorf("Set XATTR_REPLACE of a missing xattr: got %v, want ENODATA", err)
			}
			if v, err := Get(tc.dirfd, tc.path, "user.pub"); err != nil || string(v) != "v" {
				t.Errorf("Get: got %q, %v, want \"v\"", v, err)
			}
			if names, err := List(tc.dirfd, tc.path); err != nil || !slices.Contains(names, "user.pub") {
				t.Errorf("List: got %q, %v", names, err)
			}
			if err := Remove(tc.dirfd, tc.path, "user.pub"); err != nil {
				t.Errorf("Remove: %v", err)
			}
			if err := Remove(tc.dirfd, tc.path, "user.pub"); !errors.Is(err, unix.ENODATA) {
				t.Errorf("Remove again: got %v, want ENODATA", err)
			}
		})
	}
	// An empty value is a value.
	if err := Set(dirfd, "f", "user.empty", nil, 0); err != nil {
		t.Fatal(err)
	}
	if v, err := Get(dirfd, "f", "user.empty"); err != nil || len(v) != 0 {
		t.Errorf("empty value: got %q, %v", v, err)
	}
	// A closed descriptor stays EBADF rather than wandering into /proc.
	fd := openFd(t, dir, unix.O_PATH)
	_ = unix.Close(fd)
	if _, err := Get(fd, "", "user.x"); !errors.Is(err, unix.EBADF) {
		t.Errorf("closed fd: got %v, want EBADF", err)
	}
}

func TestErrors(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			dir, dirfd := fixture(t)
			_, err := get(be.b, dirfd, "f", "user.missing")
			var pe *os.PathError
			if !errors.As(err, &pe) || !errors.Is(err, unix.ENODATA) {
				t.Fatalf("missing xattr: got %v, want *os.PathError with ENODATA", err)
			}
			if pe.Op != be.op || pe.Path != "f" {
				t.Errorf("got Op %q Path %q, want %q %q", pe.Op, pe.Path, be.op, "f")
			}
			if _, err := get(be.b, dirfd, "nothere", "user.a"); !errors.Is(err, unix.ENOENT) {
				t.Errorf("missing file: got %v, want ENOENT", err)
			}

			// user.* is not allowed on a symlink; and the call must not have
			// gone through to the target.
			if err := be.b.set(dirfd, "l", "user.x", []byte("v"), 0); !errors.Is(err, unix.EPERM) {
				t.Errorf("user.* on a symlink: got %v, want EPERM", err)
			}
			if v, err := unix.Getxattr(filepath.Join(dir, "f"), "user.x", nil); !errors.Is(err, unix.ENODATA) {
				t.Errorf("symlink target got the xattr: %d, %v", v, err)
			}
		})
	}
}

// TestNoFollow checks that trusted.* set on a symlink lands on the link, never
// on its target, by both routes.
func TestNoFollow(t *testing.T) {
	requireRoot(t)
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			dir, dirfd := fixture(t)
			if err := be.b.set(dirfd, "l", "trusted.link", []byte("L"), 0); err != nil {
				t.Fatal(err)
			}
			if _, err := unix.Getxattr(filepath.Join(dir, "f"), "trusted.link", nil); !errors.Is(err, unix.ENODATA) {
				t.Errorf("target: got %v, want ENODATA", err)
			}
			buf := make([]byte, 8)
			n, err := unix.Lgetxattr(filepath.Join(dir, "l"), "trusted.link", buf)
			if err != nil || string(buf[:n]) != "L" {
				t.Errorf("link: got %q, %v, want \"L\"", buf[:max(n, 0)], err)
			}
		})
	}
}

// TestGrow stores a value of the kernel's maximum size (64 KiB) and a list longer
// than the first buffer, so both must grow after ERANGE.
func TestGrow(t *testing.T) {
	mnt := mountTmpfs(t)
	if err := os.WriteFile(filepath.Join(mnt, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	dirfd := openFd(t, mnt, unix.O_PATH|unix.O_DIRECTORY)
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16)
	var want []string
	for i := range 40 {
		want = append(want, "user."+strings.Repeat("n", 20)+string(rune('A'+i)))
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			if err := be.b.set(dirfd, "f", "user.big", big, 0); err != nil {
				t.Fatal(err)
			}
			got, err := get(be.b, dirfd, "f", "user.big")
			if err != nil || !bytes.Equal(got, big) {
				t.Fatalf("get: got %d bytes, %v, want %d bytes", len(got), err, len(big))
			}
			if _, err := be.b.get(dirfd, "f", "user.big", make([]byte, 10)); !errors.Is(err, unix.ERANGE) {
				t.Errorf("short buffer: got %v, want ERANGE", err)
			}
			for _, n := range want {
				if err := be.b.set(dirfd, "f", n, []byte("x"), 0); err != nil {
					t.Fatal(err)
				}
			}
			names, err := list(be.b, dirfd, "f")
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range append(want, "user.big") {
				if !slices.Contains(names, n) {
					t.Errorf("list: %s missing from %q", n, names)
				}
			}
			for _, n := range append(want, "user.big") {
				if err := be.b.remove(dirfd, "f", n); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
