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

// TestRootless mounts and writes through strata as an unprivileged user in a
// user namespace of its own, as rootless podman runs its mount program: no
// capability in the initial namespace, user.overlay.* xattrs instead of
// trusted.* ones.
func TestRootless(t *testing.T) {
	requireMount(t)
	for _, tool := range []string{"setpriv", "unshare"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	// Debian makes /dev/fuse 0666; some machines keep it root's. Open it to
	// others for the test, as it would be on a desktop.
	var st unix.Stat_t
	if err := unix.Stat("/dev/fuse", &st); err != nil {
		t.Skip("no /dev/fuse")
	}
	if st.Mode&0o006 != 0o006 {
		if err := unix.Chmod("/dev/fuse", 0o666); err != nil {
			t.Skipf("cannot open /dev/fuse to others: %v", err)
		}
		t.Cleanup(func() { _ = unix.Chmod("/dev/fuse", st.Mode&0o7777) }) // put back as found
	}
	const nobody = 65534
	d := t.TempDir()
	lower, up, wk, mnt := filepath.Join(d, "lower"), filepath.Join(d, "up"), filepath.Join(d, "wk"), filepath.Join(d, "mnt")
	for _, dir := range []string{lower, filepath.Join(lower, "d"), up, wk, mnt} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(lower, "a"), filepath.Join(lower, "d", "x")} {
		if err := os.WriteFile(f, []byte("lower"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The test binary's copy of strata, and every directory, must be
	// reachable by nobody; the layers are nobody's, as a rootless user's are.
	for _, p := range []string{filepath.Dir(d), d, filepath.Dir(binary)} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := filepath.Walk(d, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, nobody, nobody)
	}); err != nil {
		t.Fatal(err)
	}
	script := `set -e
"$STRATA" overlay -o "lowerdir=$L,upperdir=$U,workdir=$W" "$M"
trap '"$STRATA" umount "$M"' EXIT
test "$(cat "$M/a")" = lower
echo new > "$M/n"
rm "$M/a"
rm -r "$M/d"
mkdir "$M/d"
test -z "$(ls -A "$M/d")"
`
	c := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script)
	c.Env = append(os.Environ(), "STRATA="+binary, "L="+lower, "U="+up, "W="+wk, "M="+mnt)
	out, err := c.CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "unshare failed") {
			t.Skipf("no unprivileged user namespaces here: %s", out)
		}
		t.Fatalf("as nobody in a user namespace: %v\n%s", err, out)
	}
	var wst unix.Stat_t
	if err := unix.Lstat(filepath.Join(up, "a"), &wst); err != nil || !whiteout.IsOverlayWhiteout(wst.Mode, uint64(wst.Rdev)) {
		t.Errorf("upper a: mode %o (%v), want a kernel-overlay whiteout", wst.Mode, err)
	}
	buf := make([]byte, 8)
	if n, err := unix.Lgetxattr(filepath.Join(up, "d"), "user.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("upper d: user.overlay.opaque = %q (%v), want \"y\"", buf[:max(n, 0)], err)
	}
	if _, err := unix.Lgetxattr(filepath.Join(up, "d"), "trusted.overlay.opaque", buf); err == nil {
		t.Error("upper d: a trusted.overlay.opaque xattr, which an unprivileged mount cannot write")
	}
	if got, err := os.ReadFile(filepath.Join(up, "n")); err != nil || string(got) != "new\n" {
		t.Errorf("upper n = %q (%v)", got, err)
	}
}

// TestOverlayIDMapping: uidmapping and gidmapping show the owners stored in
// the layers as other ids, and store new owners back through the map;
// squash_to_root shows every file as root's.
func TestOverlayIDMapping(t *testing.T) {
	requireMount(t)
	base, app, mnt := stack(t)
	for name, owner := range map[string][2]int{"mapped": {5, 0}, "unmapped": {100, 100}} {
		p := filepath.Join(base, name)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, owner[0], owner[1]); err != nil {
			t.Fatal(err)
		}
	}
	d := filepath.Dir(mnt)
	up, wk := filepath.Join(d, "up"), filepath.Join(d, "wk")
	for _, dir := range []string{up, wk} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	owner := func(p string) [2]uint32 {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		return [2]uint32{st.Uid, st.Gid}
	}
	opts := "lowerdir=" + app + ":" + base + ",upperdir=" + up + ",workdir=" + wk +
		",uidmapping=0:1000:1:5:2000:10,gidmapping=0:3000:1"
	if code, out := run(t, alias(t, "fuse-overlayfs"), "-o", opts, mnt); code != 0 {
		t.Fatalf("mount: exit %d: %s", code, out)
	}
	for name, want := range map[string][2]uint32{"f": {1000, 3000}, "mapped": {2000, 3000}, "unmapped": {65534, 65534}} {
		if got := owner(filepath.Join(mnt, name)); got != want {
			t.Errorf("%s shows as %d:%d, want %d:%d", name, got[0], got[1], want[0], want[1])
		}
	}
	// chown to shown ids stores their stored ids.
	if err := os.Lchown(filepath.Join(mnt, "f"), 2003, 3000); err != nil {
		t.Fatal(err)
	}
	if got := owner(filepath.Join(mnt, "f")); got != [2]uint32{2003, 3000} {
		t.Errorf("f after chown 2003:3000 shows %v", got)
	}
	if got := owner(filepath.Join(up, "f")); got != [2]uint32{8, 0} {
		t.Errorf("f after chown 2003:3000 is stored as %v, want 8:0", got)
	}
	// The creator, root, has no stored id: stored as 65534, as fuse-overlayfs does.
	if err := os.WriteFile(filepath.Join(mnt, "new"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := owner(filepath.Join(up, "new")); got != [2]uint32{65534, 65534} {
		t.Errorf("new file stored as %v, want 65534:65534", got)
	}
	if code, _, stderr := strata(t, "umount", mnt); code != 0 {
		t.Fatalf("umount: %s", stderr)
	}
	waitMounted(t, mnt, false)

	if err := os.RemoveAll(wk); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(wk, 0o755); err != nil {
		t.Fatal(err)
	}
	opts = "lowerdir=" + app + ":" + base + ",upperdir=" + up + ",workdir=" + wk + ",squash_to_root"
	if code, out := run(t, alias(t, "fuse-overlayfs"), "-o", opts, mnt); code != 0 {
		t.Fatalf("mount squash_to_root: exit %d: %s", code, out)
	}
	for _, name := range []string{"f", "mapped", "unmapped", "new"} {
		if got := owner(filepath.Join(mnt, name)); got != [2]uint32{0, 0} {
			t.Errorf("squash_to_root: %s shows as %v, want 0:0", name, got)
		}
	}
	if code, _, stderr := strata(t, "umount", mnt); code != 0 {
		t.Fatalf("umount: %s", stderr)
	}
	waitMounted(t, mnt, false)
}
