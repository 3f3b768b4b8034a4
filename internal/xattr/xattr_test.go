package xattr

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", filepath.Join(dir, "l")); err != nil {
		t.Fatal(err)
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)

	big := bytes.Repeat([]byte("x"), 64<<10-1)
	for _, tc := range []struct {
		name, path, attr string
		value            []byte
	}{
		{"file", "f", "user.a", []byte("hello")},
		{"empty value", "f", "user.empty", nil},
		{"large value grows the buffer", "f", "user.big", big},
		{"the directory itself", "", "user.dir", []byte("d")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := Set(dfd, tc.path, tc.attr, tc.value, 0); err != nil {
				if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOSPC) {
					t.Skipf("filesystem refuses the value: %v", err)
				}
				t.Fatal(err)
			}
			got, err := Get(dfd, tc.path, tc.attr)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.value) {
				t.Errorf("got %d bytes, want %d", len(got), len(tc.value))
			}
			names, err := List(dfd, tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(names, tc.attr) {
				t.Errorf("List = %v, want it to hold %s", names, tc.attr)
			}
			if err := Remove(dfd, tc.path, tc.attr); err != nil {
				t.Fatal(err)
			}
			if _, err := Get(dfd, tc.path, tc.attr); !errors.Is(err, unix.ENODATA) {
				t.Errorf("after Remove: got %v, want ENODATA", err)
			}
		})
	}

	t.Run("symlink is not followed", func(t *testing.T) {
		if err := Set(dfd, "f", "user.target", []byte("t"), 0); err != nil {
			t.Fatal(err)
		}
		if _, err := Get(dfd, "l", "user.target"); !errors.Is(err, unix.ENODATA) {
			t.Errorf("Get through symlink: got %v, want ENODATA", err)
		}
		if err := Set(dfd, "l", "user.x", []byte("1"), 0); !errors.Is(err, unix.EPERM) {
			t.Errorf("user.* on a symlink: got %v, want EPERM", err)
		}
		if os.Geteuid() == 0 {
			if err := Set(dfd, "l", "trusted.x", []byte("1"), 0); err != nil {
				t.Errorf("trusted.* on a symlink as root: %v", err)
			}
		}
	})
	t.Run("missing", func(t *testing.T) {
		if _, err := Get(dfd, "f", "user.nope"); !errors.Is(err, unix.ENODATA) {
			t.Errorf("got %v, want ENODATA", err)
		}
	})
	t.Run("create flag", func(t *testing.T) {
		if err := Set(dfd, "f", "user.c", []byte("1"), 0); err != nil {
			t.Fatal(err)
		}
		if err := Set(dfd, "f", "user.c", []byte("2"), unix.XATTR_CREATE); !errors.Is(err, unix.EEXIST) {
			t.Errorf("XATTR_CREATE on existing: got %v, want EEXIST", err)
		}
	})
}
