// Package test holds strata's integration tests: they mount real unions (strata
// through FUSE, and kernel overlayfs as the reference) and check what processes
// see through them. They need root and /dev/fuse; without them they skip.
package test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/unionfs"
	"github.com/strata-fs/strata/whiteout"
)

// requireRoot skips t unless the test can mount: root and /dev/fuse.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

// stack is a fresh set of layer directories under one temp dir.
type stack struct {
	Lowers []string // top first
	Upper  string
	Work   string
}

// newStack makes n empty lower layers and an upper and a work dir under a fresh
// t.TempDir. fill, if not nil, is called with each lower dir, bottom layer first
// (index 0 is the bottom), to populate it.
func newStack(t testing.TB, n int, fill func(i int, dir string)) stack {
	t.Helper()
	base := t.TempDir()
	var s stack
	for i := 0; i < n; i++ {
		d := filepath.Join(base, "layer"+string(rune('0'+i)))
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if fill != nil {
			fill(i, d)
		}
		s.Lowers = append([]string{d}, s.Lowers...) // top first
	}
	s.Upper = filepath.Join(base, "upper")
	s.Work = filepath.Join(base, "work")
	for _, d := range []string{s.Upper, s.Work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// mountStrata mounts s with strata on a fresh directory and unmounts it when the
// test ends, pass or fail.
func mountStrata(t testing.TB, s stack, f whiteout.Format) string {
	t.Helper()
	requireRoot(t)
	guardLowers(t, s.Lowers)
	return mountConfig(t, unionfs.Config{Lowers: s.Lowers, Upper: s.Upper, Work: s.Work, Whiteout: f})
}

// mountConfig mounts the union cfg describes on a fresh directory and
// unmounts it when the test ends, pass or fail.
func mountConfig(t testing.TB, cfg unionfs.Config) string {
	t.Helper()
	mnt, _ := mountStrataServer(t, cfg)
	return mnt
}

// mountStrataServer mounts cfg like mountConfig and also returns the server.
func mountStrataServer(t testing.TB, cfg unionfs.Config) (string, *unionfs.Server) {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "merged")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	srv, err := unionfs.Mount(mnt, cfg)
	if err != nil {
		t.Fatalf("mount strata: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount strata %s: %v (detaching)", mnt, err)
			_ = unix.Unmount(mnt, unix.MNT_DETACH) // last resort: never leave a mount behind
		}
		srv.Wait()
	})
	return mnt, srv
}

// mountOverlay mounts s with kernel overlayfs, the reference, and unmounts it
// when the test ends.
func mountOverlay(t testing.TB, s stack) string {
	t.Helper()
	requireRoot(t)
	mnt := filepath.Join(t.TempDir(), "merged")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := "lowerdir=" + strings.Join(s.Lowers, ":")
	if s.Upper != "" {
		opts += ",upperdir=" + s.Upper + ",workdir=" + s.Work
	}
	if err := unix.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
		if errors.Is(err, unix.ENODEV) {
			t.Skip("no kernel overlayfs here")
		}
		t.Fatalf("mount overlay: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount overlay %s: %v (detaching)", mnt, err)
			_ = unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return mnt
}

// guardLowers holds strata to its first promise, that lower layers are never
// written. It takes a raw snapshot of every lower (content, mode, owner, mtime,
// ctime, inode number and every xattr; not atime, which reads may move) and
// compares it with a fresh one when the test ends. Call it before the mount:
// cleanups run last-registered first, so the check comes after the unmount,
// when nothing can still be in flight.
//
// Benchmarks are left out: their layers are big, and they check nothing.
func guardLowers(t testing.TB, lowers []string) {
	t.Helper()
	if _, ok := t.(*testing.B); ok {
		return
	}
	before := make([]tree, len(lowers))
	for i, l := range lowers {
		before[i] = snapshot(t, l, snapRaw)
	}
	t.Cleanup(func() {
		for i, l := range lowers {
			compareTrees(t, fmt.Sprintf("lower layer %s before and after the test", l), "before", before[i], "after", snapshot(t, l, snapRaw))
		}
	})
}
