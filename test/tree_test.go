package test

// Declared layer fixtures, and snapshots of whole trees that can be compared and
// dumped: the merged view of a union, an upper layer read "by meaning" (both
// whiteout formats folded into one form), and a lower layer read exactly.

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/whiteout"
)

// Times that fixtures and operations set, so that a snapshot can say whether an
// entry kept its time (a copy-up must) or got a new one, without comparing clocks
// of two different runs.
var (
	fixtureTime = time.Unix(1000000000, 123456789)
	utimesTime  = time.Unix(1234567890, 987654321)
)

// fx is one step of a declared layer fixture. Parent directories are made with
// mode 0755 as needed. Build them with the constructors below.
type fx struct {
	kind   fxKind
	path   string
	data   string // file content, xattr value
	mode   uint32 // permission bits (with set-ID and sticky bits)
	target string // symlink target, hard link source, xattr name
	uid    int
	gid    int
	size   int64  // sparse and big files
	rdev   uint64 // devices
}

type fxKind int

const (
	fxFile fxKind = iota
	fxDir
	fxSymlink
	fxHardlink
	fxFifo
	fxChar
	fxBlock
	fxSocket
	fxOvWhiteout
	fxOvOpaque
	fxOCIWhiteout
	fxOCIOpaque
	fxXattr
	fxChown
	fxChmod
	fxSparse
	fxBig
)

func fFile(p, data string) fx               { return fx{kind: fxFile, path: p, data: data, mode: 0o644} }
func fFileM(p, data string, mode uint32) fx { return fx{kind: fxFile, path: p, data: data, mode: mode} }
func fDir(p string) fx                      { return fx{kind: fxDir, path: p, mode: 0o755} }
func fDirM(p string, mode uint32) fx        { return fx{kind: fxDir, path: p, mode: mode} }
func fSymlink(p, target string) fx          { return fx{kind: fxSymlink, path: p, target: target} }
func fHardlink(p, existing string) fx       { return fx{kind: fxHardlink, path: p, target: existing} }
func fFifo(p string) fx                     { return fx{kind: fxFifo, path: p, mode: 0o640} }
func fChar(p string, major, minor uint32) fx {
	return fx{kind: fxChar, path: p, mode: 0o666, rdev: unix.Mkdev(major, minor)}
}
func fBlock(p string, major, minor uint32) fx {
	return fx{kind: fxBlock, path: p, mode: 0o660, rdev: unix.Mkdev(major, minor)}
}
func fSocket(p string) fx              { return fx{kind: fxSocket, path: p, mode: 0o755} }
func fWhiteout(p string) fx            { return fx{kind: fxOvWhiteout, path: p} }
func fOpaque(p string) fx              { return fx{kind: fxOvOpaque, path: p} }
func fOCIWhiteout(p string) fx         { return fx{kind: fxOCIWhiteout, path: p} }
func fOCIOpaque(p string) fx           { return fx{kind: fxOCIOpaque, path: p} }
func fXattr(p, name, value string) fx  { return fx{kind: fxXattr, path: p, target: name, data: value} }
func fChown(p string, uid, gid int) fx { return fx{kind: fxChown, path: p, uid: uid, gid: gid} }
func fChmod(p string, mode uint32) fx  { return fx{kind: fxChmod, path: p, mode: mode} }
func fBig(p string, size int64) fx     { return fx{kind: fxBig, path: p, size: size, mode: 0o644} }
func fSparse(p string, size int64) fx  { return fx{kind: fxSparse, path: p, size: size, mode: 0o644} }
func layer(steps ...fx) []fx           { return steps }
func layers(ls ...[]fx) [][]fx         { return ls }
func fFiles(p string, names ...string) []fx {
	var out []fx
	for _, n := range names {
		out = append(out, fFile(path.Join(p, n), n+"\n"))
	}
	return out
}

// bigContent is deterministic, incompressible-looking content of n bytes.
func bigContent(n int64) []byte {
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// applyFixture builds steps in dir, then sets every time in dir to fixtureTime,
// deepest entries first so that directory times stick.
func applyFixture(t testing.TB, dir string, steps []fx) {
	t.Helper()
	for _, s := range steps {
		if err := applyStep(dir, s); err != nil {
			t.Fatalf("fixture %s: %v", dir, err)
		}
	}
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	})
	if err != nil {
		t.Fatalf("fixture %s: %v", dir, err)
	}
	ts := []unix.Timespec{unix.NsecToTimespec(fixtureTime.UnixNano()), unix.NsecToTimespec(fixtureTime.UnixNano())}
	for i := len(paths) - 1; i >= 0; i-- {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, paths[i], ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatalf("fixture times: %s: %v", paths[i], err)
		}
	}
}

func applyStep(dir string, s fx) error {
	p := filepath.Join(dir, s.path)
	if s.kind != fxXattr && s.kind != fxChown && s.kind != fxChmod && s.kind != fxOvOpaque && s.kind != fxOCIOpaque {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
	}
	mknod := func(mode uint32, rdev uint64) error {
		if err := unix.Mknod(p, mode, int(rdev)); err != nil {
			return &os.PathError{Op: "mknod", Path: p, Err: err}
		}
		if mode&unix.S_IFMT == unix.S_IFCHR && rdev == 0 {
			return nil // a whiteout; its mode means nothing
		}
		return os.Chmod(p, fs.FileMode(mode&0o777)|modeBits(mode))
	}
	switch s.kind {
	case fxFile:
		if err := os.WriteFile(p, []byte(s.data), 0o600); err != nil {
			return err
		}
		return os.Chmod(p, fs.FileMode(s.mode&0o777)|modeBits(s.mode))
	case fxBig:
		if err := os.WriteFile(p, bigContent(s.size), 0o600); err != nil {
			return err
		}
		return os.Chmod(p, fs.FileMode(s.mode))
	case fxSparse:
		// Data at the start, in the middle and at the end; holes between.
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fs.FileMode(s.mode))
		if err != nil {
			return err
		}
		for _, off := range []int64{0, s.size / 2, s.size - 5} {
			if _, err := f.WriteAt([]byte("data!"), off); err != nil {
				_ = f.Close() // already failing
				return err
			}
		}
		return f.Close()
	case fxDir:
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		return os.Chmod(p, fs.FileMode(s.mode&0o777)|modeBits(s.mode))
	case fxSymlink:
		return os.Symlink(s.target, p)
	case fxHardlink:
		return os.Link(filepath.Join(dir, s.target), p)
	case fxFifo:
		return mknod(unix.S_IFIFO|s.mode, 0)
	case fxChar:
		return mknod(unix.S_IFCHR|s.mode, s.rdev)
	case fxBlock:
		return mknod(unix.S_IFBLK|s.mode, s.rdev)
	case fxSocket:
		return mknod(unix.S_IFSOCK|s.mode, 0)
	case fxOvWhiteout:
		return mknod(unix.S_IFCHR, 0)
	case fxOvOpaque:
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		return lsetxattr(p, whiteout.TrustedOpaqueXattr, whiteout.OpaqueValue)
	case fxOCIWhiteout:
		return os.WriteFile(filepath.Join(filepath.Dir(p), whiteout.Prefix+filepath.Base(p)), nil, 0o644)
	case fxOCIOpaque:
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(p, whiteout.OpaqueMarker), nil, 0o644)
	case fxXattr:
		return lsetxattr(p, s.target, s.data)
	case fxChown:
		return os.Lchown(p, s.uid, s.gid)
	case fxChmod:
		return os.Chmod(p, fs.FileMode(s.mode&0o777)|modeBits(s.mode))
	}
	return fmt.Errorf("fixture step %d: unknown kind", s.kind)
}

// modeBits turns the set-ID and sticky bits of a st_mode into fs.FileMode bits.
func modeBits(m uint32) fs.FileMode {
	var fm fs.FileMode
	if m&unix.S_ISUID != 0 {
		fm |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		fm |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		fm |= fs.ModeSticky
	}
	return fm
}

func lsetxattr(p, name, value string) error {
	if err := unix.Lsetxattr(p, name, []byte(value), 0); err != nil {
		return &os.PathError{Op: "lsetxattr " + name, Path: p, Err: err}
	}
	return nil
}

// entry is what a snapshot keeps of one name. Fields that do not apply are zero.
type entry struct {
	Type   string // file, dir, symlink, fifo, char, block, socket; whiteout in uppers
	DType  string // the type readdir reported, when it disagrees with lstat
	Mode   uint32 // permission, set-ID and sticky bits
	Uid    uint32
	Gid    uint32
	Size   int64  // non-directories
	SHA    string // regular files
	Target string // symlinks
	Nlink  uint64 // non-directories
	Links  string // other names of the same inode in the tree
	Rdev   uint64 // devices
	Xattrs map[string]string
	Opaque bool   // directories of an upper layer
	Mtime  string // "fixture", "utimes" or "new"; exact nanoseconds in raw snapshots
	Ctime  string // raw snapshots only
	Ino    uint64 // raw snapshots only
	Dups   int    // times readdir listed the name more than once
}

func (e *entry) String() string {
	var b strings.Builder
	b.WriteString(e.Type)
	if e.Type == "whiteout" {
		return b.String()
	}
	if e.DType != "" {
		fmt.Fprintf(&b, " DTYPE=%s", e.DType)
	}
	if e.Dups != 0 {
		fmt.Fprintf(&b, " LISTED-%d-MORE-TIMES", e.Dups)
	}
	fmt.Fprintf(&b, " %04o %d:%d", e.Mode, e.Uid, e.Gid)
	if e.Type != "dir" {
		fmt.Fprintf(&b, " size=%d nlink=%d", e.Size, e.Nlink)
	}
	if e.Links != "" {
		fmt.Fprintf(&b, " links=[%s]", e.Links)
	}
	if e.SHA != "" {
		fmt.Fprintf(&b, " sha=%s", e.SHA)
	}
	if e.Type == "symlink" {
		fmt.Fprintf(&b, " -> %q", e.Target)
	}
	if e.Rdev != 0 {
		fmt.Fprintf(&b, " rdev=%d:%d", unix.Major(e.Rdev), unix.Minor(e.Rdev))
	}
	if e.Opaque {
		b.WriteString(" OPAQUE")
	}
	if e.Mtime != "" {
		fmt.Fprintf(&b, " mtime=%s", e.Mtime)
	}
	if e.Ctime != "" {
		fmt.Fprintf(&b, " ctime=%s ino=%d", e.Ctime, e.Ino)
	}
	if len(e.Xattrs) > 0 {
		var xs []string
		for k, v := range e.Xattrs {
			xs = append(xs, fmt.Sprintf("%s=%q", k, v))
		}
		sort.Strings(xs)
		fmt.Fprintf(&b, " xattrs{%s}", strings.Join(xs, " "))
	}
	return b.String()
}

// tree maps a slash path relative to the root ("." for the root) to its entry.
type tree map[string]*entry

// snapMode chooses what a snapshot reads and how it normalizes.
type snapMode int

const (
	// snapMerged reads a mounted union: union-private xattrs are left out,
	// directory sizes and link counts too, times are classified.
	snapMerged snapMode = iota
	// snapUpper reads an upper layer by meaning: an overlay char-dev 0/0 and an
	// OCI ".wh.NAME" both become a "whiteout" entry NAME; an opaque xattr and an
	// OCI ".wh..wh..opq" both set Opaque on the directory; every other
	// trusted.overlay.* and user.overlay.* xattr (origin, impure, redirect) is
	// left out.
	snapUpper
	// snapRaw reads a layer exactly, to tell whether anything changed: all
	// xattrs, exact mtime and ctime, inode numbers.
	snapRaw
)

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFCHR:
		return "char"
	case unix.S_IFBLK:
		return "block"
	case unix.S_IFSOCK:
		return "socket"
	}
	return fmt.Sprintf("type(%o)", mode&unix.S_IFMT)
}

func dirEntryType(m fs.FileMode) string {
	switch m.Type() {
	case 0:
		return "file"
	case fs.ModeDir:
		return "dir"
	case fs.ModeSymlink:
		return "symlink"
	case fs.ModeNamedPipe:
		return "fifo"
	case fs.ModeDevice | fs.ModeCharDevice:
		return "char"
	case fs.ModeDevice:
		return "block"
	case fs.ModeSocket:
		return "socket"
	}
	return fmt.Sprintf("mode(%v)", m.Type())
}

func classifyTime(ts unix.Timespec) string {
	switch ns := ts.Nano(); ns {
	case fixtureTime.UnixNano():
		return "fixture"
	case utimesTime.UnixNano():
		return "utimes"
	}
	return "new"
}

// snapshot reads the tree under root. Errors reading it are fatal: a snapshot
// is only taken of trees that must be readable.
func snapshot(t testing.TB, root string, mode snapMode) tree {
	t.Helper()
	tr := tree{}
	type inoKey struct{ dev, ino uint64 }
	byIno := map[inoKey][]string{}
	// Below the root, entries are named through their parent directory's
	// descriptor (/proc/self/fd/N/NAME): a tree may go deeper than PATH_MAX.
	var walk func(rel string, parent int)
	walk = func(rel string, parent int) {
		p := root
		if parent >= 0 {
			p = fmt.Sprintf("/proc/self/fd/%d/%s", parent, path.Base(rel))
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			if rel != "." && errors.Is(err, unix.ENOENT) {
				// Listed by readdir, unknown to lookup.
				tr[rel] = &entry{Type: "LISTED-BUT-ENOENT"}
				return
			}
			t.Fatalf("snapshot: lstat %s in %s: %v", rel, root, err)
		}
		e := &entry{
			Type: fileType(st.Mode),
			Mode: st.Mode & 0o7777,
			Uid:  st.Uid,
			Gid:  st.Gid,
		}
		tr[rel] = e
		if mode == snapUpper && whiteout.IsOverlayWhiteout(st.Mode, st.Rdev) {
			tr[rel] = &entry{Type: "whiteout"}
			return
		}
		if e.Type != "dir" {
			e.Size = st.Size
			e.Nlink = uint64(st.Nlink)
			if st.Nlink > 1 {
				k := inoKey{st.Dev, st.Ino}
				byIno[k] = append(byIno[k], rel)
			}
		}
		if e.Type == "char" || e.Type == "block" {
			e.Rdev = st.Rdev
		}
		if mode == snapRaw {
			e.Mtime = fmt.Sprint(st.Mtim.Nano())
			e.Ctime = fmt.Sprint(st.Ctim.Nano())
			e.Ino = st.Ino
		} else {
			e.Mtime = classifyTime(st.Mtim)
		}
		e.Xattrs = readXattrs(t, p, mode)
		if mode == snapUpper {
			for _, n := range []string{whiteout.TrustedOpaqueXattr, whiteout.UserOpaqueXattr} {
				if v, ok := e.Xattrs[n]; ok && e.Type == "dir" && whiteout.IsOpaqueXattr(n, []byte(v)) {
					e.Opaque = true
				}
			}
			for k := range e.Xattrs {
				if whiteout.IsPrivateXattr(k) {
					delete(e.Xattrs, k)
				}
			}
		}
		switch e.Type {
		case "file":
			e.SHA = fileSHA(t, p)
		case "symlink":
			target, err := os.Readlink(p)
			if err != nil {
				t.Fatalf("snapshot: %v", err)
			}
			e.Target = target
		case "dir":
			f, err := os.Open(p)
			if err != nil {
				t.Fatalf("snapshot: %s: %v", rel, err)
			}
			defer func() { _ = f.Close() }() // read only; the children are named through it
			ents, err := f.ReadDir(-1)
			if err != nil {
				t.Fatalf("snapshot: readdir %s in %s: %v", rel, root, err)
			}
			seen := map[string]int{}
			for _, de := range ents {
				seen[de.Name()]++
			}
			sort.Slice(ents, func(i, j int) bool { return ents[i].Name() < ents[j].Name() })
			var ociWhiteouts []string
			for _, de := range ents {
				name := de.Name()
				if seen[name] == 0 {
					continue // a duplicate, already walked
				}
				childRel := path.Join(rel, name)
				if mode == snapUpper && strings.HasPrefix(name, whiteout.Prefix) {
					switch k, target := whiteout.Classify(name, 0, 0); k {
					case whiteout.OpaqueMark:
						e.Opaque = true
						seen[name] = 0
						continue
					case whiteout.Whiteout:
						ociWhiteouts = append(ociWhiteouts, target)
						seen[name] = 0
						continue
					}
				}
				walk(childRel, int(f.Fd()))
				c := tr[childRel]
				if n := seen[name]; n > 1 {
					c.Dups = n - 1
				}
				if got := dirEntryType(de.Type()); got != c.Type && c.Type != "whiteout" && c.Type != "LISTED-BUT-ENOENT" {
					c.DType = got
				}
				seen[name] = 0
			}
			for _, target := range ociWhiteouts {
				childRel := path.Join(rel, target)
				if _, ok := tr[childRel]; ok {
					// A whiteout beside its own target: keep both, so
					// that the difference shows.
					tr[path.Join(rel, whiteout.Prefix+target)] = &entry{Type: "whiteout-beside-its-target"}
					continue
				}
				tr[childRel] = &entry{Type: "whiteout"}
			}
		}
	}
	walk(".", -1)
	for _, names := range byIno {
		for _, n := range names {
			var others []string
			for _, o := range names {
				if o != n {
					others = append(others, o)
				}
			}
			sort.Strings(others)
			tr[n].Links = strings.Join(others, ",")
		}
	}
	return tr
}

func fileSHA(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	defer func() { _ = f.Close() }() // read only
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("snapshot: read %s: %v", p, err)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func readXattrs(t testing.TB, p string, mode snapMode) map[string]string {
	t.Helper()
	sz, err := unix.Llistxattr(p, nil)
	if err != nil {
		t.Fatalf("snapshot: llistxattr %s: %v", p, err)
	}
	if sz == 0 {
		return nil
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatalf("snapshot: llistxattr %s: %v", p, err)
	}
	out := map[string]string{}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:sz]), "\x00"), "\x00") {
		if name == "" {
			continue
		}
		if mode != snapRaw && (strings.HasPrefix(name, "security.") || strings.HasPrefix(name, "system.")) {
			// Host-specific (SELinux labels) or folded into the mode
			// (ACLs) in merged views; a raw snapshot keeps them, since a
			// lower layer must keep them too.
			continue
		}
		if mode == snapMerged && strings.HasPrefix(name, "trusted.overlay.") {
			// Kernel overlay hides these (it escapes them to
			// trusted.overlay.overlay.* in its layers), and so must strata.
			// user.overlay.* is an ordinary xattr to an overlay that
			// keeps its own in trusted.*.
			continue
		}
		v, err := getxattr(p, name)
		if err != nil {
			t.Fatalf("snapshot: lgetxattr %s %s: %v", p, name, err)
		}
		out[name] = v
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func getxattr(p, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
}

// diffTrees lists the differences between two trees, one line per path, sorted.
func diffTrees(aName string, a tree, bName string, b tree) []string {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	var sorted []string
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	var out []string
	for _, k := range sorted {
		ea, eb := a[k], b[k]
		sa, sb := "(absent)", "(absent)"
		if ea != nil {
			sa = ea.String()
		}
		if eb != nil {
			sb = eb.String()
		}
		if sa != sb {
			out = append(out, fmt.Sprintf("%s:\n\t%s: %s\n\t%s: %s", k, aName, sa, bName, sb))
		}
	}
	return out
}

// dump is a readable listing of a tree, for failure messages. Long listings are
// cut short.
func (tr tree) dump() string {
	var keys []string
	for k := range tr {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i == 200 {
			fmt.Fprintf(&b, "\t... %d more\n", len(keys)-i)
			break
		}
		fmt.Fprintf(&b, "\t%s: %s\n", k, tr[k])
	}
	return b.String()
}

// compareTrees fails t with the differences between want and got, dumping both.
func compareTrees(t testing.TB, what, wantName string, want tree, gotName string, got tree) bool {
	t.Helper()
	d := diffTrees(wantName, want, gotName, got)
	if len(d) == 0 {
		return true
	}
	const maxLines = 40
	more := ""
	if len(d) > maxLines {
		more = fmt.Sprintf("\n... and %d more differences", len(d)-maxLines)
		d = d[:maxLines]
	}
	t.Errorf("%s differ (%d):\n%s%s", what, len(d), strings.Join(d, "\n"), more)
	t.Logf("%s, %s:\n%s", what, wantName, want.dump())
	t.Logf("%s, %s:\n%s", what, gotName, got.dump())
	return false
}

// TestSnapshotUpperFormats checks the comparator itself: an upper written in the
// overlay format and one written in the OCI format that mean the same read the
// same, and ones that mean something else do not.
func TestSnapshotUpperFormats(t *testing.T) {
	requireRoot(t)
	common := []fx{
		fFile("a", "a"),
		fDirM("d", 0o750),
		fXattr("d", "user.k", "v"),
		fFile("d/f", "f"),
		fHardlink("d/g", "d/f"),
	}
	ov := t.TempDir()
	applyFixture(t, ov, append(common[:len(common):len(common)],
		fWhiteout("gone"), fWhiteout("d/gone"), fOpaque("d"), fDir("o"),
		fXattr("o", "trusted.overlay.origin", "junk"), fXattr("o", "trusted.overlay.impure", "y")))
	oci := t.TempDir()
	applyFixture(t, oci, append(common[:len(common):len(common)],
		fOCIWhiteout("gone"), fOCIWhiteout("d/gone"), fOCIOpaque("d"), fDir("o")))
	a, b := snapshot(t, ov, snapUpper), snapshot(t, oci, snapUpper)
	compareTrees(t, "uppers of one meaning", "overlay", a, "oci", b)
	if e := a["gone"]; e == nil || e.Type != "whiteout" {
		t.Errorf("overlay whiteout: got %v, want whiteout", e)
	}
	if e := b["d"]; e == nil || !e.Opaque {
		t.Errorf("OCI opaque dir: got %v, want opaque", e)
	}
	if e := b["d/g"]; e == nil || e.Links != "d/f" {
		t.Errorf("hard link: got %v, want links=[d/f]", e)
	}

	// One more OCI whiteout, a lost opaque mark: both must show.
	if err := os.Remove(filepath.Join(oci, "d", whiteout.OpaqueMarker)); err != nil {
		t.Fatal(err)
	}
	applyFixture(t, oci, layer(fOCIWhiteout("a2"))) // and every time back to fixtureTime
	if d := diffTrees("overlay", a, "oci", snapshot(t, oci, snapUpper)); len(d) != 2 {
		t.Errorf("differences after changing the OCI upper: got %d (%q), want 2", len(d), d)
	}
}
