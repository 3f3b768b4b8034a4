package beneath_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/beneath"
)

// fixture is a root directory with a file, a subdirectory, and symlinks that
// lead out of it, inside it, and to its parent; beside the root lies a victim.
func fixture(t *testing.T) (rootfd int, root string) {
	t.Helper()
	base := t.TempDir()
	root = filepath.Join(base, "root")
	for _, d := range []string{root, filepath.Join(root, "dir"), filepath.Join(base, "victim")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(root, "dir", "file"), filepath.Join(base, "victim", "secret")} {
		if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	links := map[string]string{"out": "../victim", "abs": filepath.Join(base, "victim"), "in": "dir", "up": ".."}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd, root
}

func TestOpen(t *testing.T) {
	rootfd, _ := fixture(t)
	tests := []struct {
		rel     string
		flags   int
		wantErr error // nil: opens
	}{
		{"", unix.O_PATH | unix.O_DIRECTORY, nil},
		{".", unix.O_PATH | unix.O_DIRECTORY, nil},
		{"dir", unix.O_PATH | unix.O_DIRECTORY, nil},
		{"dir/file", unix.O_RDONLY, nil},
		{"dir/./file", unix.O_RDONLY, nil},
		{"missing", unix.O_RDONLY, unix.ENOENT},
		{"..", unix.O_PATH, unix.EXDEV},
		{"dir/../../victim/secret", unix.O_RDONLY, unix.EXDEV},
		{"/etc/passwd", unix.O_RDONLY, unix.EXDEV},
		{"out/secret", unix.O_RDONLY, unix.ELOOP},
		{"abs/secret", unix.O_RDONLY, unix.ELOOP},
		{"up/victim/secret", unix.O_RDONLY, unix.ELOOP},
		{"in/file", unix.O_RDONLY, unix.ELOOP}, // even a link that stays inside
		{"out", unix.O_RDONLY, unix.ELOOP},
		{"out", unix.O_PATH | unix.O_NOFOLLOW, nil}, // the link itself
	}
	for _, tt := range tests {
		t.Run(tt.rel, func(t *testing.T) {
			fd, err := beneath.Open(rootfd, tt.rel, tt.flags, 0)
			if err == nil {
				unix.Close(fd)
			}
			if !errors.Is(err, tt.wantErr) && !(tt.wantErr == nil && err == nil) {
				t.Fatalf("Open(%q) = %v, want %v", tt.rel, err, tt.wantErr)
			}
			var pe *os.PathError
			if err != nil && !errors.As(err, &pe) {
				t.Errorf("Open(%q) error %T, want *os.PathError", tt.rel, err)
			}
		})
	}
}

// TestOpenLongPath reaches a file below a path longer than PATH_MAX, which no
// single call could open, and refuses a symlink at any depth of it.
func TestOpenLongPath(t *testing.T) {
	rootfd, _ := fixture(t)
	comp := strings.Repeat("c", 250)
	dirfd, err := unix.Openat(rootfd, ".", unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for i := 0; i < 20; i++ { // about 5 KiB
		if err := unix.Mkdirat(dirfd, comp, 0o755); err != nil {
			t.Fatal(err)
		}
		next, err := unix.Openat(dirfd, comp, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(dirfd)
		dirfd = next
		parts = append(parts, comp)
	}
	fd, err := unix.Openat(dirfd, "deep", unix.O_CREAT|unix.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	if err := unix.Symlinkat("..", dirfd, "link"); err != nil {
		t.Fatal(err)
	}
	unix.Close(dirfd)

	rel := strings.Join(parts, "/")
	if len(rel) <= unix.PathMax {
		t.Fatalf("fixture path is %d bytes, want more than PATH_MAX", len(rel))
	}
	fd, err = beneath.Open(rootfd, rel+"/deep", unix.O_RDONLY, 0)
	if err != nil {
		t.Fatalf("open %d-byte path: %v", len(rel), err)
	}
	unix.Close(fd)
	if _, err := beneath.Open(rootfd, rel+"/link/deep", unix.O_RDONLY, 0); !errors.Is(err, unix.ELOOP) {
		t.Errorf("open through a symlink deep down: %v, want ELOOP", err)
	}
	if _, err := beneath.Open(rootfd, strings.Repeat("x", unix.PathMax+10), unix.O_RDONLY, 0); !errors.Is(err, unix.ENAMETOOLONG) {
		t.Errorf("a single name longer than PATH_MAX: %v, want ENAMETOOLONG", err)
	}
}

func TestSplitJoin(t *testing.T) {
	for _, tt := range []struct{ rel, dir, name string }{
		{"a/b/c", "a/b", "c"},
		{"c", "", "c"},
		{"", "", ""},
	} {
		dir, name := beneath.Split(tt.rel)
		if dir != tt.dir || name != tt.name {
			t.Errorf("Split(%q) = %q, %q; want %q, %q", tt.rel, dir, name, tt.dir, tt.name)
		}
		if tt.rel != "" {
			if got := beneath.Join(dir, name); got != tt.rel {
				t.Errorf("Join(Split(%q)) = %q", tt.rel, got)
			}
		}
	}
	if got := beneath.Join(".", "x"); got != "x" {
		t.Errorf(`Join(".", "x") = %q, want "x"`, got)
	}
}
