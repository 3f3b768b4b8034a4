package test

// strata diff against a diff of the merged trees: the union of the lowers
// alone (before) and of the upper over them (after), each walked through a
// read-only strata mount. store.Diff reads the upper and the lowers' raw
// directories instead; the two must tell the same story.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	store "github.com/strata-fs/strata/layers"
	"github.com/strata-fs/strata/unionfs"
	"github.com/strata-fs/strata/whiteout"
)

// node is what a merged tree shows of a path.
type treeNode struct {
	isDir bool
	sig   string // type, mode, owner, mtime, and the content or link target
}

// mountUntil mounts cfg with strata and returns the mount point and a function
// that unmounts it, which runs at the end of the test at the latest.
func mountUntil(t *testing.T, cfg unionfs.Config) (string, func()) {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "m")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	srv, err := unionfs.Mount(mnt, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	unmount := func() {
		once.Do(func() {
			if err := srv.Unmount(); err != nil {
				t.Errorf("unmount %s: %v (detaching)", mnt, err)
				_ = unix.Unmount(mnt, unix.MNT_DETACH) // never leave a mount behind
			}
			srv.Wait()
		})
	}
	t.Cleanup(unmount)
	return mnt, unmount
}

// mergedTree mounts the layers read-only (top first) and walks them.
func mergedTree(t *testing.T, lowers []string) map[string]treeNode {
	t.Helper()
	mnt, unmount := mountUntil(t, unionfs.Config{Lowers: lowers})
	defer unmount()
	tree := map[string]treeNode{}
	err := filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(mnt, p)
		if rel == "." {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		sig := fmt.Sprintf("%o %d:%d %d", st.Mode, st.Uid, st.Gid, st.Mtim.Nano())
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			sig += " " + hex.EncodeToString(h[:8])
		case syscall.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			sig += " -> " + target
		}
		tree["/"+rel] = treeNode{isDir: d.IsDir(), sig: sig}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func under(p, dir string) bool { return strings.HasPrefix(p, dir+"/") }

// checkDiff checks that changes turn before into after, with docker diff's
// meaning: D removes a path and all below it (for a directory that is still
// there, an opaque one, only what was below it); A adds a path that was not
// there (or was removed by a D); C names a path in both that changed (a
// directory also when something below it did). A path in both that no line
// names must be unchanged.
func checkDiff(t *testing.T, before, after map[string]treeNode, changes []store.Change) {
	t.Helper()
	have := map[string]bool{}
	for p := range before {
		have[p] = true
	}
	removeBelow := func(dir string) {
		for p := range have {
			if under(p, dir) {
				delete(have, p)
			}
		}
	}
	named := map[string]store.ChangeKind{}
	fresh := map[string]bool{} // removed, then there again: not compared
	for _, c := range changes {
		p := c.Path
		if _, dup := named[p]; dup {
			t.Errorf("%s named twice", c)
		}
		named[p] = c.Kind
		switch c.Kind {
		case store.Deleted:
			if !have[p] {
				t.Errorf("%s: not there before", c)
			}
			removeBelow(p)
			if a, ok := after[p]; ok && a.isDir {
				fresh[p] = true // opaque: the directory stays, all it held goes
			} else {
				delete(have, p)
			}
		case store.Added:
			if have[p] {
				t.Errorf("%s: already there", c)
			}
			if _, ok := after[p]; !ok {
				t.Errorf("%s: not there after", c)
			}
			have[p] = true
			fresh[p] = true
		case store.Changed:
			b, inBefore := before[p]
			a, inAfter := after[p]
			if !have[p] || !inBefore || !inAfter {
				t.Errorf("%s: want a path there before and after", c)
				continue
			}
			if b.isDir && !a.isDir {
				removeBelow(p) // a directory replaced: its entries went with it
			}
		}
	}
	for p := range have {
		if _, ok := after[p]; !ok {
			t.Errorf("%s: there after applying the diff, not in the union", p)
		}
	}
	for p := range after {
		if !have[p] {
			t.Errorf("%s: in the union, missing after applying the diff", p)
		}
	}
	// Unnamed paths are unchanged; C is for a change.
	changedBelow := func(dir string) bool {
		for p := range named {
			if under(p, dir) {
				return true
			}
		}
		return false
	}
	for p, a := range after {
		b, ok := before[p]
		if !ok || fresh[p] {
			continue
		}
		k, isNamed := named[p]
		switch {
		case !isNamed && a.sig != b.sig:
			t.Errorf("%s changed (%s -> %s) and the diff does not say so", p, b.sig, a.sig)
		case isNamed && k == store.Changed && a.sig == b.sig && !(a.isDir && changedBelow(p)):
			t.Errorf("C %s: nothing changed", p)
		}
	}
	if t.Failed() {
		var b strings.Builder
		for _, c := range changes {
			b.WriteString(c.String() + "\n")
		}
		t.Logf("the diff:\n%s", b.String())
	}
}

func TestDiffAgreesWithMergedTrees(t *testing.T) {
	requireRoot(t)
	for _, f := range []whiteout.Format{whiteout.OCI, whiteout.Overlay} {
		t.Run(f.String(), func(t *testing.T) {
			s := diffStack(t)
			before := mergedTree(t, s.Lowers)
			mnt, unmount := mountUntil(t, unionfs.Config{Lowers: s.Lowers, Upper: s.Upper, Work: s.Work, Whiteout: f})
			diffSession(t, mnt)
			unmount() // the upper must rest before it is read
			after := mergedTree(t, append([]string{s.Upper}, s.Lowers...))
			changes, err := store.Diff(s.Upper, s.Lowers)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.IsSortedFunc(changes, func(a, b store.Change) int { return strings.Compare(a.Path, b.Path) }) {
				t.Errorf("diff not sorted by path: %v", changes)
			}
			if len(changes) < 10 {
				t.Errorf("only %d changes: the session did more", len(changes))
			}
			checkDiff(t, before, after, changes)
		})
	}
}

// diffStack: three layers, with the lowers' own whiteouts and opaque
// directory, so that "there before" means the lowers' merge.
func diffStack(t *testing.T) stack {
	t.Helper()
	return newStack(t, 3, func(i int, d string) {
		switch i {
		case 0:
			writeFiles(t, d, map[string]string{
				"etc/motd": "motd", "etc/gone": "gone", "etc/keep": "keep", "etc/mode": "mode",
				"tmp/x": "x", "var/cache/c1": "c1", "a/sub/f": "f", "a/g": "g",
				"r/deep/file": "deep", "d2f/child": "c", "f2d": "file", "old/one": "1", "old/two": "2",
				"opq/lower1": "l1", "opq/lower2": "l2", "hidden/x": "x",
			})
		case 1:
			writeFiles(t, d, map[string]string{
				"etc/app.conf": "app", "etc/" + whiteout.Prefix + "gone": "",
				"var/cache/" + whiteout.OpaqueMarker: "", "var/cache/c2": "c2",
				whiteout.Prefix + "hidden": "",
			})
		case 2:
			writeFiles(t, d, map[string]string{"etc/hosts": "fix hosts", "tmp/y": "y"})
		}
	})
}

// diffSession changes the union in every way a diff can tell.
func diffSession(t *testing.T, mnt string) {
	t.Helper()
	p := func(n string) string { return filepath.Join(mnt, n) }
	steps := []struct {
		what string
		do   func() error
	}{
		{"append etc/motd", func() error {
			f, err := os.OpenFile(p("etc/motd"), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return err
			}
			_, err = f.WriteString("more")
			return errorsJoin(err, f.Close())
		}},
		{"chmod etc/mode", func() error { return os.Chmod(p("etc/mode"), 0o600) }},
		{"rm etc/keep", func() error { return os.Remove(p("etc/keep")) }},
		{"add etc/new", func() error { return os.WriteFile(p("etc/new"), []byte("new"), 0o644) }},
		{"add and rm etc/brief", func() error {
			return errorsJoin(os.WriteFile(p("etc/brief"), nil, 0o644), os.Remove(p("etc/brief")))
		}},
		{"rm -r r", func() error { return os.RemoveAll(p("r")) }},
		{"d2f: dir to file", func() error {
			return errorsJoin(os.RemoveAll(p("d2f")), os.WriteFile(p("d2f"), []byte("now a file"), 0o644))
		}},
		{"f2d: file to dir", func() error {
			return errorsJoin(os.Remove(p("f2d")), os.MkdirAll(p("f2d/inside"), 0o755))
		}},
		{"opq: emptied, refilled (opaque)", func() error {
			return errorsJoin(os.RemoveAll(p("opq")), os.Mkdir(p("opq"), 0o755),
				os.WriteFile(p("opq/lower1"), []byte("again"), 0o644), os.WriteFile(p("opq/new"), nil, 0o644))
		}},
		{"mv a b", func() error { return os.Rename(p("a"), p("b")) }},
		{"mv old/one old/uno", func() error { return os.Rename(p("old/one"), p("old/uno")) }},
		{"new tree", func() error {
			return errorsJoin(os.MkdirAll(p("n/m"), 0o755), os.Symlink("../etc/motd", p("n/m/link")))
		}},
		{"tmp/x over tmp/y", func() error { return os.Rename(p("tmp/x"), p("tmp/y")) }},
		{"hidden again", func() error { return os.WriteFile(p("hidden"), []byte("back"), 0o644) }},
		{"var/cache/c3", func() error { return os.WriteFile(p("var/cache/c3"), nil, 0o644) }},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.what, err)
		}
	}
}

func errorsJoin(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
