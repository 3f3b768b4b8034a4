package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// overrideXattr is what xattr_permissions=2 names.
const overrideXattr = "user.fuseoverlayfs.override_stat"

// permLayers makes a lower layer for the xattr_permissions tests: owned (a
// file with an override), ownedDir (a directory with one), plain (a file
// without), sub/ (a directory without, for new entries), and an override on the
// layer's root, which fuse-overlayfs needs to read the others. It returns the
// lower, upper and work directories and the mount point.
func permLayers(t *testing.T) (lower, up, wk, mnt string) {
	t.Helper()
	_, lower, mnt = stack(t) // lower holds g, 0644 0:0, without an override
	d := filepath.Dir(mnt)
	// Others create files in the union in some tests: open the way to it.
	for _, p := range []string{filepath.Dir(d), d} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	up, wk = filepath.Join(d, "up"), filepath.Join(d, "wk")
	for _, dir := range []string{up, wk, filepath.Join(lower, "ownedDir"), filepath.Join(lower, "sub")} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"owned", "plain"} {
		if err := os.WriteFile(filepath.Join(lower, f), []byte(f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	setOverride(t, lower, "0:0:755")
	setOverride(t, filepath.Join(lower, "owned"), "5:6:4751")
	setOverride(t, filepath.Join(lower, "ownedDir"), "7:8:1770")
	return lower, up, wk, mnt
}

func setOverride(t *testing.T, path, v string) {
	t.Helper()
	if err := unix.Lsetxattr(path, overrideXattr, []byte(v), 0); err != nil {
		t.Fatalf("set %s on %s: %v", overrideXattr, path, err)
	}
}

// getOverride returns path's override xattr ("" without one).
func getOverride(t *testing.T, path string) string {
	t.Helper()
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(path, overrideXattr, buf)
	if errors.Is(err, unix.ENODATA) {
		return ""
	}
	if err != nil {
		t.Fatalf("get %s of %s: %v", overrideXattr, path, err)
	}
	return string(buf[:n])
}

// ownerMode is "UID:GID MODE" of path, MODE the permission bits in octal.
func ownerMode(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d:%d %o", st.Uid, st.Gid, st.Mode&0o7777)
}

// mountOverlay mounts with prog, a fuse-overlayfs command line, and returns
// the unmount, which also runs at the end of the test if not run before.
func mountOverlay(t *testing.T, prog, opts, mnt string) (unmount func()) {
	t.Helper()
	if code, out := run(t, prog, "-o", opts, mnt); code != 0 {
		t.Fatalf("%s -o %s: exit %d: %s", prog, opts, code, out)
	}
	var once sync.Once
	unmount = func() {
		once.Do(func() {
			if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
				t.Errorf("fusermount3 -u %s: %v: %s", mnt, err, out)
			}
			waitMounted(t, mnt, false)
		})
	}
	t.Cleanup(unmount)
	return unmount
}

// TestOverlayXattrPermissions: with xattr_permissions=2 the owner and mode of
// files come from user.fuseoverlayfs.override_stat; chown, chmod and creation
// through the union write it, never the disk's owner and mode; the xattr is
// not seen through the union.
func TestOverlayXattrPermissions(t *testing.T) {
	requireMount(t)
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("needs fusermount3")
	}
	lower, up, wk, mnt := permLayers(t)
	mountOverlay(t, alias(t, "fuse-overlayfs"), "lowerdir="+lower+",upperdir="+up+",workdir="+wk+",xattr_permissions=2", mnt)
	m := func(name string) string { return filepath.Join(mnt, name) }

	for name, want := range map[string]string{
		"owned": "5:6 4751", "ownedDir": "7:8 1770", "plain": "0:0 600", "g": "0:0 644", "": "0:0 755",
	} {
		if got := ownerMode(t, m(name)); got != want {
			t.Errorf("%q shows %s, want %s", name, got, want)
		}
	}
	if got := getOverride(t, up); got != "0:0:755" {
		t.Errorf("upper root's override %q, want 0:0:755 (its disk owner and mode)", got)
	}

	// chown and chmod: the override of the copy changes, the disk does not.
	if err := os.Lchown(m("owned"), 50, 60); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(m("plain"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(m("plain"), 70, -1); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(m("ownedDir"), 0o700); err != nil {
		t.Fatal(err)
	}
	// chown(2) clears set-user-ID (the kernel asks with the chown), so owned
	// keeps 0751.
	for name, want := range map[string][2]string{
		"owned":    {"50:60 751", "50:60:751"},
		"plain":    {"70:0 640", "70:0:640"},
		"ownedDir": {"7:8 700", "7:8:700"},
	} {
		if got := ownerMode(t, m(name)); got != want[0] {
			t.Errorf("%s after chown/chmod shows %s, want %s", name, got, want[0])
		}
		if got := getOverride(t, filepath.Join(up, name)); got != want[1] {
			t.Errorf("upper %s: override %q, want %q", name, got, want[1])
		}
		if got, was := ownerMode(t, filepath.Join(up, name)), ownerMode(t, filepath.Join(lower, name)); got != was {
			t.Errorf("upper %s: disk owner and mode %s, want the lower's %s", name, got, was)
		}
	}

	// New entries: the caller's owner and mode, in the xattr. A caller that
	// is not the daemon shows it: sub is everyone's through the union only.
	if err := os.Chmod(m("sub"), 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(m("newdir"), 0o750); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("setpriv", "--reuid=1234", "--regid=4321", "--clear-groups",
		"sh", "-c", "umask 022 && echo x > "+m("sub/new")+" && mkdir "+m("sub/dir")).CombinedOutput(); err != nil {
		t.Fatalf("create as 1234:4321: %v: %s", err, out)
	}
	for name, want := range map[string][2]string{
		"newdir":  {"0:0 750", "0:0:750"},
		"sub/new": {"1234:4321 644", "1234:4321:644"},
		"sub/dir": {"1234:4321 755", "1234:4321:755"},
	} {
		if got := ownerMode(t, m(name)); got != want[0] {
			t.Errorf("new %s shows %s, want %s", name, got, want[0])
		}
		if got := getOverride(t, filepath.Join(up, name)); got != want[1] {
			t.Errorf("upper %s: override %q, want %q", name, got, want[1])
		}
		if got := ownerMode(t, filepath.Join(up, name)); !strings.HasPrefix(got, "0:0 7") {
			t.Errorf("upper %s: disk owner and mode %s, want the daemon's with rwx", name, got)
		}
	}

	// Symlinks show and take what the disk says.
	if err := os.Symlink("g", m("link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(m("link"), 9, 9); err != nil {
		t.Fatal(err)
	}
	if got := ownerMode(t, filepath.Join(up, "link")); got != "9:9 777" {
		t.Errorf("upper link: %s, want a real chown to 9:9", got)
	}

	// The xattr is the union's: not listed, not readable, not writable.
	for _, name := range []string{"owned", "ownedDir", "sub/new", ""} {
		p := m(name)
		buf := make([]byte, 1024)
		n, err := unix.Llistxattr(p, buf)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(strings.Split(string(buf[:n]), "\x00"), overrideXattr) {
			t.Errorf("%q: listxattr shows %s", name, overrideXattr)
		}
		if _, err := unix.Lgetxattr(p, overrideXattr, buf); !errors.Is(err, unix.ENODATA) {
			t.Errorf("%q: getxattr %s: %v, want ENODATA", name, overrideXattr, err)
		}
		if err := unix.Lsetxattr(p, overrideXattr, []byte("1:1:777"), 0); !errors.Is(err, unix.EPERM) {
			t.Errorf("%q: setxattr %s: %v, want EPERM", name, overrideXattr, err)
		}
		if err := unix.Lremovexattr(p, overrideXattr); !errors.Is(err, unix.ENODATA) {
			t.Errorf("%q: removexattr %s: %v, want ENODATA", name, overrideXattr, err)
		}
	}
	if got := getOverride(t, filepath.Join(up, "owned")); got != "50:60:751" {
		t.Errorf("upper owned: override %q after the attempts through the union", got)
	}
}

// TestOverlayXattrPermissionsMapped: the override holds stored ids, which
// uidmapping and gidmapping show as the others.
func TestOverlayXattrPermissionsMapped(t *testing.T) {
	requireMount(t)
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("needs fusermount3")
	}
	lower, up, wk, mnt := permLayers(t)
	opts := "lowerdir=" + lower + ",upperdir=" + up + ",workdir=" + wk +
		",xattr_permissions=2,uidmapping=0:1000:10,gidmapping=0:2000:10"
	mountOverlay(t, alias(t, "fuse-overlayfs"), opts, mnt)
	if got := ownerMode(t, filepath.Join(mnt, "owned")); got != "1005:2006 4751" {
		t.Errorf("owned (override 5:6) shows %s, want 1005:2006 4751", got)
	}
	if err := os.Lchown(filepath.Join(mnt, "owned"), 1003, 2004); err != nil {
		t.Fatal(err)
	}
	if got := ownerMode(t, filepath.Join(mnt, "owned")); got != "1003:2004 751" {
		t.Errorf("owned after chown 1003:2004 shows %s", got)
	}
	if got := getOverride(t, filepath.Join(up, "owned")); got != "3:4:751" {
		t.Errorf("upper owned: override %q, want the stored ids 3:4:751", got)
	}
}

// TestOverlayXattrPermissionsRefuses: a value other than 0, 1, 2 is refused
// with the option's name, and nothing is mounted.
func TestOverlayXattrPermissionsRefuses(t *testing.T) {
	requireMount(t)
	_, app, mnt := stack(t)
	for _, v := range []string{"3", "-1", "yes", ""} {
		code, out := run(t, alias(t, "fuse-overlayfs"), "-o", "lowerdir="+app+",xattr_permissions="+v, mnt)
		if code != 2 || !strings.Contains(out, "xattr_permissions") {
			t.Errorf("xattr_permissions=%s: exit %d %q, want 2 naming the option", v, code, out)
		}
	}
	waitMounted(t, mnt, false)
}

// TestOverlayXattrPermissionsLikeFuseOverlayfs runs the same steps through
// strata and through fuse-overlayfs (Debian's 1.10) with xattr_permissions=2 and
// compares what stat shows, and the overrides the upper keeps.
//
// Left out, where fuse-overlayfs 1.10 differs by design or by a bug:
//   - files without the xattr in a layer whose root has one: fuse-overlayfs
//     cannot stat them (ENODATA); strata shows the disk's owner and mode;
//   - chown or chmod of a lower file: fuse-overlayfs 1.10's copy-up drops the
//     override, and then cannot stat the copy; strata keeps it;
//   - new files and directories: fuse-overlayfs 1.10 gives them no override
//     when the caller is the daemon's user, and shows them 0755 (their disk
//     mode); strata shows the mode asked for;
//   - chown with one id left out (-1): fuse-overlayfs 1.10 stores -1; chmod:
//     fuse-overlayfs 1.10 stores the disk's owner with the new mode;
//   - a chown of a symlink: fuse-overlayfs ignores it (Linux refuses user.*
//     xattrs on symlinks); strata, as root, makes it on disk;
//   - a special file's copy-up: fuse-overlayfs 1.10 copies a FIFO up as a
//     regular file.
func TestOverlayXattrPermissionsLikeFuseOverlayfs(t *testing.T) {
	requireMount(t)
	fo, err := exec.LookPath("fuse-overlayfs")
	if err != nil {
		t.Skip("needs fuse-overlayfs")
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		t.Skip("needs fusermount3")
	}
	steps := func(t *testing.T, mnt string) []string {
		t.Helper()
		m := func(name string) string { return filepath.Join(mnt, name) }
		var seen []string
		look := func(step string, names ...string) {
			for _, name := range names {
				seen = append(seen, step+": "+name+" "+ownerMode(t, m(name)))
			}
		}
		look("before", "", "owned", "ownedDir", "upfile", "updir")
		if err := os.Lchown(m("upfile"), 3, 4); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(m("updir"), 30, 40); err != nil {
			t.Fatal(err)
		}
		look("after", "upfile", "updir")
		return seen
	}
	var seen, overrides [2][]string
	for i, prog := range []string{alias(t, "fuse-overlayfs"), fo} {
		lower, up, wk, mnt := permLayers(t)
		// What an earlier mount left in the upper.
		if err := os.WriteFile(filepath.Join(up, "upfile"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(up, "updir"), 0o755); err != nil {
			t.Fatal(err)
		}
		setOverride(t, up, "0:0:755")
		setOverride(t, filepath.Join(up, "upfile"), "11:12:640")
		setOverride(t, filepath.Join(up, "updir"), "13:14:711")
		unmount := mountOverlay(t, prog, "lowerdir="+lower+",upperdir="+up+",workdir="+wk+",xattr_permissions=2", mnt)
		seen[i] = steps(t, mnt)
		unmount()
		for _, name := range []string{"upfile", "updir"} {
			var uid, gid, mode uint32
			v := getOverride(t, filepath.Join(up, name))
			if _, err := fmt.Sscanf(v, "%d:%d:%o", &uid, &gid, &mode); err != nil {
				t.Errorf("upper %s: override %q: %v", name, v, err)
			}
			// fuse-overlayfs 1.10 writes the file type bits too.
			overrides[i] = append(overrides[i], fmt.Sprintf("%s=%d:%d:%o", name, uid, gid, mode&0o7777))
		}
	}
	if !slices.Equal(seen[0], seen[1]) {
		t.Errorf("stat through the union differs:\nstrata:         %q\nfuse-overlayfs: %q", seen[0], seen[1])
	}
	if !slices.Equal(overrides[0], overrides[1]) {
		t.Errorf("overrides in the upper differ:\nstrata:         %q\nfuse-overlayfs: %q", overrides[0], overrides[1])
	}
}
