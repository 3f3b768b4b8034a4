package test

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
	store "github.com/strata-fs/strata/layers"
	"github.com/strata-fs/strata/unionfs"
)

// metacopyStack is two lowers: data files in the bottom one, of sizes that
// cross a page and a hole.
func metacopyStack(t *testing.T) (stack, map[string][]byte) {
	t.Helper()
	data := map[string][]byte{}
	rnd := rand.New(rand.NewPCG(1, 2))
	for i, name := range []string{"a", "b", "sub/c", "d"} {
		b := make([]byte, 100_000+i*7919)
		for k := range b {
			b[k] = byte(rnd.Uint32())
		}
		data[name] = b
	}
	s := newStack(t, 2, func(i int, dir string) {
		if i != 1 {
			return
		}
		for name, b := range data {
			if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})
	guardLowers(t, s.Lowers)
	return s, data
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func isMetacopy(t *testing.T, upper, rel string) bool {
	t.Helper()
	fd, err := unix.Open(upper, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	_, ok, err := cow.MetacopyAt(fd, rel)
	if err != nil {
		t.Fatalf("marker of %s: %v", rel, err)
	}
	return ok
}

// TestMetacopy: attribute changes copy no data up; reads see the lower data,
// through a rename and a remount; the first write or truncation copies the data
// and drops the marker; the attributes survive all of it.
func TestMetacopy(t *testing.T) {
	requireRoot(t)
	s, data := metacopyStack(t)
	cfg := unionfs.Config{Lowers: s.Lowers, Upper: s.Upper, Work: s.Work, Metacopy: true}
	mnt, unmount := mountUntil(t, cfg)
	when := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	if err := os.Chmod(filepath.Join(mnt, "a"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(filepath.Join(mnt, "b"), 7, 8); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(mnt, "sub/c"), when, when); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(mnt, "d"), "user.k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(mnt, "a"), filepath.Join(mnt, "a2")); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"a2", "b", "sub/c", "d"} {
		if !isMetacopy(t, s.Upper, rel) {
			t.Errorf("%s: no metacopy in the upper", rel)
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(s.Upper, rel), &st); err != nil {
			t.Fatal(err)
		}
		if st.Blocks != 0 {
			t.Errorf("%s: upper stub holds %d blocks, want none", rel, st.Blocks)
		}
	}
	check := func(stage string) {
		t.Helper()
		for rel, src := range map[string]string{"a2": "a", "b": "b", "sub/c": "sub/c", "d": "d"} {
			if got := mustRead(t, filepath.Join(mnt, rel)); !bytes.Equal(got, data[src]) {
				t.Errorf("%s: %s reads %d bytes unlike the lower's %d", stage, rel, len(got), len(data[src]))
			}
		}
		fi, err := os.Stat(filepath.Join(mnt, "a2"))
		if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != int64(len(data["a"])) {
			t.Errorf("%s: a2 is %v, %v; want mode 0600, size %d", stage, fi, err, len(data["a"]))
		}
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(mnt, "b"), &st); err != nil || st.Uid != 7 || st.Gid != 8 {
			t.Errorf("%s: b owned by %d:%d (%v), want 7:8", stage, st.Uid, st.Gid, err)
		}
		if fi, err := os.Stat(filepath.Join(mnt, "sub/c")); err != nil || !fi.ModTime().Equal(when) {
			t.Errorf("%s: sub/c mtime %v (%v), want %v", stage, fi.ModTime(), err, when)
		}
		v := make([]byte, 8)
		if n, err := unix.Getxattr(filepath.Join(mnt, "d"), "user.k", v); err != nil || string(v[:n]) != "v" {
			t.Errorf("%s: d's user.k = %q, %v", stage, v[:n], err)
		}
		if _, err := os.Lstat(filepath.Join(mnt, "a")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: a after its rename: %v", stage, err)
		}
	}
	check("first mount")
	unmount()

	mnt, unmount = mountUntil(t, cfg)
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(mnt, "a2"), &st); err != nil || st.Blocks == 0 {
		t.Errorf("a2 after remount: %d blocks (%v), want the lower data's", st.Blocks, err)
	}
	check("after remount")
	f, err := os.OpenFile(filepath.Join(mnt, "a2"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("XY"), 5); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(mnt, "b"), 10); err != nil {
		t.Fatal(err)
	}
	want := append([]byte(nil), data["a"]...)
	copy(want[5:], "XY")
	if got := mustRead(t, filepath.Join(mnt, "a2")); !bytes.Equal(got, want) {
		t.Errorf("a2 after a write: %d bytes, not the lower's with XY at 5", len(got))
	}
	if got := mustRead(t, filepath.Join(mnt, "b")); !bytes.Equal(got, data["b"][:10]) {
		t.Errorf("b after truncate(10) = %q", got)
	}
	unmount()
	for rel, w := range map[string][]byte{"a2": want, "b": data["b"][:10]} {
		if isMetacopy(t, s.Upper, rel) {
			t.Errorf("%s: still marked metacopy after its data was copied", rel)
		}
		if got := mustRead(t, filepath.Join(s.Upper, rel)); !bytes.Equal(got, w) {
			t.Errorf("upper %s: %d bytes, not the data written", rel, len(got))
		}
	}
	if fi, err := os.Stat(filepath.Join(s.Upper, "a2")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("upper a2 after the data copy: %v, %v; want mode 0600", fi, err)
	}
}

// TestMetacopyOff: without Metacopy, a chmod copies the data, and the upper
// holds whole files (what another reader of the upper expects).
func TestMetacopyOff(t *testing.T) {
	requireRoot(t)
	s, data := metacopyStack(t)
	mnt, unmount := mountUntil(t, unionfs.Config{Lowers: s.Lowers, Upper: s.Upper, Work: s.Work})
	if err := os.Chmod(filepath.Join(mnt, "a"), 0o600); err != nil {
		t.Fatal(err)
	}
	unmount()
	if isMetacopy(t, s.Upper, "a") || !bytes.Equal(mustRead(t, filepath.Join(s.Upper, "a")), data["a"]) {
		t.Errorf("upper a is not a whole copy")
	}
}

// TestMetacopyCrashDuringData: a crash while the data is copied leaves the
// marker (it goes last), whatever part of the data got to the stub: the union
// still reads the lower data.
func TestMetacopyCrashDuringData(t *testing.T) {
	requireRoot(t)
	s, data := metacopyStack(t)
	cfg := unionfs.Config{Lowers: s.Lowers, Upper: s.Upper, Work: s.Work, Metacopy: true}
	mnt, unmount := mountUntil(t, cfg)
	if err := os.Chmod(filepath.Join(mnt, "a"), 0o640); err != nil {
		t.Fatal(err)
	}
	unmount()
	// The state a kill leaves mid-copy: part of the data in the stub, the
	// marker still there.
	f, err := os.OpenFile(filepath.Join(s.Upper, "a"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data["a"][:4096], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("garbage"), 50_000); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	mnt, _ = mountUntil(t, cfg)
	if got := mustRead(t, filepath.Join(mnt, "a")); !bytes.Equal(got, data["a"]) {
		t.Errorf("a after a crash mid-copy: not the lower data")
	}
	// And the next write copies the data over whatever the crash left.
	if err := os.WriteFile(filepath.Join(mnt, "a"), nil, 0); err != nil { // O_TRUNC
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(mnt, "a")); err != nil || fi.Size() != 0 || fi.Mode().Perm() != 0o640 {
		t.Errorf("a after O_TRUNC: %v, %v; want empty, 0640", fi, err)
	}
}

// TestMetacopyDiff: a layer tar of an upper with a metacopy file carries the
// whole data, from the lowers; without the lowers it is an error, never a
// file of zeros.
func TestMetacopyDiff(t *testing.T) {
	requireRoot(t)
	s, data := metacopyStack(t)
	mnt, unmount := mountUntil(t, unionfs.Config{Lowers: s.Lowers, Upper: s.Upper, Work: s.Work, Metacopy: true})
	if err := os.Chmod(filepath.Join(mnt, "sub/c"), 0o600); err != nil {
		t.Fatal(err)
	}
	unmount()
	if !isMetacopy(t, s.Upper, "sub/c") {
		t.Fatal("sub/c: no metacopy")
	}
	var buf bytes.Buffer
	if err := store.WriteDiff(s.Upper, &buf, store.DiffOptions{Lowers: s.Lowers}); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	found := false
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for k := range hdr.PAXRecords {
			if bytes.Contains([]byte(k), []byte("metacopy")) {
				t.Errorf("%s: tar carries %s", hdr.Name, k)
			}
		}
		if hdr.Name != "sub/c" {
			continue
		}
		found = true
		got, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data["sub/c"]) || hdr.Mode != 0o600 {
			t.Errorf("sub/c in the tar: %d bytes, mode %o; want the lower's %d, 0600", len(got), hdr.Mode, len(data["sub/c"]))
		}
	}
	if !found {
		t.Error("sub/c not in the tar")
	}
	if err := store.WriteDiff(s.Upper, io.Discard, store.DiffOptions{}); err == nil {
		t.Error("WriteDiff of a metacopy without lowers: no error")
	}
	changes, err := store.Diff(s.Upper, s.Lowers)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) == 0 {
		t.Error("strata diff: no change for sub/c")
	}
}
