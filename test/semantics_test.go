package test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/unionfs"
	"github.com/strata-fs/strata/whiteout"
)

// mustWrite writes a file in a layer during setup.
func mustWrite(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDeepPaths builds a lower tree deeper than PATH_MAX (reached only with *at
// calls) and reads, copies up and deletes at its bottom through the union.
func TestDeepPaths(t *testing.T) {
	comp := strings.Repeat("d", 200)
	const depth = 30 // 30 * 201 bytes: well past PATH_MAX
	s := newStack(t, 1, func(i int, dir string) {
		fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		for j := 0; j < depth; j++ {
			if err := unix.Mkdirat(fd, comp, 0o755); err != nil {
				t.Fatal(err)
			}
			next, err := unix.Openat(fd, comp, unix.O_PATH|unix.O_DIRECTORY, 0)
			unix.Close(fd)
			if err != nil {
				t.Fatal(err)
			}
			fd = next
		}
		f, err := unix.Openat(fd, "leaf", unix.O_CREAT|unix.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		unix.Write(f, []byte("deep"))
		unix.Close(f)
		unix.Close(fd)
	})
	mnt := mountStrata(t, s, whiteout.OCI)

	fd, err := unix.Open(mnt, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for j := 0; j < depth; j++ {
		next, err := unix.Openat(fd, comp, unix.O_PATH|unix.O_DIRECTORY, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatalf("depth %d: %v", j, err)
		}
		fd = next
	}
	defer unix.Close(fd)
	f, err := unix.Openat(fd, "leaf", unix.O_RDWR|unix.O_APPEND, 0)
	if err != nil {
		t.Fatalf("open deep leaf for write (copy-up of %d parents): %v", depth, err)
	}
	unix.Write(f, []byte("er"))
	unix.Close(f)
	buf := make([]byte, 16)
	f, err = unix.Openat(fd, "leaf", unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := unix.Read(f, buf)
	unix.Close(f)
	if got := string(buf[:n]); got != "deeper" {
		t.Errorf("deep leaf reads %q, want %q", got, "deeper")
	}
	if err := unix.Unlinkat(fd, "leaf", 0); err != nil {
		t.Fatalf("unlink deep leaf: %v", err)
	}
	if err := unix.Faccessat(fd, "leaf", unix.F_OK, 0); err != unix.ENOENT {
		t.Errorf("deleted deep leaf: got %v, want ENOENT", err)
	}
	long := strings.Repeat("n", 256)
	if _, err := unix.Openat(fd, long, unix.O_CREAT|unix.O_WRONLY, 0o644); err != unix.ENAMETOOLONG {
		t.Errorf("256-byte name: got %v, want ENAMETOOLONG", err)
	}
}

// TestConcurrentCopyUp has many writers open one lower file at once: it is copied
// up once, and every write lands in the one upper copy.
func TestConcurrentCopyUp(t *testing.T) {
	const writers = 16
	content := bytes.Repeat([]byte("L"), 1<<20)
	s := newStack(t, 1, func(i int, dir string) {
		if err := os.WriteFile(filepath.Join(dir, "shared"), content, 0o644); err != nil {
			t.Fatal(err)
		}
	})
	mnt := mountStrata(t, s, whiteout.OCI)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			f, err := os.OpenFile(filepath.Join(mnt, "shared"), os.O_WRONLY, 0)
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte{byte('a' + w)}, int64(w)); err != nil {
				errs <- err
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	got, err := os.ReadFile(filepath.Join(s.Upper, "shared"))
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), content...)
	for w := 0; w < writers; w++ {
		want[w] = byte('a' + w)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("upper copy differs from every write applied once (len %d)", len(got))
	}
	lower, _ := os.ReadFile(filepath.Join(s.Lowers[0], "shared"))
	if !bytes.Equal(lower, content) {
		t.Error("the lower file changed")
	}
}

// TestBigFile reads, copies up and writes a sparse lower file larger than 4 GiB.
func TestBigFile(t *testing.T) {
	const size = 5 << 30
	s := newStack(t, 1, func(i int, dir string) {
		f, err := os.Create(filepath.Join(dir, "big"))
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte("head"), 0)
		f.WriteAt([]byte("tail"), size-4)
		f.Close()
	})
	mnt := mountStrata(t, s, whiteout.OCI)
	path := filepath.Join(mnt, "big")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("X"), 4<<30+10); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	for _, c := range []struct {
		off  int64
		want string
	}{{0, "head"}, {size - 4, "tail"}, {4<<30 + 10, "X\x00\x00\x00"}} {
		if _, err := f.ReadAt(buf, c.off); err != nil {
			t.Fatal(err)
		}
		if string(buf) != c.want {
			t.Errorf("at %d: got %q, want %q", c.off, buf, c.want)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(s.Upper, "big"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != size {
		t.Errorf("upper size %d, want %d", st.Size, size)
	}
	if st.Blocks*512 > 1<<20 {
		t.Errorf("copy-up filled holes: %d bytes allocated", st.Blocks*512)
	}
}

// TestMmap writes to a lower file through a shared mapping: the change reaches the
// upper copy, and the lower file keeps its bytes.
func TestMmap(t *testing.T) {
	s := newStack(t, 1, func(i int, dir string) {
		mustWrite(t, filepath.Join(dir, "m"), strings.Repeat("a", 8192))
	})
	mnt := mountStrata(t, s, whiteout.OCI)
	f, err := os.OpenFile(filepath.Join(mnt, "m"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	// Fill the mapping through read(2) from a pipe, so that the page fault
	// happens inside a system call: a plain store that faults in this process,
	// which also serves the mount, can stall a garbage collection for good.
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil {
		t.Fatal(err)
	}
	unix.Write(p[1], []byte("mapped"))
	unix.Close(p[1])
	if n, err := unix.Read(p[0], mem[4096:4102]); n != 6 || err != nil {
		t.Fatalf("read into the mapping: %d, %v", n, err)
	}
	unix.Close(p[0])
	if err := unix.Msync(mem, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	unix.Munmap(mem)
	got, _ := os.ReadFile(filepath.Join(s.Upper, "m"))
	if string(got[4096:4102]) != "mapped" || got[0] != 'a' {
		t.Errorf("upper copy after mmap write: %q...", got[4090:4110])
	}
	lower, _ := os.ReadFile(filepath.Join(s.Lowers[0], "m"))
	if string(lower) != strings.Repeat("a", 8192) {
		t.Error("the lower file changed")
	}
}

// TestInodeStable checks that st_ino survives copy-up, and that the kernel
// forgetting the inode (drop_caches) does not change it either.
func TestInodeStable(t *testing.T) {
	s := newStack(t, 2, func(i int, dir string) {
		mustWrite(t, filepath.Join(dir, "d", "f"), "x")
	})
	mnt := mountStrata(t, s, whiteout.OCI)
	ino := func(p string) uint64 {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(mnt, p), &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	before, dirBefore := ino("d/f"), ino("d")
	if err := os.WriteFile(filepath.Join(mnt, "d", "f"), []byte("y"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := ino("d/f"); got != before {
		t.Errorf("st_ino after copy-up: %d, want %d", got, before)
	}
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0)
	if got := ino("d/f"); got != before {
		t.Errorf("st_ino after the kernel forgot the inode: %d, want %d", got, before)
	}
	if got := ino("d"); got != dirBefore {
		t.Errorf("directory st_ino after copy-up: %d, want %d", got, dirBefore)
	}
	var sm, su unix.Stat_t
	unix.Stat(mnt, &sm)
	unix.Stat(filepath.Join(mnt, "d"), &su)
	if sm.Dev != su.Dev {
		t.Errorf("st_dev differs inside the mount: %d vs %d", sm.Dev, su.Dev)
	}
}

// TestRenameKeepsHardLinks renames one name of a hard-linked file: the link holds.
func TestRenameKeepsHardLinks(t *testing.T) {
	s := newStack(t, 1, func(i int, dir string) {
		mustWrite(t, filepath.Join(dir, "a"), "1")
	})
	mnt := mountStrata(t, s, whiteout.OCI)
	if err := os.Link(filepath.Join(mnt, "a"), filepath.Join(mnt, "b")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(mnt, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(mnt, "b"), filepath.Join(mnt, "sub", "c")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "sub", "c"), []byte("2"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(mnt, "a"))
	var st unix.Stat_t
	unix.Stat(filepath.Join(mnt, "a"), &st)
	if string(got) != "2" || st.Nlink != 2 {
		t.Errorf("a after writing its renamed link: %q, nlink %d; want \"2\", 2", got, st.Nlink)
	}
}

// TestStatfs reports the upper's filesystem.
func TestStatfs(t *testing.T) {
	s := newStack(t, 1, nil)
	mnt := mountStrata(t, s, whiteout.OCI)
	var a, b unix.Statfs_t
	if err := unix.Statfs(mnt, &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Statfs(s.Upper, &b); err != nil {
		t.Fatal(err)
	}
	if a.Blocks != b.Blocks || a.Bsize != b.Bsize {
		t.Errorf("statfs: %d blocks of %d, want the upper's %d of %d", a.Blocks, a.Bsize, b.Blocks, b.Bsize)
	}
}

// TestTmpfile makes an O_TMPFILE file in a lower directory and links it in.
func TestTmpfile(t *testing.T) {
	s := newStack(t, 1, func(i int, dir string) {
		mustWrite(t, filepath.Join(dir, "d", "old"), "o")
	})
	mnt := mountStrata(t, s, whiteout.OCI)
	fd, err := unix.Open(filepath.Join(mnt, "d"), unix.O_TMPFILE|unix.O_RDWR, 0o640)
	if err != nil {
		t.Fatalf("O_TMPFILE: %v", err)
	}
	defer unix.Close(fd)
	unix.Write(fd, []byte("anon"))
	if err := unix.Linkat(unix.AT_FDCWD, "/proc/self/fd/"+itoa(fd), unix.AT_FDCWD, filepath.Join(mnt, "d", "named"), unix.AT_SYMLINK_FOLLOW); err != nil {
		t.Fatalf("link the tmpfile in: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(mnt, "d", "named"))
	if err != nil || string(got) != "anon" {
		t.Errorf("linked tmpfile reads %q, %v; want \"anon\"", got, err)
	}
	if fi, err := os.Stat(filepath.Join(s.Upper, "d", "named")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("upper copy: %v, %v; want mode 0640", fi, err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestLongNameWhiteout deletes lower entries whose names leave no room for
// ".wh." (over NAME_MAX-4 bytes), in the OCI format: the union writes the
// kernel's whiteout for them instead, and they stay deleted across a remount.
func TestLongNameWhiteout(t *testing.T) {
	file := strings.Repeat("f", 254)
	dir := strings.Repeat("d", 255)
	s := newStack(t, 1, func(i int, d string) {
		mustWrite(t, filepath.Join(d, file), "lower")
		mustWrite(t, filepath.Join(d, dir, "child"), "lower")
	})
	mnt := mountStrata(t, s, whiteout.OCI)
	if err := os.Remove(filepath.Join(mnt, file)); err != nil {
		t.Fatalf("unlink a %d-byte name: %v", len(file), err)
	}
	if err := os.RemoveAll(filepath.Join(mnt, dir)); err != nil {
		t.Fatalf("remove a %d-byte directory: %v", len(dir), err)
	}
	// Made again, the directory is opaque: the lower child stays hidden.
	if err := os.Mkdir(filepath.Join(mnt, dir), 0o755); err != nil {
		t.Fatal(err)
	}
	check := func(mnt, when string) {
		t.Helper()
		if _, err := os.Lstat(filepath.Join(mnt, file)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: deleted file: lstat = %v, want ENOENT", when, err)
		}
		ents, err := os.ReadDir(filepath.Join(mnt, dir))
		if err != nil || len(ents) != 0 {
			t.Errorf("%s: remade directory lists %d entries (%v), want none", when, len(ents), err)
		}
		root, err := os.ReadDir(mnt)
		if err != nil || len(root) != 1 || root[0].Name() != dir {
			t.Errorf("%s: root lists %v (%v), want only the directory", when, root, err)
		}
	}
	check(mnt, "mounted")
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(s.Upper, file), &st); err != nil || !whiteout.IsOverlayWhiteout(st.Mode, uint64(st.Rdev)) {
		t.Errorf("upper %s...: want a 0/0 character device, got mode %o rdev %d (%v)", file[:8], st.Mode, st.Rdev, err)
	}
	// Kernel overlayfs takes the upper's whiteout for one too (it reads no
	// OCI opaque marker, so the directory is not compared).
	ro := mountOverlay(t, stack{Lowers: append([]string{s.Upper}, s.Lowers...)})
	if _, err := os.Lstat(filepath.Join(ro, file)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("overlayfs over the upper: deleted file: lstat = %v, want ENOENT", err)
	}
}

// TestSELinuxLabelAbsent: on a host without SELinux, a file with no label says
// its file system has none (EOPNOTSUPP), which `ls -l` remembers for the whole
// mount instead of asking for every file; a file with a label still shows it.
func TestSELinuxLabelAbsent(t *testing.T) {
	if _, err := os.Stat("/sys/fs/selinux/enforce"); err == nil {
		t.Skip("SELinux runs here: an absent label is ENODATA, as on disk")
	}
	const label = "system_u:object_r:bin_t:s0"
	s := newStack(t, 1, func(i int, d string) {
		mustWrite(t, filepath.Join(d, "plain"), "")
		mustWrite(t, filepath.Join(d, "labelled"), "")
		if err := unix.Lsetxattr(filepath.Join(d, "labelled"), "security.selinux", []byte(label), 0); err != nil {
			t.Skipf("cannot label a file here: %v", err)
		}
	})
	mnt := mountStrata(t, s, whiteout.OCI)
	buf := make([]byte, 256)
	if _, err := unix.Lgetxattr(filepath.Join(mnt, "plain"), "security.selinux", buf); !errors.Is(err, unix.EOPNOTSUPP) {
		t.Errorf("getxattr security.selinux of an unlabelled file: %v, want EOPNOTSUPP", err)
	}
	n, err := unix.Lgetxattr(filepath.Join(mnt, "labelled"), "security.selinux", buf)
	if err != nil || string(buf[:n]) != label {
		t.Errorf("getxattr security.selinux of a labelled file = %q, %v; want %q", buf[:max(n, 0)], err, label)
	}
	// Other absent xattrs are ENODATA, as everywhere.
	if _, err := unix.Lgetxattr(filepath.Join(mnt, "plain"), "user.none", buf); !errors.Is(err, unix.ENODATA) {
		t.Errorf("getxattr user.none: %v, want ENODATA", err)
	}
}

// TestNewFileCapability follows the file capability of a file made through
// the union: none at first (strata answers that without the disk), the one
// set through the union after, and none again once a write drops it, as the
// kernel does on every file system.
func TestNewFileCapability(t *testing.T) {
	s := newStack(t, 1, nil)
	mnt := mountStrata(t, s, whiteout.OCI)
	p := filepath.Join(mnt, "tool")
	mustWrite(t, p, "#!/bin/sh\n")
	buf := make([]byte, 64)
	if _, err := unix.Getxattr(p, "security.capability", buf); !errors.Is(err, unix.ENODATA) {
		t.Fatalf("getxattr security.capability of a new file: %v, want ENODATA", err)
	}
	// cap_net_raw+ep, as setcap writes it (VFS_CAP_REVISION_2).
	capv := []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if err := unix.Setxattr(p, "security.capability", capv, 0); err != nil {
		t.Fatalf("setxattr security.capability: %v", err)
	}
	n, err := unix.Getxattr(p, "security.capability", buf)
	if err != nil || !bytes.Equal(buf[:n], capv) {
		t.Fatalf("getxattr security.capability after setxattr = %x, %v; want %x", buf[:max(n, 0)], err, capv)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("exit 0\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Getxattr(p, "security.capability", buf); !errors.Is(err, unix.ENODATA) {
		t.Errorf("getxattr security.capability after a write: %v, want ENODATA (the write drops it)", err)
	}
	if _, err := unix.Getxattr(filepath.Join(s.Upper, "tool"), "security.capability", buf); !errors.Is(err, unix.ENODATA) {
		t.Errorf("the upper file keeps its capability after a write: %v", err)
	}
}

// TestReadOnlyUnion mounts lower layers alone: files read whole (there they
// pass through to the lower file when the kernel can), several readers at
// once, and every kind of write is refused with EROFS.
func TestReadOnlyUnion(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	s := newStack(t, 2, func(i int, d string) {
		mustWrite(t, filepath.Join(d, "f"+itoa(i)), string(data[:len(data)-i]))
	})
	s.Upper, s.Work = "", ""
	mnt := mountStrata(t, s, whiteout.OCI)
	var files []*os.File
	for i := 0; i < 3; i++ {
		f, err := os.Open(filepath.Join(mnt, "f1"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		files = append(files, f)
	}
	for i, f := range files {
		buf := make([]byte, len(data))
		n, err := f.ReadAt(buf, 0)
		if n != len(data)-1 || !bytes.Equal(buf[:n], data[:n]) {
			t.Errorf("reader %d: %d bytes (%v), want %d equal to the lower file", i, n, err, len(data)-1)
		}
	}
	if got, err := os.ReadFile(filepath.Join(mnt, "f0")); err != nil || !bytes.Equal(got, data) {
		t.Errorf("read f0: %d bytes (%v)", len(got), err)
	}
	for what, err := range map[string]error{
		"open O_RDWR": func() error {
			f, err := os.OpenFile(filepath.Join(mnt, "f1"), os.O_RDWR, 0)
			if err == nil {
				f.Close()
			}
			return err
		}(),
		"truncate": os.Truncate(filepath.Join(mnt, "f1"), 0),
		"chmod":    os.Chmod(filepath.Join(mnt, "f1"), 0o600),
		"create":   os.WriteFile(filepath.Join(mnt, "new"), nil, 0o644),
		"unlink":   os.Remove(filepath.Join(mnt, "f0")),
	} {
		if !errors.Is(err, unix.EROFS) {
			t.Errorf("%s: %v, want EROFS", what, err)
		}
	}
}

// TestExec runs programs from the union: a lower file, its copy-up, and a new
// upper file. execve(2) opens with the kernel's own __FMODE_EXEC flag, which
// must not reach the daemon's open of the layer file.
func TestExec(t *testing.T) {
	prog, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1) to run")
	}
	data, err := os.ReadFile(prog)
	if err != nil {
		t.Fatal(err)
	}
	s := newStack(t, 1, func(i int, d string) {
		if err := os.WriteFile(filepath.Join(d, "lower-true"), data, 0o755); err != nil {
			t.Fatal(err)
		}
	})
	for _, f := range []whiteout.Format{whiteout.OCI, whiteout.Overlay} {
		t.Run(f.String(), func(t *testing.T) {
			s := s
			s.Upper, s.Work = t.TempDir(), t.TempDir()
			mnt := mountStrata(t, s, f)
			// Through sh: a child of this process that execs from the
			// mount would hold the mount's /dev/fuse descriptor (not
			// closed before its exec succeeds) while waiting on it.
			run := func(what string) {
				t.Helper()
				if out, err := exec.Command("/bin/sh", "-c", `exec "$0"`, filepath.Join(mnt, what)).CombinedOutput(); err != nil {
					t.Errorf("run %s: %v %s", what, err, out)
				}
			}
			run("lower-true")
			if err := os.WriteFile(filepath.Join(mnt, "upper-true"), data, 0o755); err != nil {
				t.Fatal(err)
			}
			run("upper-true")
			if err := os.Chmod(filepath.Join(mnt, "lower-true"), 0o750); err != nil { // copy-up
				t.Fatal(err)
			}
			run("lower-true")
		})
	}
}

// TestBigReads: big reads of a lower file, which strata splices from the
// layer, give the file's bytes: sequential and at odd offsets, several
// readers at once, cold and from the page cache, O_DIRECT, to the end of a
// file whose size is no multiple of a read, and after a copy-up under an
// open reader, the copy's bytes.
func TestBigReads(t *testing.T) {
	data := make([]byte, 9<<20+4321)
	for i := range data {
		data[i] = byte(i*7 + i>>12)
	}
	s := newStack(t, 1, func(_ int, dir string) {
		if err := os.WriteFile(filepath.Join(dir, "big"), data, 0o644); err != nil {
			t.Fatal(err)
		}
	})
	mnt := mountStrata(t, s, whiteout.OCI)
	p := filepath.Join(mnt, "big")

	check := func(what string, f *os.File, off int64, size int) {
		t.Helper()
		buf := make([]byte, size)
		n, err := f.ReadAt(buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatalf("%s: read %d at %d: %v", what, size, off, err)
		}
		want := data[min(off, int64(len(data))):min(off+int64(size), int64(len(data)))]
		if n != len(want) || !bytes.Equal(buf[:n], want) {
			t.Fatalf("%s: read %d at %d: got %d bytes, want %d, equal %v", what, size, off, n, len(want), bytes.Equal(buf[:n], want))
		}
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f, err := os.Open(p)
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			got, err := io.ReadAll(bufio.NewReaderSize(f, 1<<20))
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("reader %d: %d bytes, %v, equal %v", g, len(got), err, bytes.Equal(got, data))
			}
		}()
	}
	wg.Wait()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, c := range []struct {
		off  int64
		size int
	}{{0, 1 << 20}, {12345, 700 << 10}, {int64(len(data)) - 5000, 1 << 20}, {int64(len(data)) + 1, 4096}} {
		check("cached", f, c.off, c.size)
	}
	d, err := os.OpenFile(p, os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, off := range []int64{0, 1 << 20, 8 << 20} {
		check("O_DIRECT", d, off, 1<<20)
	}

	// A writer copies the file up under the open reader, which then reads
	// the copy.
	w, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	copy(data[3<<20:], bytes.Repeat([]byte("copy"), 1<<18))
	if _, err := w.WriteAt(data[3<<20:4<<20], 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	check("after a copy-up", f, 3<<20-100, 1<<20)
}

// TestUnmountNoLeak: a union leaves no descriptor open behind it once
// unmounted, in a process that lives on: not the pipes of its spliced reads,
// nor the files of opens whose RELEASE the kernel dropped with the connection
// (readers that closed just before the unmount).
func TestUnmountNoLeak(t *testing.T) {
	requireRoot(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	names := []string{"big"}
	s := newStack(t, 1, func(_ int, dir string) {
		if err := os.WriteFile(filepath.Join(dir, "big"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		for i := range 8 {
			names = append(names, "small"+strconv.Itoa(i))
			if err := os.WriteFile(filepath.Join(dir, names[len(names)-1]), data[:100<<10], 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})
	openFds := func() map[string]string {
		t.Helper()
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		fds := map[string]string{}
		for _, e := range ents {
			fds[e.Name()], _ = os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		}
		return fds
	}
	var before map[string]string
	for i := range 21 {
		if i == 1 {
			before = openFds() // after a first round: the runtime's poller is no leak
		}
		mnt := filepath.Join(t.TempDir(), "merged")
		if err := os.Mkdir(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		srv, err := unionfs.Mount(mnt, unionfs.Config{Lowers: s.Lowers, Upper: s.Upper, Work: s.Work})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if got, err := os.ReadFile(filepath.Join(mnt, "big")); err != nil || !bytes.Equal(got, data) {
					t.Errorf("read big: %v, equal %v", err, bytes.Equal(got, data))
				}
			}()
		}
		wg.Wait()
		// Files read and closed all at once right before the unmount: some
		// RELEASEs are still queued when it comes.
		var files []*os.File
		for _, name := range names[1:] {
			for range 5 {
				f, err := os.Open(filepath.Join(mnt, name))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.Read(make([]byte, 1)); err != nil {
					t.Fatal(err)
				}
				files = append(files, f)
			}
		}
		for _, f := range files {
			_ = f.Close()
		}
		if err := srv.Unmount(); err != nil {
			_ = unix.Unmount(mnt, unix.MNT_DETACH)
			t.Fatalf("unmount: %v", err)
		}
		srv.Wait()
	}
	for fd, target := range openFds() {
		if _, ok := before[fd]; !ok {
			t.Errorf("descriptor %s (%s) left open by twenty mounts and unmounts", fd, target)
		}
	}
}
