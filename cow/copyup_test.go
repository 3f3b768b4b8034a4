package cow

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/beneath"
	"github.com/strata-fs/strata/whiteout"
)

// Times with nanoseconds that no clock would produce by chance.
const (
	atime = 1_000_000_000_123_456_789
	mtime = 1_100_000_000_987_654_321
	owner = 1234
	group = 5678
)

// capNetRaw is security.capability for "cap_net_raw+ep", a struct vfs_cap_data
// revision 2: what setcap(8) writes for ping.
func capNetRaw() string {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000000|1) // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
	binary.LittleEndian.PutUint32(b[4:], 1<<unix.CAP_NET_RAW)
	return string(b)
}

// fillTypes puts one entry of every type in lower, each owned by owner:group,
// with xattrs and odd times.
func fillTypes(t *testing.T) func(lower string) {
	return func(lower string) {
		p := func(name string) string { return filepath.Join(lower, name) }
		mustWrite(t, p("f"), "lower data\n", 0o644)
		mustMkdir(t, p("d"))
		mustWrite(t, p("d/child"), "not copied", 0o644)
		if err := os.Symlink("f", p("l")); err != nil {
			t.Fatal(err)
		}
		for _, n := range []struct {
			name string
			mode uint32
			dev  int
		}{
			{"p", unix.S_IFIFO | 0o640, 0},
			{"s", unix.S_IFSOCK | 0o600, 0},
			{"c", unix.S_IFCHR | 0o620, int(unix.Mkdev(1, 3))},
			{"b", unix.S_IFBLK | 0o660, int(unix.Mkdev(7, 0))},
		} {
			if err := unix.Mknod(p(n.name), n.mode, n.dev); err != nil {
				t.Fatal(err)
			}
		}
		for _, name := range []string{"f", "d", "l", "p", "s", "c", "b"} {
			if err := os.Lchown(p(name), owner, group); err != nil {
				t.Fatal(err)
			}
		}
		// Modes after chown, which clears set-ID bits; xattrs after both, as
		// chown also drops security.capability.
		for name, mode := range map[string]uint32{"f": 0o4755, "d": 0o2751, "p": 0o640, "s": 0o600, "c": 0o620, "b": 0o660} {
			if err := unix.Chmod(p(name), mode); err != nil {
				t.Fatal(err)
			}
		}
		setXattr(t, p("f"), "user.a", "1")
		setXattr(t, p("f"), "trusted.t", "2")
		setXattr(t, p("f"), "security.capability", capNetRaw())
		setXattr(t, p("d"), "user.d", "dir")
		setXattr(t, p("d"), "trusted.d", "dir")
		setXattr(t, p("d"), whiteout.TrustedOpaqueXattr, "y") // the union's own: not copied
		setXattr(t, p("d"), whiteout.UserOpaqueXattr, "y")
		for _, name := range []string{"l", "p", "s", "c", "b"} {
			setXattr(t, p(name), "trusted."+name, "special")
		}
		for _, name := range []string{"f", "d", "l", "p", "s", "c", "b"} {
			setTimes(t, p(name), atime, mtime)
		}
	}
}

func TestCopyUpTypes(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, whiteout.OCI, fillTypes(t))
	for _, name := range []string{"f", "d", "l", "p", "s", "c", "b"} {
		t.Run(name, func(t *testing.T) {
			st, err := e.u.CopyUp(Source{Root: e.lowerFd, Rel: name}, name, Options{Size: -1})
			if err != nil {
				t.Fatal(err)
			}
			lo, up := lstat(t, filepath.Join(e.lower, name)), lstat(t, filepath.Join(e.upper, name))
			if st.Ino != up.Ino || st.Dev != up.Dev || st.Mode != up.Mode {
				t.Errorf("returned stat is not the upper entry's: got ino %d mode %o, want %d %o", st.Ino, st.Mode, up.Ino, up.Mode)
			}
			for _, c := range []struct {
				what      string
				got, want int64
			}{
				{"mode", int64(up.Mode), int64(lo.Mode)},
				{"uid", int64(up.Uid), int64(lo.Uid)},
				{"gid", int64(up.Gid), int64(lo.Gid)},
				{"rdev", int64(up.Rdev), int64(lo.Rdev)},
				{"atime", up.Atim.Nano(), lo.Atim.Nano()},
				{"mtime", up.Mtim.Nano(), lo.Mtim.Nano()},
			} {
				if c.got != c.want {
					t.Errorf("%s: got %d, want %d", c.what, c.got, c.want)
				}
			}
			want := xattrs(t, filepath.Join(e.lower, name))
			for n := range want {
				if whiteout.IsOwnXattr(n, e.u.Privileged) {
					delete(want, n)
				}
			}
			got := xattrs(t, filepath.Join(e.upper, name))
			if len(got) != len(want) {
				t.Errorf("xattrs: got %q, want %q", got, want)
			}
			for n, v := range want {
				if got[n] != v {
					t.Errorf("xattr %s: got %q, want %q", n, got[n], v)
				}
			}
			switch name {
			case "f":
				if up.Size != lo.Size || extents(t, filepath.Join(e.upper, name)) != extents(t, filepath.Join(e.lower, name)) {
					t.Errorf("data differs")
				}
			case "d":
				if ents, _ := os.ReadDir(filepath.Join(e.upper, name)); len(ents) != 0 {
					t.Errorf("directory copied with entries: %v", ents)
				}
			case "l":
				if got, _ := os.Readlink(filepath.Join(e.upper, name)); got != "f" {
					t.Errorf("symlink: got %q, want \"f\"", got)
				}
			}
		})
	}
}

// TestCopyUpSetuidCapability checks the two attributes a careless order of
// chown, chmod and setxattr loses: chown(2) clears set-user-ID and drops
// security.capability.
func TestCopyUpSetuidCapability(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, whiteout.OCI, fillTypes(t))
	if _, err := e.u.CopyUp(Source{Root: e.lowerFd, Rel: "f"}, "f", Options{Size: -1}); err != nil {
		t.Fatal(err)
	}
	up := filepath.Join(e.upper, "f")
	if st := lstat(t, up); st.Mode&0o7777 != 0o4755 {
		t.Errorf("mode: got %o, want 4755", st.Mode&0o7777)
	}
	if got := xattrs(t, up)["security.capability"]; got != capNetRaw() {
		t.Errorf("security.capability: got %x, want %x", got, capNetRaw())
	}
}

func TestCopyUpSize(t *testing.T) {
	const data = "0123456789"
	for _, tc := range []struct {
		size int64
		want string
	}{
		{-1, data},
		{0, ""},
		{4, "0123"},
		{10, data},
		{14, data + "\x00\x00\x00\x00"},
	} {
		t.Run(fmt.Sprint(tc.size), func(t *testing.T) {
			e := newEnv(t, whiteout.OCI, func(lower string) {
				mustWrite(t, filepath.Join(lower, "f"), data, 0o640)
				setTimes(t, filepath.Join(lower, "f"), atime, mtime)
			})
			st, err := e.u.CopyUp(Source{Root: e.lowerFd, Rel: "f"}, "f", Options{Size: tc.size})
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(e.upper, "f"))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want || st.Size != int64(len(tc.want)) {
				t.Errorf("Size %d: got %q (size %d), want %q", tc.size, got, st.Size, tc.want)
			}
			if st.Mode&0o7777 != 0o640 || st.Mtim.Nano() != mtime {
				t.Errorf("Size %d: got mode %o mtime %d, want 640 %d", tc.size, st.Mode&0o7777, st.Mtim.Nano(), mtime)
			}
		})
	}
}

// TestCopyUpSparse copies a 3 GiB file with 4 KiB of data at 0 and at 2 GiB:
// the copy must hold the same data at the same offsets and stay sparse.
func TestCopyUpSparse(t *testing.T) {
	const size, far = 3 << 30, 2 << 30
	e := newEnv(t, whiteout.OCI, func(lower string) { makeSparse(t, filepath.Join(lower, "sparse"), size, far) })
	lo := lstat(t, filepath.Join(e.lower, "sparse"))
	if lo.Blocks*512 > 1<<20 {
		t.Skipf("the lower filesystem did not keep the file sparse (%d blocks)", lo.Blocks)
	}
	st, err := e.u.CopyUp(Source{Root: e.lowerFd, Rel: "sparse"}, "sparse", Options{Size: -1})
	if err != nil {
		t.Fatal(err)
	}
	if st.Size != size {
		t.Errorf("size: got %d, want %d", st.Size, int64(size))
	}
	if st.Blocks > lo.Blocks {
		t.Errorf("blocks: got %d, want at most the lower's %d", st.Blocks, lo.Blocks)
	}
	up := filepath.Join(e.upper, "sparse")
	if got, want := extents(t, up), extents(t, filepath.Join(e.lower, "sparse")); got != want {
		t.Errorf("extents: got %s, want %s", got, want)
	}
	checkSparseData(t, up, far)
}

func makeSparse(t *testing.T, path string, size, far int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(bytes.Repeat([]byte("A"), 4096), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte("B"), 4096), far); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil { // settle delayed allocation before counting blocks
		t.Fatal(err)
	}
}

func checkSparseData(t *testing.T, path string, far int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, c := range []struct {
		off  int64
		want byte
	}{{0, 'A'}, {4095, 'A'}, {4096, 0}, {far - 1, 0}, {far, 'B'}, {far + 4095, 'B'}, {far + 4096, 0}} {
		b := make([]byte, 1)
		if _, err := f.ReadAt(b, c.off); err != nil {
			t.Fatal(err)
		}
		if b[0] != c.want {
			t.Errorf("byte at %d: got %q, want %q", c.off, b[0], c.want)
		}
	}
}

// TestCopyUpCrossFS reads from a tmpfs into ext4, where copy_file_range says
// EXDEV and the copy falls back to read and write, still skipping holes.
func TestCopyUpCrossFS(t *testing.T) {
	lower := mountTmpfs(t, "16m")
	const size, far = 12 << 20, 8 << 20
	makeSparse(t, filepath.Join(lower, "sparse"), size, far)
	mustWrite(t, filepath.Join(lower, "small"), "small", 0o600)
	keepUnchanged(t, lower)
	e := newEnv(t, whiteout.OCI, nil)
	lfd := openPath(t, lower)
	for _, name := range []string{"sparse", "small"} {
		if _, err := e.u.CopyUp(Source{Root: lfd, Rel: name}, name, Options{Size: -1}); err != nil {
			t.Fatal(err)
		}
		if got, want := extents(t, filepath.Join(e.upper, name)), extents(t, filepath.Join(lower, name)); got != want {
			t.Errorf("%s: got extents %s, want %s", name, got, want)
		}
	}
	checkSparseData(t, filepath.Join(e.upper, "sparse"), far)
}

func TestCopyUpExists(t *testing.T) {
	e := newEnv(t, whiteout.OCI, func(lower string) { mustWrite(t, filepath.Join(lower, "f"), "lower", 0o644) })
	mustWrite(t, filepath.Join(e.upper, "f"), "upper", 0o644)
	_, err := e.u.CopyUp(Source{Root: e.lowerFd, Rel: "f"}, "f", Options{Size: -1})
	if !errors.Is(err, unix.EEXIST) {
		t.Fatalf("got %v, want EEXIST", err)
	}
	if got, _ := os.ReadFile(filepath.Join(e.upper, "f")); string(got) != "upper" {
		t.Errorf("upper file: got %q, want \"upper\"", got)
	}
}

func TestCopyUpErrors(t *testing.T) {
	e := newEnv(t, whiteout.OCI, func(lower string) {
		mustMkdir(t, filepath.Join(lower, "d"))
		mustWrite(t, filepath.Join(lower, "d/f"), "x", 0o644)
		if err := os.Symlink("d", filepath.Join(lower, "ld")); err != nil {
			t.Fatal(err)
		}
	})
	for _, tc := range []struct {
		name, src, dst string
		want           error
	}{
		{"missing source", "nope", "nope", unix.ENOENT},
		{"missing upper parent", "d/f", "d/f", unix.ENOENT},
		{"symlink on the source path", "ld/f", "f", unix.ELOOP},
		{"dot-dot source", "..", "x", nil},
		{"dot-dot in the source", "d/..", "x", nil},
		{"dot-dot destination", "d", "..", nil},
		{"upper root", "d", "", unix.EEXIST},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.u.CopyUp(Source{Root: e.lowerFd, Rel: tc.src}, tc.dst, Options{Size: -1})
			if err == nil {
				t.Fatal("got nil error")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
			if want := "copy-up " + tc.dst + ": "; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("error %q does not start with %q", err, want)
			}
			if ents, _ := os.ReadDir(e.upper); len(ents) != 0 {
				t.Errorf("upper not empty: %v", ents)
			}
		})
	}
}

// TestCopyUpNoSpace fills a small upper: the copy fails with ENOSPC and leaves
// nothing in the upper or the work dir.
func TestCopyUpNoSpace(t *testing.T) {
	small := mountTmpfs(t, "1m")
	upper, work := filepath.Join(small, "upper"), filepath.Join(small, "work")
	mustMkdir(t, upper)
	mustMkdir(t, work)
	lower := t.TempDir()
	big := make([]byte, 4<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(lower, "big"), string(big), 0o644)
	keepUnchanged(t, lower)
	u, err := Open(upper, work, whiteout.OCI, true)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	_, err = u.CopyUp(Source{Root: openPath(t, lower), Rel: "big"}, "big", Options{Size: -1})
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("got %v, want ENOSPC", err)
	}
	for _, d := range []string{upper, filepath.Join(work, "work")} {
		if ents, _ := os.ReadDir(d); len(ents) != 0 {
			t.Errorf("%s not empty: %v", d, ents)
		}
	}
}

// TestCopyUpDeep copies a file whose path is longer than PATH_MAX, built with
// mkdirat on descriptors.
func TestCopyUpDeep(t *testing.T) {
	seg := strings.Repeat("d", 200)
	var parts []string
	for range 25 {
		parts = append(parts, seg)
	}
	dirRel := strings.Join(parts, "/")
	rel := dirRel + "/file"
	if len(rel) <= unix.PathMax {
		t.Fatalf("path of %d bytes is not longer than PATH_MAX", len(rel))
	}
	mkChain := func(root string, withFile bool) {
		fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range parts {
			if err := unix.Mkdirat(fd, p, 0o755); err != nil {
				t.Fatal(err)
			}
			next, err := unix.Openat(fd, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			_ = unix.Close(fd)
			if err != nil {
				t.Fatal(err)
			}
			fd = next
		}
		defer unix.Close(fd)
		if withFile {
			f, err := unix.Openat(fd, "file", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o640)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := unix.Write(f, []byte("deep")); err != nil {
				t.Fatal(err)
			}
			_ = unix.Close(f)
		}
	}
	e := newEnv(t, whiteout.OCI, func(lower string) { mkChain(lower, true) })
	mkChain(e.upper, false)
	st, err := e.u.CopyUp(Source{Root: e.lowerFd, Rel: rel}, rel, Options{Size: -1})
	if err != nil {
		t.Fatal(err)
	}
	if st.Size != 4 || st.Mode&0o777 != 0o640 {
		t.Errorf("got size %d mode %o, want 4 640", st.Size, st.Mode&0o777)
	}
	ufd := openPath(t, e.upper)
	fd, err := beneath.Open(ufd, rel, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 8)
	n, _ := unix.Read(fd, buf)
	if string(buf[:n]) != "deep" {
		t.Errorf("got %q, want \"deep\"", buf[:n])
	}
}

func BenchmarkCopyUp(b *testing.B) {
	const size = 256 << 20
	base := b.TempDir()
	lower, upper, work := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work")
	for _, d := range []string{lower, upper, work} {
		mustMkdir(b, d)
	}
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		b.Fatal(err)
	}
	mustWrite(b, filepath.Join(lower, "big"), string(data), 0o644)
	lfd := openPath(b, lower)
	for _, sync := range []bool{true, false} {
		name := "fsync"
		if !sync {
			name = "volatile"
		}
		b.Run(name, func(b *testing.B) {
			u, err := Open(upper, work, whiteout.OCI, sync)
			if err != nil {
				b.Fatal(err)
			}
			defer u.Close()
			b.SetBytes(size)
			for b.Loop() {
				if _, err := u.CopyUp(Source{Root: lfd, Rel: "big"}, "big", Options{Size: -1}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := u.RemoveAll("big"); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// TestCopyUpMethod checks that a copy-up says how it moved the data: a
// reflink or copy_file_range for a file (whichever this file system does), no
// data for a directory, an empty file, or a copy truncated to nothing.
func TestCopyUpMethod(t *testing.T) {
	e := newEnv(t, whiteout.OCI, func(lower string) {
		mustWrite(t, filepath.Join(lower, "f"), "0123456789", 0o644)
		mustWrite(t, filepath.Join(lower, "g"), "0123456789", 0o644)
		mustWrite(t, filepath.Join(lower, "empty"), "", 0o644)
		mustMkdir(t, filepath.Join(lower, "d"))
	})
	for _, tc := range []struct {
		name   string
		size   int64
		want   []Method
		nbytes int64
	}{
		{"f", -1, []Method{Reflink, CopyFileRange}, 10},
		{"g", 0, []Method{NoData}, 0},
		{"empty", -1, []Method{NoData}, 0},
		{"d", -1, []Method{NoData}, 0},
	} {
		res, err := e.u.CopyUp(Source{Root: e.lowerFd, Rel: tc.name}, tc.name, Options{Size: tc.size})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !slices.Contains(tc.want, res.Method) || res.Bytes != tc.nbytes {
			t.Errorf("%s (size %d): got %v, %d bytes; want one of %v, %d bytes", tc.name, tc.size, res.Method, res.Bytes, tc.want, tc.nbytes)
		}
	}
}

// TestCopyUpMethodReadWrite: where copy_file_range cannot go, the copy says
// it read and wrote.
func TestCopyUpMethodReadWrite(t *testing.T) {
	c := copier{noRange: true}
	if c.method() != NoData {
		t.Errorf("nothing copied: got %v, want %v", c.method(), NoData)
	}
	c.ranged = true
	if c.method() != CopyFileRange {
		t.Errorf("got %v, want %v", c.method(), CopyFileRange)
	}
	c.readWrote = true
	if c.method() != ReadWrite {
		t.Errorf("got %v, want %v", c.method(), ReadWrite)
	}
}
