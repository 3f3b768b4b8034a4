package unionfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
)

// testUnion is a writable union with passthrough on, enough for the I/O mode
// bookkeeping of addFile and copyID; nothing is mounted.
func testUnion(t *testing.T, follow bool) *union {
	u := &union{upper: &cow.Upper{}, lowerPassthrough: !follow}
	u.ids.init(nil)
	u.passthrough.Store(true)
	return u
}

// testFd is a descriptor of a fresh file big enough to pass through, closed when the test ends unless a
// handle's Release closed it.
func testFd(t *testing.T) int {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, make([]byte, lowerPassthroughMin), 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestAddFileLowerBacking: readers of a lower file pass through to it, and
// while they do no handle of the upper copy joins the same node: the kernel
// would give it the lower file, reopened for writing.
func TestAddFileLowerBacking(t *testing.T) {
	n := &node{u: testUnion(t, false), layer: 1}
	r1, err := n.addFile(testFd(t), true, false)
	if err != nil || !r1.passthrough {
		t.Fatalf("first reader: err %v, passthrough %v; want a passthrough handle", err, r1 != nil && r1.passthrough)
	}
	r2, err := n.addFile(testFd(t), true, false)
	if err != nil || !r2.passthrough {
		t.Fatalf("second reader: err %v; want a passthrough handle", err)
	}
	if n.lowerBacking != 2 {
		t.Fatalf("lowerBacking = %d, want 2", n.lowerBacking)
	}

	old := n.StableAttr()
	if id := n.copyID(); id.Gen == old.Gen {
		t.Errorf("copyID with readers on the lower file kept generation %d; want a new one", id.Gen)
	}
	n.layer = upperLayer
	if _, err := n.addFile(testFd(t), false, false); !errors.Is(err, syscall.ESTALE) {
		t.Errorf("upper handle while the lower file backs the inode: err %v, want ESTALE", err)
	}

	for _, f := range []*file{r1, r2} {
		if errno := f.Release(context.Background()); errno != 0 {
			t.Fatalf("release: %v", errno)
		}
	}
	if n.lowerBacking != 0 || n.passedThrough != 0 {
		t.Fatalf("after release: lowerBacking %d, passedThrough %d; want 0", n.lowerBacking, n.passedThrough)
	}
	if id := n.copyID(); id != old {
		t.Errorf("copyID without readers = %+v, want the node's own %+v", id, old)
	}
	w, err := n.addFile(testFd(t), false, false)
	if err != nil || !w.passthrough {
		t.Fatalf("upper handle once the readers left: err %v; want a passthrough handle", err)
	}
	_ = w.Release(context.Background())
}

// TestAddFileSmallLower: a small lower file stays in the page cache, so that
// its copy keeps the inode (and the locks on it).
func TestAddFileSmallLower(t *testing.T) {
	n := &node{u: testUnion(t, false), layer: 1}
	p := filepath.Join(t.TempDir(), "lock")
	if err := os.WriteFile(p, []byte("1234\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	r, err := n.addFile(fd, true, false)
	if err != nil || r.passthrough {
		t.Fatalf("small reader: err %v, passthrough %v; want a cached handle", err, r != nil && r.passthrough)
	}
	if id := n.copyID(); id != n.StableAttr() {
		t.Errorf("copyID with a cached reader = %+v, want the node's own", id)
	}
	_ = r.Release(context.Background())
}

// TestAddFileFollowCopyUp: without LowerPassthrough, lower files of a
// writable union are read through the daemon, so a copy-up can move their
// readers.
func TestAddFileFollowCopyUp(t *testing.T) {
	n := &node{u: testUnion(t, true), layer: 1}
	r, err := n.addFile(testFd(t), true, false)
	if err != nil || r.passthrough {
		t.Fatalf("reader: err %v, passthrough %v; want a cached handle", err, r != nil && r.passthrough)
	}
	n.layer = upperLayer
	w, err := n.addFile(testFd(t), false, false)
	if err != nil || w.passthrough {
		t.Fatalf("writer beside a cached reader: err %v; want a cached handle (one I/O mode per inode)", err)
	}
	_ = r.Release(context.Background())
	_ = w.Release(context.Background())
}

// TestReadOnlyView: a file opened from a lower layer's view cannot be opened
// for writing again through its path, as the kernel reopens a backing file.
func TestReadOnlyView(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for open_tree")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("lower"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := openLayer(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(l.root)
	view, err := readOnlyView(l.root)
	if err != nil {
		t.Fatalf("readOnlyView: %v", err)
	}
	defer unix.Close(view)
	fd, err := unix.Openat(view, "f", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open for reading: %v", err)
	}
	defer unix.Close(fd)
	// What backing_file_open does with a writer's flags: open the same path.
	if w, err := unix.Open(filepath.Join("/proc/self/fd", strconv.Itoa(fd)), unix.O_RDWR|unix.O_CLOEXEC, 0); !errors.Is(err, unix.EROFS) {
		if err == nil {
			unix.Close(w)
		}
		t.Errorf("reopen for writing: %v, want EROFS", err)
	}
	if data, err := os.ReadFile(filepath.Join(dir, "f")); err != nil || string(data) != "lower" {
		t.Errorf("the layer's file: %q, %v", data, err)
	}
}

// TestLazyLowerOpen: a cached reader of a lower file opens it at its first
// read, not before; a copy-up before that read moves it to the copy, and a
// handle never read closes nothing.
func TestLazyLowerOpen(t *testing.T) {
	lowerDir, upperDir := t.TempDir(), t.TempDir()
	for dir, data := range map[string]string{lowerDir: "lower", upperDir: "upper"} {
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	u := testUnion(t, true)
	for _, dir := range []string{upperDir, lowerDir} {
		l, err := openLayer(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = unix.Close(l.root) })
		u.layers = append(u.layers, l)
	}
	if u.lowerMayPassThrough() {
		t.Fatal("a writable union without lower passthrough lets lower files pass through")
	}
	n := &node{u: u, layer: 1}
	read := func(f *file) string {
		t.Helper()
		buf := make([]byte, 16)
		res, errno := f.Read(context.Background(), buf, 0)
		if errno != 0 {
			t.Fatalf("read: %v", errno)
		}
		data, _ := res.Bytes(buf)
		return string(data)
	}

	unread := n.addLazy(1, "f", unix.O_RDONLY|unix.O_NOFOLLOW)
	if unread.fd != -1 || unread.passthrough {
		t.Fatalf("deferred handle: fd %d, passthrough %v; want -1, false", unread.fd, unread.passthrough)
	}
	if errno := unread.Release(context.Background()); errno != 0 {
		t.Fatalf("release of a handle never read: %v", errno)
	}

	r := n.addLazy(1, "f", unix.O_RDONLY|unix.O_NOFOLLOW)
	if got := read(r); got != "lower" {
		t.Errorf("first read = %q, want the lower file's", got)
	}
	if r.fd < 0 || !r.lower {
		t.Errorf("after a read: fd %d, lower %v; want an open lower file", r.fd, r.lower)
	}
	moved := n.addLazy(1, "f", unix.O_RDONLY|unix.O_NOFOLLOW)
	if n.cached != 2 {
		t.Errorf("cached = %d, want 2", n.cached)
	}
	moved.reopenUpper("f") // what a copy-up does to every handle of the node
	if got := read(moved); got != "upper" || moved.lower {
		t.Errorf("read after a copy-up = %q (lower %v), want the copy's", got, moved.lower)
	}
	for _, f := range []*file{r, moved} {
		if errno := f.Release(context.Background()); errno != 0 {
			t.Fatalf("release: %v", errno)
		}
	}
	if n.cached != 0 || len(n.fds) != 0 {
		t.Errorf("after release: cached %d, %d handles; want none", n.cached, len(n.fds))
	}
	if _, errno := r.Read(context.Background(), make([]byte, 4), 0); errno != syscall.EBADF {
		t.Errorf("read after release: %v, want EBADF", errno)
	}
}
