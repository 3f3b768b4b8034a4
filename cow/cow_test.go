package cow

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/whiteout"
)

func TestOpen(t *testing.T) {
	base := t.TempDir()
	upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
	mustMkdir(t, upper)
	mustMkdir(t, work)
	u, err := Open(upper, work, whiteout.Overlay, false)
	if err != nil {
		t.Fatal(err)
	}
	if st := lstat(t, filepath.Join(work, "work")); st.Mode != unix.S_IFDIR|0o700 {
		t.Errorf("work/work: got mode %o, want dir 0700", st.Mode)
	}
	if u.Privileged != (os.Geteuid() == 0) {
		t.Errorf("Privileged: got %v as uid %d", u.Privileged, os.Geteuid())
	}
	if u.Format != whiteout.Overlay || u.Sync {
		t.Errorf("got Format %v Sync %v", u.Format, u.Sync)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if err := u.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestOpenCleansWork: whatever an interrupted change left in work/work goes,
// without following a symlink out of it.
func TestOpenCleansWork(t *testing.T) {
	v := victim(t)
	base := t.TempDir()
	upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
	mustMkdir(t, upper)
	mustWrite(t, filepath.Join(upper, "keep"), "upper", 0o644)
	keepUnchanged(t, upper)
	ww := filepath.Join(work, "work")
	mustMkdir(t, filepath.Join(ww, "copyup-1/a/b"))
	mustWrite(t, filepath.Join(ww, "copyup-1/a/b/f"), "x", 0o644)
	mustWrite(t, filepath.Join(ww, "copyup-2"), "partial", 0o600)
	for name, target := range map[string]string{"link": v, "copyup-1/a/link": v, "copyup-1/keep": filepath.Join(v, "keep")} {
		if err := os.Symlink(target, filepath.Join(ww, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mkfifo(filepath.Join(ww, "copyup-1/fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(ww, "copyup-1/a"), 0); err != nil {
		t.Fatal(err)
	}
	u, err := Open(upper, work, whiteout.OCI, true)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	ents, err := os.ReadDir(ww)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left in work: %s", e.Name())
	}
}

// TestOpenWorkSymlink: a work/work that is a symlink is refused, not emptied.
func TestOpenWorkSymlink(t *testing.T) {
	v := victim(t)
	base := t.TempDir()
	upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
	mustMkdir(t, upper)
	mustMkdir(t, work)
	if err := os.Symlink(v, filepath.Join(work, "work")); err != nil {
		t.Fatal(err)
	}
	if u, err := Open(upper, work, whiteout.OCI, true); err == nil {
		_ = u.Close()
		t.Fatal("Open followed work/work, a symlink")
	}
}

func TestOpenCrossDevice(t *testing.T) {
	upper := mountTmpfs(t, "1m")
	work := t.TempDir()
	_, err := Open(upper, work, whiteout.OCI, true)
	if !errors.Is(err, unix.EXDEV) {
		t.Fatalf("got %v, want EXDEV", err)
	}
	if !strings.Contains(err.Error(), upper) || !strings.Contains(err.Error(), work) {
		t.Errorf("error %q should name %s and %s", err, upper, work)
	}
}

func TestOpenMissing(t *testing.T) {
	base := t.TempDir()
	mustMkdir(t, filepath.Join(base, "work"))
	_, err := Open(filepath.Join(base, "nope"), filepath.Join(base, "work"), whiteout.OCI, true)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v, want ErrNotExist", err)
	}
}

func TestRemoveAll(t *testing.T) {
	v := victim(t)
	e := newEnv(t, whiteout.OCI, nil)
	mustMkdir(t, filepath.Join(e.upper, "t/a/b/c"))
	mustWrite(t, filepath.Join(e.upper, "t/a/b/c/f"), "x", 0o644)
	mustWrite(t, filepath.Join(e.upper, "t/.wh.x"), "", 0o644)
	mustWrite(t, filepath.Join(e.upper, "t/.wh..wh..opq"), "", 0o644)
	if err := os.Symlink(v, filepath.Join(e.upper, "t/a/tovictim")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(v, "keep"), filepath.Join(e.upper, "t/a/b/tokeep")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(e.upper, "t/a/b"), 0o500); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(e.upper, "file"), "x", 0o644)
	for _, rel := range []string{"t", "file", "missing", "t"} {
		if err := e.u.RemoveAll(rel); err != nil {
			t.Errorf("RemoveAll(%q): %v", rel, err)
		}
		if exists(t, filepath.Join(e.upper, rel)) {
			t.Errorf("%s still there", rel)
		}
	}
	if err := e.u.RemoveAll(""); err == nil {
		t.Error("RemoveAll(\"\") removed the upper root")
	}
	if !exists(t, e.upper) {
		t.Fatal("the upper root is gone")
	}
}
