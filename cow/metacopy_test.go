package cow

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/strata-fs/strata/whiteout"
)

// TestMetacopy: a metadata-only copy has the attributes, the size, no blocks
// and the marker; CopyData fills it in place (same inode), keeps the
// attributes, and drops the marker.
func TestMetacopy(t *testing.T) {
	requireRoot(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 40_000)
	e := newEnv(t, whiteout.OCI, func(lower string) {
		mustMkdir(t, filepath.Join(lower, "d"))
		mustWrite(t, filepath.Join(lower, "d/f"), string(data), 0o4751)
		if err := os.Lchown(filepath.Join(lower, "d/f"), 12, 34); err != nil {
			t.Fatal(err)
		}
		setXattr(t, filepath.Join(lower, "d/f"), "user.k", "v")
		setTimes(t, filepath.Join(lower, "d/f"), 1e9, 2e9)
	})
	if _, err := e.u.CopyUp(Source{Root: e.lowerFd, Rel: "d"}, "d", Options{Size: -1}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.u.CopyUp(Source{Root: e.lowerFd, Rel: "d/f"}, "d/f", Options{Size: 0, MetaOnly: true}); err == nil {
		t.Error("MetaOnly with a size: no error")
	}
	res, err := e.u.CopyUp(Source{Root: e.lowerFd, Rel: "d/f"}, "d/f", Options{Size: -1, MetaOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Method != Metacopy {
		t.Errorf("method %v, want metacopy", res.Method)
	}
	up := filepath.Join(e.upper, "d/f")
	st := lstat(t, up)
	low := lstat(t, filepath.Join(e.lower, "d/f"))
	if st.Size != low.Size || st.Blocks != 0 || st.Mode != low.Mode || st.Uid != 12 || st.Gid != 34 || st.Mtim != low.Mtim {
		t.Errorf("stub: size %d blocks %d mode %o owner %d:%d mtime %v; want the lower's %d, none, %o, 12:34, %v",
			st.Size, st.Blocks, st.Mode, st.Uid, st.Gid, st.Mtim, low.Size, low.Mode, low.Mtim)
	}
	x := xattrs(t, up)
	if x[whiteout.TrustedMetacopyXattr] != "/d/f" || x["user.k"] != "v" {
		t.Errorf("stub xattrs %v: want the marker /d/f and user.k", x)
	}
	rootFd := openPath(t, e.upper)
	if src, ok, err := MetacopyAt(rootFd, "d/f"); err != nil || !ok || src != "d/f" {
		t.Errorf("MetacopyAt = %q, %v, %v; want d/f", src, ok, err)
	}

	// A data copy against the wrong lower file fails and leaves the stub.
	if _, err := e.u.CopyData(Source{Root: e.lowerFd, Rel: "d"}, "d/f", -1); err == nil {
		t.Error("CopyData from a directory: no error")
	}
	if _, ok, _ := MetacopyAt(rootFd, "d/f"); !ok {
		t.Error("a failed CopyData dropped the marker")
	}

	res, err = e.u.CopyData(Source{Root: e.lowerFd, Rel: "d/f"}, "d/f", -1)
	if err != nil {
		t.Fatal(err)
	}
	after := lstat(t, up)
	if after.Ino != st.Ino || after.Mode != st.Mode || after.Uid != 12 || after.Mtim != st.Mtim {
		t.Errorf("after CopyData: ino %d mode %o uid %d mtime %v; want %d %o 12 %v", after.Ino, after.Mode, after.Uid, after.Mtim, st.Ino, st.Mode, st.Mtim)
	}
	got, err := os.ReadFile(up)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("data after CopyData: %d bytes (%v), want the lower's %d", len(got), err, len(data))
	}
	if _, ok := xattrs(t, up)[whiteout.TrustedMetacopyXattr]; ok {
		t.Error("marker left after CopyData")
	}
	// Twice is a no-op: the file is no metacopy any more.
	if _, err := e.u.CopyData(Source{Root: e.lowerFd, Rel: "d/f"}, "d/f", 10); err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, up); st.Size != int64(len(data)) {
		t.Errorf("a second CopyData changed the size to %d", st.Size)
	}
}

// TestMetacopyTruncate: CopyData for a truncation copies only what is kept.
func TestMetacopyTruncate(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, whiteout.OCI, func(lower string) {
		mustWrite(t, filepath.Join(lower, "f"), "hello, world", 0o644)
	})
	if _, err := e.u.CopyUp(Source{Root: e.lowerFd, Rel: "f"}, "f", Options{Size: -1, MetaOnly: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.u.CopyData(Source{Root: e.lowerFd, Rel: "f"}, "f", 5); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(e.upper, "f")); err != nil || string(got) != "hello" {
		t.Errorf("after CopyData(5): %q, %v", got, err)
	}
}
