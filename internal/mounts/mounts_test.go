package mounts

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const table = `22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
25 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
40 25 0:34 / /tmp/with\040space rw,relatime - tmpfs tmpfs rw,size=1024k
41 25 0:35 / /mnt/merged rw,nosuid,nodev,relatime - fuse.strata strata rw,user_id=0,group_id=0
42 41 0:36 / /mnt/merged rw,relatime master:3 master:4 - tmpfs none rw
`

func TestParse(t *testing.T) {
	ms, err := Parse(strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 5 {
		t.Fatalf("got %d mounts, want 5", len(ms))
	}
	want := Mount{ID: 41, Parent: 25, Root: "/", Mountpoint: "/mnt/merged", Options: "rw,nosuid,nodev,relatime", FSType: "fuse.strata", Source: "strata", SuperOptions: "rw,user_id=0,group_id=0"}
	if ms[3] != want {
		t.Errorf("got %+v, want %+v", ms[3], want)
	}
	if got := ms[2].Mountpoint; got != "/tmp/with space" {
		t.Errorf("escaped mount point: got %q, want %q", got, "/tmp/with space")
	}
	if got := ms[4].FSType; got != "tmpfs" {
		t.Errorf("type after optional fields: got %q, want tmpfs", got)
	}
}

func TestParseMalformed(t *testing.T) {
	for _, line := range []string{
		"22 1 0:21 / /proc rw",
		"x 1 0:21 / /proc rw - proc proc rw",
		"22 1 0:21 / /proc rw shared:1 proc proc rw",
	} {
		if _, err := Parse(strings.NewReader(line + "\n")); err == nil {
			t.Errorf("Parse(%q): got nil error", line)
		}
	}
}

func TestUnescape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`/a`, `/a`},
		{`/a\040b`, `/a b`},
		{`/a\011\012\134`, "/a\t\n\\"},
		{`/a\04`, `/a\04`},
		{`/a\9`, `/a\9`},
	} {
		if got := unescape(tc.in); got != tc.want {
			t.Errorf("unescape(%q): got %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFindTopmost(t *testing.T) {
	ms, err := Parse(strings.NewReader(table))
	if err != nil {
		t.Fatal(err)
	}
	m, ok := Find(ms, "/mnt/merged")
	if !ok || m.ID != 42 {
		t.Errorf("got %+v, %v; want mount 42", m, ok)
	}
	if _, ok := Find(ms, "/mnt"); ok {
		t.Errorf("/mnt: found a mount, want none")
	}
}

func TestSelfHasRoot(t *testing.T) {
	ms, err := Self()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := Find(ms, "/"); !ok {
		t.Errorf("no mount at / in %d mounts", len(ms))
	}
}

func TestUnmountRefuses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	dir := t.TempDir()
	mnt := filepath.Join(dir, "tmpfs")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Unmount(mnt, "fuse.strata"); !errors.Is(err, ErrNotMounted) {
		t.Errorf("plain directory: got %v, want ErrNotMounted", err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) }) // the test's own tmpfs
	if _, err := Unmount(mnt, "fuse.strata"); !errors.Is(err, ErrForeign) {
		t.Errorf("tmpfs: got %v, want ErrForeign", err)
	}
	res, err := Unmount(mnt, "tmpfs")
	if err != nil || res != Unmounted {
		t.Errorf("tmpfs as tmpfs: got %v, %v; want Unmounted, nil", res, err)
	}
}
