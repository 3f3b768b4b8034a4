package test

// The differential test is strata's reference: every case builds the same
// declared layers twice, mounts one copy with kernel overlayfs and the other with
// strata, runs the same system calls on both, and requires the same results, the
// same merged tree, the same upper layer (by meaning), and untouched lowers.
//
// Run it as root:
//
//	go test ./test/ -run 'TestDifferential|TestOCILowers' -count=1
//
// -diff.self mounts overlayfs on both sides, to check the fixtures and the
// comparator themselves.

import (
	"flag"
	"fmt"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/unionfs"
	"github.com/strata-fs/strata/whiteout"
)

var diffSelf = flag.Bool("diff.self", false, "differential test: compare kernel overlayfs with itself instead of with strata")

// diffCase is one row of the differential table.
type diffCase struct {
	name string
	// layers are the lower layers, bottom first (1 to 3).
	layers [][]fx
	// ops runs on each mount; every result it records must be the same on both.
	ops func(r *opRun)
	// mergedOnly, when set, says why the uppers cannot be compared (the
	// overlay side emulated mv(1) after EXDEV, say).
	mergedOnly string
}

func TestDifferential(t *testing.T) {
	requireRoot(t)
	formats := []whiteout.Format{whiteout.Overlay, whiteout.OCI}
	if *diffSelf {
		formats = formats[:1] // overlay writes one format only
	}
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			for _, c := range diffCases() {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					runDiff(t, c, f, false)
				})
			}
		})
	}
	if *diffSelf {
		return
	}
	// With metacopy the upper holds stubs overlayfs (metacopy=off) does not
	// write: the merged trees must agree all the same.
	t.Run("oci-metacopy", func(t *testing.T) {
		for _, c := range diffCases() {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				runDiff(t, c, whiteout.OCI, true)
			})
		}
	})
}

func runDiff(t *testing.T, c diffCase, f whiteout.Format, metacopy bool) {
	fill := func(i int, dir string) { applyFixture(t, dir, c.layers[i]) }
	ref := newStack(t, len(c.layers), fill)
	sut := newStack(t, len(c.layers), fill)
	sutName := "strata-" + f.String()
	if *diffSelf {
		sutName = "overlay2"
	}
	refLowers := snapshotLowers(t, ref)
	sutLowers := snapshotLowers(t, sut)

	refMnt := mountOverlay(t, ref)
	var sutMnt string
	if *diffSelf {
		sutMnt = mountOverlay(t, sut)
	} else if metacopy {
		sutName += "-metacopy"
		guardLowers(t, sut.Lowers)
		sutMnt = mountConfig(t, unionfs.Config{Lowers: sut.Lowers, Upper: sut.Upper, Work: sut.Work, Whiteout: f, Metacopy: true})
	} else {
		sutMnt = mountStrata(t, sut, f)
	}

	// Before any change: the same merged tree, and reading it copied nothing up.
	compareTrees(t, "merged trees before ops", "overlay", snapshot(t, refMnt, snapMerged), sutName, snapshot(t, sutMnt, snapMerged))
	compareTrees(t, "uppers after reading", "overlay", upperMeaning(t, ref), sutName, upperMeaning(t, sut))

	rr := &opRun{t: t, mnt: refMnt, mvFallback: true}
	rs := &opRun{t: t, mnt: sutMnt, mvFallback: *diffSelf}
	if c.ops != nil {
		c.ops(rr)
		c.ops(rs)
	}
	compareLogs(t, rr.log, sutName, rs.log)
	if testing.Verbose() && len(rr.log) > 0 {
		t.Logf("overlay's results:\n\t%s", strings.Join(rr.log, "\n\t"))
	}

	syncfs(t, refMnt)
	syncfs(t, sutMnt)
	compareTrees(t, "merged trees after ops", "overlay", snapshot(t, refMnt, snapMerged), sutName, snapshot(t, sutMnt, snapMerged))
	if metacopy {
		t.Logf("uppers not compared: metacopy stubs")
	} else if c.mergedOnly == "" {
		compareTrees(t, "uppers after ops", "overlay", upperMeaning(t, ref), sutName, upperMeaning(t, sut))
	} else {
		t.Logf("uppers not compared: %s", c.mergedOnly)
	}
	for i, before := range refLowers {
		compareTrees(t, fmt.Sprintf("overlay's lower %d before and after", i), "before", before, "after", snapshot(t, ref.Lowers[i], snapRaw))
	}
	for i, before := range sutLowers {
		compareTrees(t, fmt.Sprintf("%s's lower %d before and after", sutName, i), "before", before, "after", snapshot(t, sut.Lowers[i], snapRaw))
	}
}

// upperMeaning reads the upper of s by meaning (see snapUpper), and drops what
// means nothing: a whiteout or an opaque mark with no entry of that path in any
// lower layer. Overlay writes such marks in some places (it makes a directory
// moved into a merged one opaque, for one) and strata need not follow.
func upperMeaning(t *testing.T, s stack) tree {
	t.Helper()
	tr := snapshot(t, s.Upper, snapUpper)
	below := func(rel string) bool {
		for _, l := range s.Lowers {
			var st unix.Stat_t
			if unix.Lstat(filepath.Join(l, rel), &st) == nil {
				return true
			}
		}
		return false
	}
	for rel, e := range tr {
		switch {
		case e.Type == "whiteout" && !below(rel):
			delete(tr, rel)
		case e.Opaque && !below(rel):
			e.Opaque = false
		}
	}
	return tr
}

func snapshotLowers(t *testing.T, s stack) []tree {
	t.Helper()
	var out []tree
	for _, l := range s.Lowers {
		out = append(out, snapshot(t, l, snapRaw))
	}
	return out
}

func syncfs(t *testing.T, mnt string) {
	t.Helper()
	fd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", mnt, err)
	}
	defer func() { _ = unix.Close(fd) }() // a directory opened to name the filesystem
	if err := unix.Syncfs(fd); err != nil {
		t.Errorf("syncfs %s: %v", mnt, err)
	}
}

func compareLogs(t *testing.T, ref []string, sutName string, sut []string) {
	t.Helper()
	n := max(len(ref), len(sut))
	var diffs []string
	for i := 0; i < n; i++ {
		a, b := "(none)", "(none)"
		if i < len(ref) {
			a = ref[i]
		}
		if i < len(sut) {
			b = sut[i]
		}
		if a != b {
			diffs = append(diffs, fmt.Sprintf("op %d:\n\toverlay: %s\n\t%s: %s", i, a, sutName, b))
		}
	}
	if len(diffs) > 0 {
		t.Errorf("results of operations differ:\n%s", strings.Join(diffs, "\n"))
		t.Logf("overlay's results:\n\t%s", strings.Join(ref, "\n\t"))
	}
}

// deepDirs is a 20-level path whose directories differ in mode, owner and xattrs.
func deepDirs() (string, []fx) {
	var steps []fx
	p := ""
	for i := 0; i < 20; i++ {
		p = path.Join(p, fmt.Sprintf("l%02d", i))
		steps = append(steps,
			fDirM(p, []uint32{0o755, 0o750, 0o700, 0o711, 0o2775}[i%5]),
			fChown(p, 100+i, 200+i),
			fXattr(p, "user.level", fmt.Sprint(i)))
		if i%4 == 0 {
			steps = append(steps, fXattr(p, "trusted.level", fmt.Sprint(i)))
		}
	}
	return p, steps
}

// manyFiles makes files named f%04d for i in [from, to) under dir.
func manyFiles(dir string, from, to int, content string) []fx {
	var out []fx
	for i := from; i < to; i++ {
		out = append(out, fFile(path.Join(dir, fmt.Sprintf("f%04d", i)), content))
	}
	return out
}

// manySparse makes n sparse files s%03d of size bytes.
func manySparse(n int, size int64) []fx {
	var out []fx
	for i := 0; i < n; i++ {
		out = append(out, fSparse(fmt.Sprintf("s%03d", i), size))
	}
	return out
}

func manyWhiteouts(dir string, from, to int) []fx {
	var out []fx
	for i := from; i < to; i++ {
		out = append(out, fWhiteout(path.Join(dir, fmt.Sprintf("f%04d", i))))
	}
	return out
}

func join(parts ...[]fx) []fx {
	var out []fx
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

var (
	name255  = strings.Repeat("n", 255)
	name256  = strings.Repeat("n", 256)
	uniName  = "ünïcödé ☃ 日本"
	oddNames = []string{"with space", " lead", "trail ", uniName, "tab\there", "new\nline", "-dash", ".hidden", "back\\slash", "q'u\"ote", name255}
)

func diffCases() []diffCase {
	deep, deepSteps := deepDirs()
	threeDirs := layers(
		layer(fDirM("d", 0o700), fChown("d", 1, 1), fXattr("d", "user.layer", "bottom"), fFile("d/b", "b"), fFile("d/shared", "bottom"), fFile("d/sub/b", "b")),
		layer(fDirM("d", 0o750), fChown("d", 2, 2), fXattr("d", "user.layer", "middle"), fFile("d/m", "m"), fFile("d/shared", "middle"), fFile("d/sub/m", "m")),
		layer(fDirM("d", 0o775), fChown("d", 3, 3), fXattr("d", "user.layer", "top"), fXattr("d", "trusted.top", "1"), fFile("d/t", "t"), fFile("d/sub/t", "t")),
	)
	basic := layers(layer(
		fFile("a", "0123456789"), fFile("b", "bbbb"), fFileM("x", "exec", 0o755),
		fFile("d/f", "in d"), fDir("e"), fSymlink("s", "a"),
		fXattr("a", "user.old", "1"), fXattr("a", "trusted.t", "2"),
	))
	return []diffCase{
		// Creating as another user: the owner is the caller, the group the
		// caller's or a set-group-ID directory's (which a new directory
		// inherits), and the mode the caller's umask leaves; a lower
		// directory is copied up first, its owner and mode kept.
		{name: "create/as-user", layers: layers(layer(
			fDirM("pub", 0o777), fFile("pub/old", "o"),
			fDirM("grp", 0o775), fChown("grp", 0, 2000), fChmod("grp", 0o2777), fFile("grp/old", "o"),
			fDirM("mine", 0o755), fChown("mine", 1000, 1000))),
			ops: func(r *opRun) {
				r.asUser(1000, 1000, "echo hi > pub/f && mkdir pub/d && mkfifo pub/p && ln -s f pub/s && ln pub/f pub/h && touch pub/e")
				r.asUser(1000, 1000, "echo hi > grp/f && mkdir grp/d && mkdir -m 0750 grp/d2 && mkfifo grp/p && ln -s f grp/s && install -m 2755 /dev/null grp/x")
				r.asUser(1000, 1000, "touch mine/f && chmod 4755 mine/f && echo more >> mine/f")
				r.asUser(1001, 1001, "touch mine/g")
				r.asUser(1001, 1001, "echo no > grp/old")
				r.stat("pub/f", false)
				r.stat("grp/d", false)
				r.stat("grp/x", false)
				r.stat("mine/f", false)
			}},
		// The directory's set-group-ID bit and group, changed between
		// creates in it: each create follows the latest.
		{name: "create/setgid-changed-between", layers: layers(layer(
			fDirM("grp", 0o775), fChown("grp", 0, 2000))),
			ops: func(r *opRun) {
				r.create("grp/f1", "1", 0o644)
				r.chmod("grp", 0o2775)
				r.create("grp/f2", "2", 0o644)
				r.lchown("grp", 0, 3000)
				r.create("grp/f3", "3", 0o644)
				r.mkdir("grp/d", 0o755)
				r.chmod("grp", 0o775)
				r.create("grp/f4", "4", 0o644)
				r.asUser(1000, 1000, "mkdir grp/u 2>&1; echo hi > grp/d/v 2>&1; true")
				for _, f := range []string{"grp/f1", "grp/f2", "grp/f3", "grp/f4", "grp/d"} {
					r.stat(f, false)
				}
			}},
		// Set-ID bits, dropped by a write, truncate or fallocate of a
		// caller without CAP_FSETID (set-group-ID only with group
		// execute), kept for root's, and by chown dropped for all; lower
		// files (copied up first) and upper ones alike.
		{name: "setid/dropped-by-unprivileged-writes", layers: layers(layer(
			fFileM("w", "w", 0o4777), fFileM("t", "t", 0o6777), fFileM("a", "a", 0o4777),
			fFileM("g", "g", 0o2777), fFileM("gnox", "gnox", 0o2767), fFileM("r", "r", 0o4777),
			fFileM("c", "c", 0o4755), fFileM("keep", "k", 0o4777), fFileM("otrunc", "o", 0o4777),
			fFileM("cg", "cg", 0o2745), fChown("cg", 0, 2000), fFileM("cgx", "cgx", 0o2755), fChown("cgx", 0, 2000))),
			ops: func(r *opRun) {
				r.asUser(1000, 1000, "echo more >> w; truncate -s 1 t; fallocate -l 65536 a; echo x >> g; echo x >> gnox; cat keep >/dev/null; echo new > otrunc")
				r.appendTo("r", "root")
				r.lchown("c", 1000, 1000)
				r.lchown("cg", 1000, 2000)
				r.lchown("cgx", 1000, 2000)
				r.asUser(1000, 1000, "chmod 4777 c && echo y >> c")
				r.asUser(1000, 1000, "dd if=/dev/zero of=w bs=1 count=1 seek=100 conv=notrunc status=none")
				for _, f := range []string{"w", "t", "a", "g", "gnox", "r", "c", "keep", "otrunc", "cg", "cgx"} {
					r.stat(f, false)
				}
			}},
		{name: "create/root-in-setgid-dir", layers: layers(layer(
			fDirM("grp", 0o775), fChown("grp", 0, 2000), fChmod("grp", 0o2775))),
			ops: func(r *opRun) {
				r.create("grp/f", "data", 0o640)
				r.mkdir("grp/d", 0o700)
				r.mknod("grp/p", unix.S_IFIFO|0o600, 0)
				r.symlink("f", "grp/s")
				r.stat("grp/f", false)
				r.stat("grp/d", false)
			}},
		// Reading: which layer shows, and how directories merge.
		{name: "read/bottom-middle-top", layers: layers(
			layer(fFile("b", "bottom")), layer(fFile("m", "middle")), layer(fFile("t", "top"))),
			ops: func(r *opRun) { r.read("b"); r.read("m"); r.read("t"); r.readdir(".") }},
		{name: "read/shadow-3-layers", layers: layers(
			layer(fFileM("x", "bottom content, longer", 0o600), fChown("x", 1, 1), fFile("y", "y bottom")),
			layer(fFileM("x", "middle", 0o640), fChown("x", 2, 2), fFile("y", "y middle")),
			layer(fFileM("x", "top", 0o604), fChown("x", 3, 3), fXattr("x", "user.t", "top"))),
			ops: func(r *opRun) { r.read("x"); r.stat("x", false); r.read("y"); r.listxattr("x") }},
		{name: "read/dir-merge-3-layers", layers: threeDirs,
			ops: func(r *opRun) { r.readdir("d"); r.readdir("d/sub"); r.stat("d", false); r.read("d/shared") }},
		{name: "read/nondir-hides-dir", layers: layers(
			layer(fFile("d/a", "a"), fFile("d/b", "b")),
			layer(fFile("d", "a file now"))),
			ops: func(r *opRun) { r.stat("d", false); r.stat("d/a", false); r.readdir(".") }},
		{name: "read/dir-hides-file", layers: layers(
			layer(fFile("d", "a file below")),
			layer(fFile("d/x", "x")),
			layer(fFile("d/y", "y"))),
			ops: func(r *opRun) { r.readdir("d") }},
		{name: "read/whiteout-middle", layers: layers(
			layer(fFile("a", "a"), fFile("d/x", "x"), fFile("d/y", "y"), fFile("keep", "k")),
			layer(fWhiteout("a"), fWhiteout("d/x")),
			layer(fFile("d/z", "z"))),
			ops: func(r *opRun) { r.stat("a", false); r.stat("d/x", false); r.readdir("d"); r.readdir(".") }},
		{name: "read/whiteout-then-dir-above", layers: layers(
			layer(fFile("d/old1", "1"), fFile("d/old2", "2")),
			layer(fWhiteout("d")),
			layer(fFile("d/new", "n"))),
			ops: func(r *opRun) { r.readdir("d") }},
		{name: "read/opaque-middle", layers: layers(
			layer(fFile("d/a", "a"), fFile("d/b", "b"), fFile("d/sub/c", "c"), fFile("other/o", "o")),
			layer(fOpaque("d"), fFile("d/m", "m"), fFile("other/p", "p")),
			layer(fFile("d/t", "t"))),
			ops: func(r *opRun) { r.readdir("d"); r.readdir("other"); r.stat("d/sub", false); r.listxattr("d") }},
		{name: "read/orphan-whiteouts", layers: layers(
			layer(fFile("keep", "k"), fDir("o")),
			layer(fWhiteout("nothing"), fWhiteout("o/w"), fFile("o/f", "f"))),
			ops: func(r *opRun) { r.readdir("."); r.readdir("o"); r.stat("nothing", false); r.stat("o/w", false) }},
		{name: "read/symlinks", layers: layers(
			layer(fFile("f", "target content"), fDir("dir"), fFile("dir/in", "in"),
				fSymlink("abs", "/nonexistent/abs"), fSymlink("rel", "f"), fSymlink("up", "../x"),
				fSymlink("dangling", "nowhere"), fSymlink("todir", "dir"), fSymlink("chain", "rel")),
			layer(fSymlink("shadowed", "top"))),
			ops: func(r *opRun) {
				for _, s := range []string{"abs", "rel", "up", "dangling", "todir", "chain", "shadowed"} {
					r.readlink(s)
				}
				r.read("chain")
				r.stat("todir", true)
				r.readdir("todir")
				r.read("todir/in")
				r.stat("dangling", true)
			}},
		{name: "read/hardlinks-lower", layers: layers(
			layer(fFile("a", "linked"), fHardlink("b", "a"), fFile("d/c", "c"), fHardlink("d/c2", "d/c"), fHardlink("c3", "d/c")),
			layer(fFile("b", "shadows one name"))),
			ops: func(r *opRun) { r.stat("a", false); r.stat("b", false); r.stat("d/c2", false) }},
		{name: "read/special-files", layers: layers(
			layer(fFifo("fifo"), fChar("null", 1, 3), fBlock("loop", 7, 0), fSocket("sock"),
				fChown("null", 5, 6), fChown("fifo", 7, 8))),
			ops: func(r *opRun) {
				for _, n := range []string{"fifo", "null", "loop", "sock"} {
					r.stat(n, false)
				}
			}},
		{name: "read/xattrs", layers: layers(
			layer(fFile("f", "f"), fXattr("f", "user.a", "1"), fXattr("f", "user.empty", ""), fXattr("f", "trusted.b", "2"),
				fDir("d"), fXattr("d", "user.dir", "d"), fXattr("d", "trusted.dir", "t"),
				fSymlink("s", "f"), fXattr("s", "trusted.link", "l"),
				fXattr("f", "user.bin", "\x00\x01\xff"), fXattr("f", "user.big", strings.Repeat("v", 3000))),
			layer(fFile("g", "g"), fXattr("g", "user.top", "t"))),
			ops: func(r *opRun) {
				r.listxattr("f")
				r.getxattr("f", "user.a")
				r.getxattr("f", "user.empty")
				r.getxattr("f", "user.missing")
				r.getxattr("f", "trusted.b")
				r.getxattr("f", "user.big")
				r.listxattr("d")
				r.listxattr("s")
				r.getxattr("s", "trusted.link")
				r.getxattr("g", "user.top")
			}},
		{name: "read/modes-owners", layers: layers(
			layer(fFileM("suid", "s", 0o4755), fFileM("sgid", "g", 0o2755), fDirM("sticky", 0o1777),
				fFileM("none", "n", 0), fDirM("closed", 0), fFile("closed/in", "in"),
				fFile("owned", "o"), fChown("owned", 1000, 1001), fDirM("sgiddir", 0o2770), fChown("sgiddir", 0, 50),
				fChmod("closed", 0)),
			layer(fFileM("ro", "r", 0o444))),
			ops: func(r *opRun) { r.stat("suid", false); r.stat("closed", false); r.read("closed/in"); r.read("none") }},
		{name: "read/2000-entries", layers: layers(
			join(manyFiles("d", 0, 1000, "bottom")),
			join(manyFiles("d", 500, 1500, "middle"), manyWhiteouts("d", 0, 100)),
			join(manyFiles("d", 1400, 2100, "top"))),
			ops: func(r *opRun) { r.readdir("d"); r.stat("d/f0050", false); r.read("d/f0700"); r.read("d/f1450") }},
		{name: "read/special-names", layers: layers(
			join(fFiles("", oddNames...), fFiles("dir "+uniName, oddNames...)),
			join(fFiles("dir "+uniName, "top "+uniName))),
			ops: func(r *opRun) {
				for _, n := range oddNames {
					r.stat(n, false)
				}
				r.readdir("dir " + uniName)
			}},
		{name: "read/empty-and-sparse", layers: layers(
			layer(fFile("empty", ""), fSparse("sparse", 16<<20))),
			ops: func(r *opRun) { r.read("empty"); r.readAt("sparse", 8<<20, 8); r.readAt("sparse", 1000, 4) }},
		{name: "read/dir-over-whiteout-is-not-merged-below-opaque-top", layers: layers(
			layer(fFile("d/a", "a")),
			layer(fFile("d/b", "b")),
			layer(fOpaque("d"), fFile("d/c", "c"))),
			ops: func(r *opRun) { r.readdir("d") }},

		// Creating.
		{name: "create/root", layers: basic,
			ops: func(r *opRun) { r.create("new", "new content", 0o640); r.read("new") }},
		{name: "create/in-merged-dir", layers: threeDirs,
			ops: func(r *opRun) { r.create("d/new", "n", 0o600); r.create("d/sub/new", "n", 0o644); r.readdir("d") }},
		{name: "create/deep-20-copies-parents", layers: layers(join(deepSteps, layer(fFile(path.Join(deep, "leaf"), "leaf")))),
			ops: func(r *opRun) {
				r.create(path.Join(deep, "new"), "deep", 0o644)
				r.appendTo(path.Join(deep, "leaf"), "+")
				r.stat(deep, false)
			}},
		{name: "create/excl-on-lower-file", layers: basic,
			ops: func(r *opRun) { r.create("a", "x", 0o644); r.create("d", "x", 0o644); r.create("s", "x", 0o644) }},
		{name: "create/in-opaque-middle-dir", layers: layers(
			layer(fFile("d/hidden", "h")),
			layer(fOpaque("d"), fFile("d/m", "m"), fXattr("d", "user.x", "mid")),
			layer(fFile("d/t", "t"))),
			ops: func(r *opRun) { r.create("d/new", "n", 0o644); r.readdir("d"); r.stat("d/hidden", false) }},
		{name: "create/tmpfile-link", layers: basic,
			ops: func(r *opRun) {
				fd, err := unix.Open(r.p("d"), unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o640)
				r.rec("open O_TMPFILE d", err)
				if err != nil {
					return
				}
				defer func() { _ = unix.Close(fd) }() // linked in below, or dropped; either is the result
				r.rec("write tmpfile", writeAll(fd, "anon", -1))
				r.rec("linkat tmpfile d/named", unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, r.p("d/named"), unix.AT_SYMLINK_FOLLOW))
				r.read("d/named")
			}},
		{name: "create/symlinks", layers: basic,
			ops: func(r *opRun) {
				r.symlink("a", "ln")
				r.symlink("/abs/target", "d/abs")
				r.symlink("dangling", "e/dangle")
				r.symlink(strings.Repeat("t", 1000), "long")
				r.symlink("x", "a")
				r.readlink("ln")
				r.read("ln")
			}},
		{name: "create/fifo-and-devices", layers: basic,
			ops: func(r *opRun) {
				r.mknod("d/fifo", unix.S_IFIFO|0o600, 0)
				r.mknod("d/null", unix.S_IFCHR|0o666, unix.Mkdev(1, 3))
				r.mknod("blk", unix.S_IFBLK|0o660, unix.Mkdev(7, 1))
				r.mknod("sock", unix.S_IFSOCK|0o755, 0)
				r.mknod("a", unix.S_IFIFO|0o600, 0)
				r.stat("d/null", false)
			}},
		{name: "create/mkdir-modes", layers: basic,
			ops: func(r *opRun) {
				r.mkdir("n1", 0o700)
				r.mkdir("n2", 0o2775)
				r.mkdir("d/n3", 0o1777)
				r.mkdir("n1/n4", 0o755)
				r.mkdir("d", 0o755)
				r.mkdir("a", 0o755)
			}},

		// Writing into lower files: copy-up keeps what is not written.
		{name: "write/no-trunc-lower", layers: basic,
			ops: func(r *opRun) { r.writeAt("a", 3, "XYZ"); r.read("a") }},
		{name: "write/middle-layer-file", layers: layers(
			layer(fFile("f", "bottom bytes here")),
			layer(fFileM("f", "middle bytes", 0o640), fXattr("f", "user.m", "m")),
			layer(fFile("other", "o"))),
			ops: func(r *opRun) { r.writeAt("f", 0, "M"); r.read("f") }},
		{name: "write/append-lower", layers: basic,
			ops: func(r *opRun) { r.appendTo("a", "+tail"); r.appendTo("a", "+more"); r.read("a") }},
		{name: "write/otrunc-lower", layers: basic,
			ops: func(r *opRun) { r.writeTrunc("a", "new"); r.writeTrunc("b", ""); r.read("a") }},
		{name: "write/open-for-write-without-writing", layers: basic,
			ops: func(r *opRun) {
				r.openClose("a", unix.O_WRONLY)
				r.openClose("b", unix.O_RDWR)
				r.openClose("x", unix.O_RDONLY)
			}},
		{name: "write/through-symlink", layers: basic,
			ops: func(r *opRun) { r.writeAt("s", 0, "S"); r.readlink("s"); r.read("a") }},
		{name: "write/fsync-copied-up", layers: basic,
			ops: func(r *opRun) { r.fsyncWrite("a", "fsync"); r.read("a") }},
		{name: "write/mmap-lower", layers: layers(layer(fFile("m", strings.Repeat("a", 8192)), fFile("small", "0123"))),
			ops: func(r *opRun) {
				r.mmapWrite("m", 4096, "mapped")
				r.mmapWrite("small", 1, "XY")
				r.readAt("m", 4090, 16)
				r.read("small")
			}},
		{name: "write/sparse-copyup", layers: layers(layer(fSparse("sparse", 64<<20))),
			ops: func(r *opRun) {
				r.writeAt("sparse", 20<<20, "X")
				r.sparse("sparse")
				r.readAt("sparse", 32<<20, 8)
				r.readAt("sparse", 20<<20, 2)
			}},
		{name: "write/read-then-write-100-files", layers: layers(manySparse(100, 256<<10)),
			// Each file is read (its descriptor closed) just before it is opened
			// for writing: the write must reach the copy-up, never the lower file.
			ops: func(r *opRun) {
				for i := 0; i < 100; i++ {
					n := fmt.Sprintf("s%03d", i)
					r.read(n)
					r.writeAt(n, 100<<10, "X")
				}
			}},
		{name: "write/big-8MiB-copyup", layers: layers(layer(fBig("big", 8<<20), fXattr("big", "user.k", "v"))),
			ops: func(r *opRun) { r.writeAt("big", 4<<20, "middle"); r.readAt("big", 4<<20-2, 10) }},
		{name: "write/empty-file", layers: layers(layer(fFile("e1", ""), fFile("e2", ""), fFile("e3", ""))),
			ops: func(r *opRun) { r.appendTo("e1", ""); r.writeAt("e2", 0, "now"); r.chmod("e3", 0o600) }},
		{name: "write/setuid-file", layers: layers(layer(fFileM("suid", "s", 0o4755), fFileM("sgid", "g", 0o2755))),
			ops: func(r *opRun) { r.writeAt("suid", 0, "S"); r.writeAt("sgid", 0, "G"); r.stat("suid", false) }},

		// Sizes.
		{name: "truncate/shorter", layers: basic,
			ops: func(r *opRun) { r.truncate("a", 4); r.read("a") }},
		{name: "truncate/longer", layers: basic,
			ops: func(r *opRun) { r.truncate("a", 100); r.readAt("a", 8, 4) }},
		{name: "truncate/ftruncate-zero", layers: basic,
			ops: func(r *opRun) { r.ftruncate("a", 0); r.truncate("d", 0); r.read("a") }},
		{name: "fallocate/lower", layers: basic,
			ops: func(r *opRun) {
				r.fallocate("a", 0, 0, 1<<20)
				r.fallocate("b", unix.FALLOC_FL_KEEP_SIZE, 0, 1<<20)
				r.fallocate("x", unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 1, 2)
				r.read("x")
				r.stat("a", false)
			}},

		// Metadata of lower entries: copy-up of the entry alone.
		{name: "chmod/lower-file-keeps-mtime", layers: basic,
			ops: func(r *opRun) { r.chmod("a", 0o600); r.chmod("x", 0o4711) }},
		{name: "chmod/merged-dir-copies-dir-only", layers: threeDirs,
			ops: func(r *opRun) { r.chmod("d", 0o701); r.readdir("d") }},
		{name: "chmod/dir-then-create-child", layers: basic,
			ops: func(r *opRun) { r.chmod("e", 0o1777); r.create("e/child", "c", 0o644) }},
		{name: "chown/lower-file", layers: basic,
			ops: func(r *opRun) { r.lchown("a", 1234, 5678); r.lchown("b", -1, 42); r.lchown("d", 7, 7) }},
		{name: "chown/setuid-clears-bits", layers: layers(layer(fFileM("suid", "s", 0o4755), fFileM("sgid", "g", 0o2775), fDirM("sgiddir", 0o2775))),
			ops: func(r *opRun) {
				r.lchown("suid", 1, 1)
				r.lchown("sgid", 1, 1)
				r.lchown("sgiddir", 1, 1)
				r.stat("suid", false)
			}},
		{name: "chown/lower-symlink", layers: basic,
			ops: func(r *opRun) { r.lchown("s", 99, 98); r.readlink("s"); r.stat("a", false) }},
		{name: "utimes/lower-file", layers: basic,
			ops: func(r *opRun) { r.utimes("a") }},
		{name: "utimes/atime-only-keeps-mtime", layers: basic,
			ops: func(r *opRun) {
				ts := []unix.Timespec{unix.NsecToTimespec(utimesTime.UnixNano()), {Nsec: unix.UTIME_OMIT}}
				r.rec("utimes atime a", unix.UtimesNanoAt(unix.AT_FDCWD, r.p("a"), ts, 0))
				ts = []unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(utimesTime.UnixNano())}
				r.rec("utimes mtime b", unix.UtimesNanoAt(unix.AT_FDCWD, r.p("b"), ts, 0))
			}},
		{name: "chmod/through-symlink", layers: basic,
			ops: func(r *opRun) { r.chmod("s", 0o600); r.stat("s", false); r.stat("a", false) }},
		{name: "open/creat-on-existing-lower", layers: basic,
			ops: func(r *opRun) {
				r.openClose("a", unix.O_CREAT|unix.O_RDONLY)
				r.openClose("b", unix.O_CREAT|unix.O_WRONLY)
				r.openClose("d", unix.O_WRONLY)
				r.openClose("fresh", unix.O_CREAT|unix.O_RDONLY)
			}},
		{name: "utimes/lower-dir-and-symlink", layers: basic,
			ops: func(r *opRun) { r.utimes("d"); r.utimes("s") }},
		{name: "xattr/set-lower-file", layers: basic,
			ops: func(r *opRun) {
				r.setxattr("a", "user.new", "v")
				r.setxattr("b", "trusted.new", "t")
				r.setxattrFlags("a", "user.old", "x", unix.XATTR_CREATE)
				r.setxattrFlags("a", "user.none", "x", unix.XATTR_REPLACE)
				r.listxattr("a")
			}},
		{name: "xattr/remove-lower-file", layers: basic,
			ops: func(r *opRun) {
				r.removexattr("a", "user.old")
				r.removexattr("b", "user.none")
				r.removexattr("a", "trusted.t")
				r.listxattr("a")
			}},
		{name: "xattr/set-and-remove-lower-dir", layers: threeDirs,
			ops: func(r *opRun) {
				r.setxattr("d", "user.new", "n")
				r.removexattr("d", "user.layer")
				r.setxattr("d/sub", "user.sub", "s")
				r.listxattr("d")
			}},
		{name: "xattr/on-symlink", layers: basic,
			ops: func(r *opRun) {
				r.setxattr("s", "trusted.link", "l")
				r.setxattr("s", "user.link", "refused")
				r.listxattr("s")
				r.readlink("s")
			}},
		{name: "xattr/overlay-private-names-hidden", layers: layers(
			layer(fFile("f", "f"), fXattr("f", "trusted.overlay.junk", "1"), fXattr("f", "user.overlay.junk", "2"), fXattr("f", "user.ok", "3"),
				fDir("d"), fXattr("d", "trusted.overlay.impure", "y"))),
			ops: func(r *opRun) {
				r.getxattr("f", "trusted.overlay.junk")
				r.getxattr("f", "user.overlay.junk")
				r.listxattr("f")
				r.listxattr("d")
			}},

		// Links.
		{name: "link/lower-file", layers: basic,
			ops: func(r *opRun) { r.link("a", "a2"); r.stat("a", false); r.stat("a2", false); r.link("b", "d/b2") }},
		{name: "link/lower-file-then-unlink-original", layers: basic,
			ops: func(r *opRun) { r.link("a", "e/kept"); r.unlink("a"); r.read("e/kept"); r.stat("e/kept", false) }},
		{name: "link/then-write-through-new-name", layers: layers(
			layer(fFile("a", "bottom a")),
			layer(fFile("m", "middle file"), fXattr("m", "user.m", "1"))),
			ops: func(r *opRun) {
				r.link("a", "a2")
				r.writeAt("a2", 0, "B")
				r.read("a")
				r.link("m", "m2")
				r.appendTo("m", "+")
				r.read("m2")
				r.stat("m2", false)
			}},
		{name: "link/errors", layers: basic,
			ops: func(r *opRun) { r.link("d", "d2"); r.link("missing", "m2"); r.link("a", "b") }},
		{name: "hardlink-lower/write-one-name", layers: layers(layer(fFile("h1", "shared lower"), fHardlink("h2", "h1"))),
			ops: func(r *opRun) {
				r.writeAt("h1", 0, "W")
				r.read("h1")
				r.read("h2")
				r.stat("h1", false)
				r.stat("h2", false)
			}},
		{name: "hardlink-lower/unlink-both", layers: layers(layer(fFile("h1", "x"), fHardlink("h2", "h1"), fHardlink("h3", "h1"))),
			ops: func(r *opRun) { r.unlink("h1"); r.stat("h2", false); r.unlink("h2") }},

		// Deleting.
		{name: "unlink/lower", layers: basic,
			ops: func(r *opRun) { r.unlink("a"); r.unlink("d/f"); r.unlink("s"); r.stat("a", false); r.readdir("d") }},
		{name: "unlink/upper-only", layers: basic,
			ops: func(r *opRun) {
				r.create("tmp", "t", 0o644)
				r.unlink("tmp")
				r.create("d/tmp", "t", 0o644)
				r.unlink("d/tmp")
			}},
		{name: "unlink/copied-up", layers: basic,
			ops: func(r *opRun) { r.writeAt("a", 0, "A"); r.unlink("a"); r.chmod("b", 0o600); r.unlink("b") }},
		{name: "unlink/middle-shadowing-bottom", layers: layers(
			layer(fFile("f", "bottom"), fFile("d/f", "bottom")),
			layer(fFile("f", "middle"), fFile("d/f", "middle"))),
			ops: func(r *opRun) { r.unlink("f"); r.unlink("d/f"); r.stat("f", false); r.readdir("d") }},
		{name: "unlink/special-files", layers: layers(layer(fFifo("fifo"), fChar("null", 1, 3), fSocket("sock"))),
			ops: func(r *opRun) { r.unlink("fifo"); r.unlink("null"); r.unlink("sock") }},
		{name: "unlink/errors", layers: basic,
			ops: func(r *opRun) {
				r.unlink("missing")
				r.unlink("d")
				r.rmdir("a")
				r.rmdir("missing")
				r.unlink("a/x")
				r.unlink("a")
				r.unlink("a")
				r.create("a/under-deleted", "x", 0o644)
				r.mkdir("missing/sub", 0o755)
			}},
		{name: "rmdir/empty-lower", layers: basic,
			ops: func(r *opRun) { r.rmdir("e"); r.stat("e", false); r.readdir(".") }},
		{name: "rmdir/merged-emptied", layers: threeDirs,
			ops: func(r *opRun) {
				for _, n := range []string{"d/b", "d/m", "d/t", "d/shared", "d/sub/b", "d/sub/m", "d/sub/t"} {
					r.unlink(n)
				}
				r.rmdir("d/sub")
				r.rmdir("d")
				r.readdir(".")
			}},
		{name: "rmdir/non-empty-merged", layers: threeDirs,
			ops: func(r *opRun) {
				r.rmdir("d")
				r.unlink("d/t")
				r.unlink("d/m")
				r.unlink("d/shared")
				r.rmdir("d/sub")
				r.rmdir("d")
			}},
		{name: "rmdir/dir-holding-only-whiteouts", layers: layers(
			layer(fFile("d/x", "x"), fFile("d/y", "y")),
			layer(fWhiteout("d/x"), fWhiteout("d/y"))),
			ops: func(r *opRun) { r.readdir("d"); r.rmdir("d"); r.stat("d", false) }},
		{name: "rmdir/rm-r-then-mkdir-is-opaque", layers: layers(
			layer(fFile("t/a", "a"), fFile("t/sub/b", "b"), fFile("t/sub/deeper/c", "c"), fSymlink("t/l", "a")),
			layer(fFile("t/m", "m"), fFile("t/sub/m", "m"))),
			ops: func(r *opRun) {
				r.removeAll("t")
				r.mkdir("t", 0o755)
				r.readdir("t")
				r.stat("t/a", false)
				r.create("t/new", "n", 0o644)
			}},
		{name: "rmdir/mkdir-rmdir-cycles", layers: basic,
			ops: func(r *opRun) {
				for i := 0; i < 3; i++ {
					r.rmdir("e")
					r.mkdir("e", 0o750)
					r.mkdir("fresh", 0o755)
					r.rmdir("fresh")
				}
				r.create("e/f", "f", 0o644)
				r.unlink("e/f")
				r.rmdir("e")
				r.mkdir("e", 0o700)
			}},

		// Deleting and recreating.
		{name: "recreate/other-types-over-whiteouts", layers: basic,
			ops: func(r *opRun) {
				r.unlink("a")
				r.symlink("b", "a")
				r.unlink("b")
				r.link("x", "b")
				r.unlink("s")
				r.mknod("s", unix.S_IFIFO|0o600, 0)
				r.readlink("a")
			}},
		{name: "recreate/file", layers: basic,
			ops: func(r *opRun) { r.unlink("a"); r.create("a", "again", 0o600); r.read("a"); r.listxattr("a") }},
		{name: "recreate/file-as-dir", layers: basic,
			ops: func(r *opRun) { r.unlink("a"); r.mkdir("a", 0o755); r.create("a/in", "i", 0o644); r.readdir("a") }},
		{name: "recreate/dir-as-file", layers: basic,
			ops: func(r *opRun) { r.unlink("d/f"); r.rmdir("d"); r.create("d", "now a file", 0o644); r.read("d") }},
		{name: "recreate/dir-as-symlink", layers: basic,
			ops: func(r *opRun) { r.rmdir("e"); r.symlink("d", "e"); r.readdir("e") }},
		{name: "recreate/after-rmdir-deeper", layers: layers(layer(fFile("p/q/r", "r"), fFile("p/q/s", "s"))),
			ops: func(r *opRun) {
				r.removeAll("p")
				r.mkdir("p", 0o755)
				r.mkdir("p/q", 0o755)
				r.create("p/q/r", "new r", 0o644)
				r.readdir("p/q")
			}},

		// Renaming files.
		{name: "rename/upper-file", layers: basic,
			ops: func(r *opRun) { r.create("u", "u", 0o644); r.rename("u", "v"); r.rename("v", "d/w"); r.read("d/w") }},
		{name: "rename/lower-file", layers: basic,
			ops: func(r *opRun) { r.rename("a", "a-new"); r.read("a-new"); r.stat("a", false); r.listxattr("a-new") }},
		{name: "rename/lower-file-into-lower-dir", layers: threeDirs,
			ops: func(r *opRun) { r.rename("d/b", "d/sub/b-moved"); r.rename("d/shared", "top-shared"); r.readdir("d") }},
		{name: "rename/lower-over-lower", layers: basic,
			ops: func(r *opRun) { r.rename("a", "b"); r.read("b"); r.stat("a", false) }},
		{name: "rename/over-upper-file", layers: basic,
			ops: func(r *opRun) {
				r.create("u", "upper", 0o644)
				r.rename("a", "u")
				r.create("u2", "upper2", 0o644)
				r.rename("u2", "b")
			}},
		{name: "rename/lower-symlink-and-special", layers: layers(layer(fSymlink("s", "target"), fFifo("p"), fFile("f", "f"))),
			ops: func(r *opRun) { r.rename("s", "s2"); r.rename("p", "p2"); r.readlink("s2") }},
		{name: "rename/to-same-name", layers: basic,
			ops: func(r *opRun) { r.rename("a", "a"); r.rename("d", "d") }},
		{name: "rename/hardlinks-to-each-other", layers: layers(layer(fFile("h1", "h"), fHardlink("h2", "h1"))),
			ops: func(r *opRun) { r.rename("h1", "h2"); r.readdir(".") }},
		{name: "rename/errors", layers: basic,
			ops: func(r *opRun) {
				r.rename("a", "d")
				r.rename("e", "a")
				r.rename("missing", "z")
				r.rename("d", "d/inside")
				r.rename("a", "missing/z")
			}},
		{name: "rename/noreplace", layers: basic,
			ops: func(r *opRun) {
				r.renameat2("a", "b", unix.RENAME_NOREPLACE)
				r.unlink("b")
				r.renameat2("a", "b", unix.RENAME_NOREPLACE)
				r.renameat2("x", "fresh", unix.RENAME_NOREPLACE)
			}},
		{name: "rename/exchange-lower-files", layers: basic,
			ops: func(r *opRun) { r.renameat2("a", "b", unix.RENAME_EXCHANGE); r.read("a"); r.read("b") }},
		{name: "rename/exchange-with-missing", layers: basic,
			ops: func(r *opRun) { r.renameat2("a", "missing", unix.RENAME_EXCHANGE) }},
		{name: "rename/whiteout-flag-refused", layers: basic,
			ops: func(r *opRun) { r.renameat2("a", "z", unix.RENAME_WHITEOUT) }},

		{name: "rename/exchange-upper-and-lower", layers: basic,
			ops: func(r *opRun) {
				r.create("u", "upper", 0o644)
				r.renameat2("u", "a", unix.RENAME_EXCHANGE)
				r.mkdir("n", 0o755)
				r.renameat2("n", "b", unix.RENAME_EXCHANGE)
				r.read("a")
				r.read("u")
			}},
		{name: "rename/onto-deleted-name", layers: basic,
			ops: func(r *opRun) { r.unlink("b"); r.rename("a", "b"); r.rmdir("e"); r.rename("x", "e") }},
		{name: "rename/file-out-of-dir-then-rmdir", layers: basic,
			ops: func(r *opRun) { r.rename("d/f", "f"); r.rmdir("d"); r.readdir(".") }},

		// Renaming directories.
		{name: "rename/lower-dir", layers: layers(
			layer(fDirM("d", 0o750), fChown("d", 3, 4), fXattr("d", "user.d", "v"),
				fFile("d/f", "f"), fFile("d/sub/g", "g"), fSymlink("d/sub/l", "../f"), fHardlink("d/h", "d/f")),
			layer(fFile("d/top", "t"), fWhiteout("d/sub/g"), fFile("d/sub/g2", "g2"))),
			mergedOnly: "overlay answers EXDEV and the test copies the tree as mv(1) does",
			ops: func(r *opRun) {
				r.renameDir("d", "moved")
				r.readdir("moved")
				r.readdir("moved/sub")
				r.stat("d", false)
			}},
		{name: "rename/lower-dir-into-dir", layers: basic,
			mergedOnly: "overlay answers EXDEV and the test copies the tree as mv(1) does",
			ops:        func(r *opRun) { r.renameDir("d", "e/d"); r.read("e/d/f"); r.stat("d", false) }},
		{name: "rename/upper-dir-into-lower-dir", layers: basic,
			ops: func(r *opRun) {
				r.mkdir("n", 0o755)
				r.create("n/f", "f", 0o644)
				r.rename("n", "d/n")
				r.readdir("d/n")
			}},
		{name: "rename/upper-dir-over-empty-lower-dir", layers: basic,
			ops: func(r *opRun) {
				r.mkdir("n", 0o755)
				r.create("n/f", "f", 0o644)
				r.rename("n", "e")
				r.readdir("e")
			}},
		{name: "rename/upper-dir-over-emptied-lower-dir", layers: threeDirs,
			ops: func(r *opRun) {
				for _, f := range []string{"d/b", "d/shared", "d/m", "d/t", "d/sub/b", "d/sub/m", "d/sub/t"} {
					r.unlink(f)
				}
				r.rmdir("d/sub")
				r.mkdir("n", 0o755)
				r.create("n/f", "f", 0o644)
				r.rename("n", "d")
				r.readdir("d")
				r.read("d/f")
				r.stat("n", false)
			}},
		{name: "rename/lower-dir-over-emptied-lower-dir", layers: layers(
			layer(fFile("src/a", "a"), fFile("src/sub/b", "b"), fFile("dst/x", "x"), fFile("dst/y/z", "z"))),
			mergedOnly: "overlay answers EXDEV for a lower directory and the test copies the tree as mv(1) does",
			ops: func(r *opRun) {
				r.unlink("dst/x")
				r.unlink("dst/y/z")
				r.rmdir("dst/y")
				r.renameDir("src", "dst")
				r.readdir("dst")
				r.readdir("dst/sub")
				r.stat("src", false)
			}},
		{name: "rename/upper-dir-over-non-empty-lower-dir", layers: basic,
			ops: func(r *opRun) { r.mkdir("n", 0o755); r.rename("n", "d") }},
		{name: "rename/noreplace-dir", layers: basic,
			ops: func(r *opRun) { r.mkdir("n", 0o755); r.renameat2("n", "e", unix.RENAME_NOREPLACE) }},

		// Names.
		{name: "names/special-create-rename-unlink", layers: layers(join(fFiles("", oddNames...))),
			ops: func(r *opRun) {
				for i, n := range oddNames {
					switch i % 3 {
					case 0:
						r.unlink(n)
					case 1:
						r.writeAt(n, 0, "W")
					default:
						r.rename(n, fmt.Sprintf("renamed %d %s", i, n[:min(len(n), 200)]))
					}
					r.create("new "+n[:min(len(n), 200)], "n", 0o644)
				}
			}},
		{name: "names/256-bytes-too-long", layers: basic,
			ops: func(r *opRun) {
				r.create(name256, "x", 0o644)
				r.mkdir(name256, 0o755)
				r.stat(name256, false)
				r.rename("a", name256)
				r.symlink("a", name256)
				r.link("a", name256)
				r.mknod(name256, unix.S_IFIFO|0o644, 0)
			}},
		{name: "names/255-bytes-create", layers: basic,
			ops: func(r *opRun) {
				r.create(name255, "255 is fine", 0o644)
				r.create("d/"+name255, "255 is fine", 0o644)
				r.stat(name255, false)
				r.readdir("d")
			}},
		{name: "names/255-bytes-other-types", layers: basic,
			ops: func(r *opRun) {
				r.mkdir("e/"+name255, 0o755)
				r.symlink("a", "d/"+name255)
				r.mknod(name255, unix.S_IFIFO|0o644, 0)
				r.rename("b", "e/"+strings.Repeat("r", 255))
				r.link("x", strings.Repeat("l", 255))
				r.readdir("e")
			}},

		// Big directories.
		{name: "readdir/2000-after-deleting-half", layers: layers(
			join(manyFiles("d", 0, 1000, "b")),
			join(manyFiles("d", 1000, 2000, "t"))),
			ops: func(r *opRun) {
				for i := 0; i < 2000; i += 2 {
					r.unlink(fmt.Sprintf("d/f%04d", i))
				}
				r.readdir("d")
				r.create("d/f0000", "back", 0o644)
				r.readdir("d")
			}},

		// The filesystem.
		{name: "statfs", layers: basic,
			ops: func(r *opRun) { r.statfs() }},
	}
}

// ociCase is a case for layers that hold OCI whiteouts. Kernel overlay does not
// read those, so strata is checked against a declared expected tree instead.
type ociCase struct {
	name   string
	layers [][]fx // bottom first
	ops    func(r *opRun)
	// want is the merged tree after ops, declared as one layer.
	want []fx
}

func TestOCILowers(t *testing.T) {
	requireRoot(t)
	if *diffSelf {
		t.Skip("kernel overlay does not read OCI whiteouts")
	}
	for _, f := range []whiteout.Format{whiteout.Overlay, whiteout.OCI} {
		t.Run(f.String(), func(t *testing.T) {
			for _, c := range ociCases() {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					s := newStack(t, len(c.layers), func(i int, dir string) { applyFixture(t, dir, c.layers[i]) })
					lowers := snapshotLowers(t, s)
					mnt := mountStrata(t, s, f)
					r := &opRun{t: t, mnt: mnt}
					if c.ops != nil {
						c.ops(r)
					}
					if len(r.log) > 0 {
						t.Logf("results:\n\t%s", strings.Join(r.log, "\n\t"))
					}
					wantDir := t.TempDir()
					applyFixture(t, wantDir, c.want)
					want := snapshot(t, wantDir, snapMerged)
					got := snapshot(t, mnt, snapMerged)
					for _, tr := range []tree{want, got} {
						tr["."].Mtime = "" // the root is the upper's
						tr["."].Mode = tr["."].Mode & 0o7777
						if c.ops != nil {
							for _, e := range tr {
								e.Mtime = ""
							}
						}
					}
					want["."].Mode, want["."].Uid, want["."].Gid = got["."].Mode, got["."].Uid, got["."].Gid
					compareTrees(t, "merged tree", "want", want, "strata-"+f.String(), got)
					for i, before := range lowers {
						compareTrees(t, fmt.Sprintf("lower %d before and after", i), "before", before, "after", snapshot(t, s.Lowers[i], snapRaw))
					}
				})
			}
		})
	}
}

func ociCases() []ociCase {
	return []ociCase{
		{name: "whiteout-middle-hides-bottom", layers: layers(
			layer(fFile("a", "a"), fFile("d/x", "x"), fFile("d/y", "y")),
			layer(fOCIWhiteout("a"), fOCIWhiteout("d/x")),
			layer(fFile("d/z", "z"))),
			ops: func(r *opRun) {
				r.access("a")
				r.want(unix.ENOENT)
				r.access("d/x")
				r.want(unix.ENOENT)
			},
			want: layer(fFile("d/y", "y"), fFile("d/z", "z"))},
		{name: "whiteout-hides-dir-tree", layers: layers(
			layer(fFile("d/x", "x"), fFile("d/sub/y", "y")),
			layer(fOCIWhiteout("d")),
			layer(fFile("d/new", "n"))),
			want: layer(fFile("d/new", "n"))},
		{name: "opaque-middle", layers: layers(
			layer(fFile("d/a", "a"), fFile("d/b", "b"), fFile("e/keep", "k")),
			layer(fOCIOpaque("d"), fFile("d/m", "m"), fDir("e")),
			layer(fFile("d/t", "t"))),
			want: layer(fFile("d/m", "m"), fFile("d/t", "t"), fFile("e/keep", "k"))},
		{name: "meta-names-hidden", layers: layers(
			layer(fFile("plain", "p"), fDirM(".wh..wh.plnk", 0o700), fFile(".wh..wh.aufs", ""),
				fFile(".wh.", ""), fFile(".wh..", ""), fFile(".wh...", ""), fDir("d"), fFile("d/.wh..wh.orph", ""))),
			ops: func(r *opRun) {
				for _, n := range []string{".wh..wh.plnk", ".wh..wh.aufs", ".wh.", ".wh..", ".wh...", "d/.wh..wh.orph"} {
					r.access(n)
					r.wantFail()
				}
			},
			want: layer(fFile("plain", "p"), fDir("d"))},
		{name: "whiteout-beside-its-target-in-one-layer", layers: layers(
			layer(fFile("a", "bottom"), fFile("b", "bottom b")),
			layer(fFile("a", "same layer as its whiteout"), fOCIWhiteout("a"), fOCIWhiteout("b"))),
			want: layer(fFile("a", "same layer as its whiteout"))},
		{name: "mixed-formats", layers: layers(
			layer(fFile("a", "a"), fFile("b", "b"), fFile("c", "c"), fFile("d/x", "x"), fFile("e/y", "y")),
			layer(fWhiteout("a"), fOCIWhiteout("b"), fOCIOpaque("d"), fOpaque("e"), fFile("e/z", "z")),
			layer(fFile("top", "t"))),
			want: layer(fFile("c", "c"), fDir("d"), fFile("e/z", "z"), fFile("top", "t"))},
		{name: "create-over-oci-whiteout", layers: layers(
			layer(fFile("a", "old"), fFile("d/x", "old x")),
			layer(fOCIWhiteout("a"), fOCIWhiteout("d"))),
			ops: func(r *opRun) {
				r.create("a", "new", 0o644)
				r.want(0)
				r.mkdir("d", 0o755)
				r.want(0)
				r.create("d/y", "y", 0o644)
				r.want(0)
			},
			want: layer(fFile("a", "new"), fFile("d/y", "y"))},
		{name: "reserved-names-refused", layers: layers(layer(fFile("a", "a"), fDir("d"))),
			ops: func(r *opRun) {
				r.create(".wh.foo", "", 0o644)
				r.wantFail()
				r.create("d/.wh..wh..opq", "", 0o644)
				r.wantFail()
				r.mkdir(".wh.dir", 0o755)
				r.wantFail()
				r.rename("a", ".wh.a")
				r.wantFail()
				r.symlink("a", ".wh.s")
				r.wantFail()
				r.link("a", ".wh.l")
				r.wantFail()
				r.mknod(".wh.n", unix.S_IFIFO|0o644, 0)
				r.wantFail()
			},
			want: layer(fFile("a", "a"), fDir("d"))},
		{name: "empty-dir-below-oci-whiteouts-removable", layers: layers(
			layer(fFile("d/a", "a"), fFile("d/b", "b")),
			layer(fOCIWhiteout("d/a"))),
			ops: func(r *opRun) {
				r.rmdir("d")
				r.want(unix.ENOTEMPTY)
				r.unlink("d/b")
				r.want(0)
				r.rmdir("d")
				r.want(0)
				r.mkdir("d", 0o755)
				r.want(0)
			},
			want: layer(fDir("d"))},
		{name: "overlay-whiteouts-in-dir-of-one-layer-hidden", layers: layers(
			layer(fFile("keep", "k")),
			layer(fOpaque("o"), fWhiteout("o/w"), fFile("o/f", "f"), fDir("p"), fWhiteout("p/w"))),
			// Kernel overlay lists both w (and lstat then says ENOENT): it reads
			// a directory of one layer straight through. strata never shows a
			// whiteout.
			ops: func(r *opRun) {
				r.access("o/w")
				r.want(unix.ENOENT)
				r.access("p/w")
				r.want(unix.ENOENT)
			},
			want: layer(fFile("keep", "k"), fFile("o/f", "f"), fDir("p"))},
		{name: "rename-over-oci-whiteout", layers: layers(
			layer(fFile("a", "a"), fFile("b", "hidden b")),
			layer(fOCIWhiteout("b"))),
			ops: func(r *opRun) {
				r.renameat2("a", "b", unix.RENAME_NOREPLACE)
				r.want(0)
			},
			want: layer(fFile("b", "a"))},
	}
}
