package test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/whiteout"
)

// TestFullDisk puts the upper and work directories on an 8 MiB tmpfs and fills
// it through the union: copy-ups and writes then fail with ENOSPC, the lower
// file still reads whole through the union, no part of a copy stays in the
// upper or the work directory, and once space is freed the same copy-up
// succeeds.
func TestFullDisk(t *testing.T) {
	requireRoot(t)
	const size = 4 << 20
	lowerData := bigContent(size)
	for _, f := range []whiteout.Format{whiteout.OCI, whiteout.Overlay} {
		t.Run(f.String(), func(t *testing.T) {
			s := newStack(t, 1, func(_ int, dir string) {
				applyFixture(t, dir, []fx{fBig("big", size), fBig("d/big2", size), fFile("small", "small")})
			})
			small := mountTmpfsSize(t, "8m")
			s.Upper, s.Work = filepath.Join(small, "upper"), filepath.Join(small, "work")
			for _, d := range []string{s.Upper, s.Work} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			mnt := mountStrata(t, s, f)
			p := func(rel string) string { return filepath.Join(mnt, rel) }

			// 5 MiB of new data leaves less room than a 4 MiB copy-up needs.
			if err := os.WriteFile(p("filler"), bigContent(5<<20), 0o644); err != nil {
				t.Fatalf("filler: %v", err)
			}
			wantENOSPC := func(what string, err error) {
				t.Helper()
				if !errors.Is(err, unix.ENOSPC) {
					t.Errorf("%s on a full upper: %v, want ENOSPC", what, err)
				}
			}
			_, err := os.OpenFile(p("big"), os.O_WRONLY, 0)
			wantENOSPC("open O_WRONLY (a copy-up)", err)
			wantENOSPC("chmod (a copy-up)", os.Chmod(p("big"), 0o600))
			wantENOSPC("rename (a copy-up)", os.Rename(p("big"), p("moved")))
			wantENOSPC("rename of a directory (a copy-up of its tree)", os.Rename(p("d"), p("d2")))
			err = os.WriteFile(p("new"), bigContent(4<<20), 0o644)
			wantENOSPC("write of a new file", err)
			if t.Failed() {
				t.FailNow()
			}

			// Nothing of the failed copies is left, and the union still shows
			// the lower files whole.
			checkNoCopy := func() {
				t.Helper()
				for _, rel := range []string{"big", "moved", "d/big2", "d2"} {
					if _, err := os.Lstat(filepath.Join(s.Upper, rel)); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("upper %s after ENOSPC: %v, want no such file", rel, err)
					}
				}
				if ents, err := os.ReadDir(filepath.Join(s.Work, "work")); err != nil || len(ents) > 0 {
					t.Errorf("work dir after ENOSPC: %d entries (%v), want none", len(ents), err)
				}
			}
			checkNoCopy()
			for _, rel := range []string{"big", "d/big2"} {
				got, err := os.ReadFile(p(rel))
				if err != nil || !bytes.Equal(got, lowerData) {
					t.Errorf("read %s after ENOSPC: %d bytes (%v), want the lower's %d", rel, len(got), err, size)
				}
			}
			for _, rel := range []string{"moved", "d2"} {
				if _, err := os.Lstat(p(rel)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s after a failed rename: %v, want no such file", rel, err)
				}
			}
			// Small changes still fit: a whiteout takes an inode, no block.
			if err := os.Remove(p("small")); err != nil {
				t.Errorf("unlink of a lower file on a full upper: %v", err)
			}

			// Free the space: the same copy-up now succeeds and keeps the
			// lower bytes around the write.
			if err := os.Remove(p("new")); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			if err := os.Remove(p("filler")); err != nil {
				t.Fatal(err)
			}
			fd, err := unix.Open(p("big"), unix.O_WRONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatalf("open O_WRONLY once space is free: %v", err)
			}
			if _, err := unix.Pwrite(fd, []byte("patched"), 1000); err != nil {
				t.Errorf("write after the copy-up: %v", err)
			}
			if err := unix.Close(fd); err != nil {
				t.Error(err)
			}
			want := bytes.Clone(lowerData)
			copy(want[1000:], "patched")
			if got, err := os.ReadFile(p("big")); err != nil || !bytes.Equal(got, want) {
				t.Errorf("big after the copy-up: %d bytes (%v), want the lower's with the patch", len(got), err)
			}
			if err := os.Rename(p("d"), p("d2")); err != nil {
				t.Errorf("rename of the directory once space is free: %v", err)
			}
		})
	}
}

// mountTmpfsSize mounts a tmpfs of the given size ("8m") on a new temp dir,
// unmounted when the test ends (after the union above it, registered later).
func mountTmpfsSize(t *testing.T, size string) string {
	t.Helper()
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
