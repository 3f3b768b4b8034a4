package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/whiteout"
)

// alias links name to the test binary and returns the link.
func alias(t *testing.T, name string) string {
	t.Helper()
	link := filepath.Join(t.TempDir(), name)
	if err := os.Symlink(binary, link); err != nil {
		t.Fatal(err)
	}
	return link
}

// run runs prog to its end with its stdout on a pipe that the test reads to
// its end: a mount program that left a daemon holding the pipe would hang here.
func run(t *testing.T, prog string, args ...string) (code int, out string) {
	t.Helper()
	c := exec.Command(prog, args...)
	var b bytes.Buffer
	c.Stdout, c.Stderr = &b, &b
	done := make(chan error, 1)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode(), b.String()
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, b.String()
	case <-time.After(20 * time.Second):
		_ = c.Process.Kill() // stuck: the test fails below
		t.Fatalf("%s %q did not return (its output still held open?)", prog, args)
	}
	return -1, ""
}

// TestOverlayCommandLine mounts as podman runs fuse-overlayfs: through a link
// named like it, with its options; the program returns once the union is
// ready, writes kernel-overlay whiteouts, and fusermount3 -u ends it.
func TestOverlayCommandLine(t *testing.T) {
	requireMount(t)
	base, app, mnt := stack(t)
	d := filepath.Dir(mnt)
	up, wk := filepath.Join(d, "up"), filepath.Join(d, "wk")
	for _, dir := range []string{up, wk} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	prog := alias(t, "strata-overlayfs")
	opts := "lowerdir=" + app + ":" + base + ",upperdir=" + up + ",workdir=" + wk + ",volatile,noatime,nodev,fsync=0"
	if code, out := run(t, prog, "-o", opts, mnt); code != 0 {
		t.Fatalf("strata-overlayfs: exit %d: %s", code, out)
	}
	pid := daemonPid(t, mnt)
	checkRead(t, mnt) // ready on return
	if err := os.Remove(filepath.Join(mnt, "f")); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(up, "f"), &st); err != nil || !whiteout.IsOverlayWhiteout(st.Mode, uint64(st.Rdev)) {
		t.Errorf("upper f: mode %o rdev %d (%v), want a kernel-overlay whiteout", st.Mode, st.Rdev, err)
	}
	unmount := exec.Command("fusermount3", "-u", mnt)
	if _, err := exec.LookPath("fusermount3"); err != nil {
		unmount = exec.Command("umount", mnt)
	}
	if out, err := unmount.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v: %s", unmount.Args, err, out)
	}
	waitMounted(t, mnt, false)
	if ws := waitExit(t, pid); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("daemon ended with %v, want exit 0", ws)
	}
}

// TestMountHelper runs strata as mount(8) runs mount.fuse.strata for
// "mount -t fuse.strata -o OPTIONS strata MOUNTPOINT".
func TestMountHelper(t *testing.T) {
	requireMount(t)
	base, app, mnt := stack(t)
	prog := alias(t, "mount.fuse.strata")
	if code, out := run(t, prog, "strata", mnt, "-o", "rw,nosuid,lowerdir="+app+":"+base); code != 0 {
		t.Fatalf("mount.fuse.strata: exit %d: %s", code, out)
	}
	checkRead(t, mnt)
	if err := os.WriteFile(filepath.Join(mnt, "new"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("create in a lowerdir-only union: %v, want EROFS", err)
	}
	if code, _, stderr := strata(t, "umount", mnt); code != 0 {
		t.Fatalf("umount: %d %s", code, stderr)
	}
	waitMounted(t, mnt, false)
}

// TestOverlayRefuses: bad input gets one line naming it, exit 2, and nothing
// is mounted.
func TestOverlayRefuses(t *testing.T) {
	requireMount(t)
	base, app, mnt := stack(t)
	prog := alias(t, "fuse-overlayfs")
	for opts, want := range map[string]string{
		"lowerdir=" + filepath.Join(base, "missing"):  "missing",
		"lowerdir=" + app + ",frobnicate":             "frobnicate",
		"lowerdir=" + app + ",uidmapping=0:1":         "uidmapping",
		"lowerdir=" + app + ",upperdir=" + base:       "work",
		"lowerdir=" + app + ",index=on,upperdir=/nop": "index",
	} {
		code, out := run(t, prog, "-o", opts, mnt)
		if code != 2 || !strings.Contains(out, want) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("-o %s: exit %d, output %q; want 2 and one line naming %q", opts, code, out, want)
		}
	}
	waitMounted(t, mnt, false)
	if code, out := run(t, prog, "--version"); code != 0 || !strings.Contains(out, "fuse-overlayfs") {
		t.Errorf("--version: %d %q", code, out)
	}
}
