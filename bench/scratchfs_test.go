package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestScratchNote makes two small ext4 file systems, one with a journal and
// one without, and wants the note on the second alone; a tmpfs gets none.
func TestScratchNote(t *testing.T) {
	if n := scratchNote("/dev/shm"); n != "" {
		t.Errorf("tmpfs: note %q, want none", n)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("needs mkfs.ext4")
	}
	for _, c := range []struct {
		name     string
		features string
		want     bool
	}{
		{"journal", "has_journal", false},
		{"no-journal", "^has_journal", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "mnt")
			if err := os.Mkdir(mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-O", c.features, img, "16M").CombinedOutput(); err != nil {
				t.Fatalf("mkfs.ext4: %v: %s", err, out)
			}
			if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
				t.Skipf("cannot mount a loop device here: %v: %s", err, out)
			}
			t.Cleanup(func() {
				if err := unix.Unmount(mnt, 0); err != nil {
					_ = unix.Unmount(mnt, unix.MNT_DETACH)
				}
			})
			note := scratchNote(mnt)
			if got := note != ""; got != c.want {
				t.Fatalf("note %q; want one: %v", note, c.want)
			}
			if dev, _ := blockDevName(mnt); c.want && !strings.Contains(note, dev) {
				t.Errorf("note %q does not name the device %s", note, dev)
			}

			// A journaled fixture's directory: a journaled ext4 made
			// inside the unjournaled one, the journaled one itself.
			var mounted []string
			root, note := journaledDir(context.Background(), mnt, 64<<20, func(m string) { mounted = append(mounted, m) })
			t.Cleanup(func() {
				for _, m := range mounted {
					if _, err := unmount(m); err != nil {
						t.Error(err)
					}
				}
			})
			if !c.want {
				if root != mnt || note != "" || len(mounted) != 0 {
					t.Fatalf("journaledDir on a journaled ext4 = %q, %q, mounted %v; want the dir itself", root, note, mounted)
				}
				return
			}
			if root == mnt || len(mounted) != 1 || mounted[0] != root {
				t.Fatalf("journaledDir = %q (%q), mounted %v; want a new mount", root, note, mounted)
			}
			if dev := unjournaledExt4(root); dev != "" || scratchNote(root) != "" {
				t.Errorf("%s is on %s, still without a journal", root, dev)
			}
			if err := os.WriteFile(filepath.Join(root, "f"), []byte("x"), 0o644); err != nil {
				t.Error(err)
			}
		})
	}
}
