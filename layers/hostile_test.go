package layers

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The hostile layer corpus: crafted layer tars, built in memory, each either
// refused with the name of the offending entry or, where the OCI image spec
// makes it legal, applied without harm. A victim directory beside the layer
// must come out of every case untouched (moby go-archive testBreakout).

// rawHeader is a ustar header block written by hand, for what archive/tar's
// writer refuses to produce (NUL bytes in names, bad sizes).
func rawHeader(name string, typeflag byte, size int64, linkname string) []byte {
	h := make([]byte, 512)
	copy(h[0:100], name)
	copy(h[100:108], "0000644\x00")
	copy(h[108:116], "0000000\x00")
	copy(h[116:124], "0000000\x00")
	copy(h[124:136], fmt.Sprintf("%011o\x00", size))
	copy(h[136:148], fmt.Sprintf("%011o\x00", 1700000000))
	h[156] = typeflag
	copy(h[157:257], linkname)
	copy(h[257:265], "ustar\x0000")
	copy(h[148:156], "        ")
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return h
}

// rawTar joins header blocks and data, padding data to 512 bytes, and adds the
// two zero blocks that end a tar.
func rawTar(parts ...[]byte) []byte {
	var b bytes.Buffer
	for _, p := range parts {
		b.Write(p)
		if pad := len(p) % 512; pad != 0 {
			b.Write(make([]byte, 512-pad))
		}
	}
	b.Write(make([]byte, 1024))
	return b.Bytes()
}

// paxRecord is one "LEN key=value\n" record of a PAX header.
func paxRecord(key, value string) string {
	rec := " " + key + "=" + value + "\n"
	n := len(rec)
	for n2 := len(fmt.Sprint(n)) + len(rec); n2 != n; n2 = len(fmt.Sprint(n)) + len(rec) {
		n = n2
	}
	return fmt.Sprint(n) + rec
}

type hostileCase struct {
	name string
	tar  []byte
	// then is a second layer, unpacked into a directory of its own: a
	// layer's content judged against the one below it.
	then   []byte
	unpriv bool  // unpack without privilege, even as root
	max    int64 // UnpackOptions.MaxSize
	// refuse is the entry a *RefusedError must name; errHas, for an error
	// that is not a refusal (the tar cannot be read, the kernel says no),
	// a string it must hold (the entry's name where there is one). Neither:
	// the layer applies, and check looks at the result.
	refuse, errHas string
	check          func(t *testing.T, layer string)
}

func hostileCorpus(t testing.TB) []hostileCase {
	t.Helper()
	dev := func(name string, typ byte, major, minor int64) tarEntry {
		return tarEntry{Header: tar.Header{Typeflag: typ, Name: name, Mode: 0o666, Devmajor: major, Devminor: minor}}
	}
	withMode := func(e tarEntry, mode int64, uid, gid int) tarEntry {
		e.Mode, e.Uid, e.Gid = mode, uid, gid
		return e
	}
	withPAX := func(e tarEntry, kv ...string) tarEntry {
		e.Format = tar.FormatPAX
		e.PAXRecords = map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			e.PAXRecords[kv[i]] = kv[i+1]
		}
		return e
	}
	sized := func(name string, typ byte, size int64) tarEntry {
		return tarEntry{Header: tar.Header{Typeflag: typ, Name: name, Mode: 0o644, Size: size}}
	}
	content := func(rel, want string) func(*testing.T, string) {
		return func(t *testing.T, layer string) {
			t.Helper()
			b, err := readBeneath(layer, rel)
			if err != nil || string(b) != want {
				t.Errorf("%s: %q, %v; want %q", rel, b, err, want)
			}
		}
	}
	isType := func(rel string, typ uint32) func(*testing.T, string) {
		return func(t *testing.T, layer string) {
			t.Helper()
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(layer, rel), &st); err != nil || st.Mode&unix.S_IFMT != typ {
				t.Errorf("%s: mode %o, %v; want type %o", rel, st.Mode, err, typ)
			}
		}
	}
	all := func(fs ...func(*testing.T, string)) func(*testing.T, string) {
		return func(t *testing.T, layer string) {
			t.Helper()
			for _, f := range fs {
				f(t, layer)
			}
		}
	}
	deep := strings.Repeat(strings.Repeat("p", 250)+"/", 20) + "f" // 5 KiB: past PATH_MAX
	longComp := strings.Repeat("n", 300)                           // past NAME_MAX
	bomb := sized("zeros", tar.TypeReg, 64<<20)                    // 64 MiB of zeros: compresses to 64 KiB
	return []hostileCase{
		// Paths out of the layer.
		{name: "dotdot", tar: mkTar(t, reg("../victim/dotdot", "x")), refuse: "../victim/dotdot"},
		{name: "dotdot after a directory", tar: mkTar(t, dirEntry("a/"), reg("a/../../victim/x", "x")), refuse: "a/../../victim/x"},
		{name: "dot then dotdot", tar: mkTar(t, reg("./../victim/x", "x")), refuse: "./../victim/x"},
		{name: "absolute", tar: mkTar(t, reg("/tmp/strata-hostile-absolute", "x")), refuse: "/tmp/strata-hostile-absolute"},
		{name: "absolute directory", tar: mkTar(t, dirEntry("/tmp/strata-hostile-dir/")), refuse: "/tmp/strata-hostile-dir/"},
		{name: "symlink parent out", tar: mkTar(t, symlink("out", "../victim"), reg("out/evil", "x")), refuse: "out/evil"},
		{name: "symlink parent absolute", tar: mkTar(t, symlink("out", "/tmp"), reg("out/strata-hostile-evil", "x")), refuse: "out/strata-hostile-evil"},
		{name: "symlink parent deeper", tar: mkTar(t, dirEntry("a/"), symlink("a/b", "../../victim"), reg("a/b/c/evil", "x")), refuse: "a/b/c/evil"},
		{name: "symlink loop as parent", tar: mkTar(t, symlink("loop", "loop"), reg("loop/x", "x")), refuse: "loop/x"},
		{name: "directory through a symlink parent", tar: mkTar(t, symlink("out", "../victim"), dirEntry("out/newdir/")), refuse: "out/newdir/"},
		{name: "hard link out", tar: mkTar(t, hardlink("h", "../victim/hello")), refuse: "h"},
		{name: "hard link absolute", tar: mkTar(t, hardlink("h", "/etc/passwd")), refuse: "h"},
		{name: "hard link through a symlink", tar: mkTar(t, symlink("out", "../victim"), hardlink("h", "out/hello")), refuse: "h"},
		{name: "hard link to the root", tar: mkTar(t, hardlink("h", ".")), refuse: "h"},
		{name: "hard link to a directory", tar: mkTar(t, dirEntry("d/"), hardlink("h", "d")), refuse: "h"},
		{name: "hard link to nothing", tar: mkTar(t, hardlink("h", "missing")), errHas: "h"},
		// Whiteouts that reach for what is not theirs.
		{name: "whiteout of dotdot", tar: mkTar(t, reg(".wh...", "")), refuse: ".wh..."},
		{name: "whiteout of the directory itself", tar: mkTar(t, reg(".wh..", "")), refuse: ".wh.."},
		{name: "whiteout of no name", tar: mkTar(t, reg("d/.wh.", "")), refuse: "d/.wh."},
		{name: "whiteout of dotdot inside a directory", tar: mkTar(t, dirEntry("d/"), reg("d/.wh...", "")), refuse: "d/.wh..."},
		{name: "entry then its whiteout", tar: mkTar(t, reg("a", "x"), reg(".wh.a", "")), refuse: ".wh.a"},
		{name: "whiteout then the entry", tar: mkTar(t, reg(".wh.a", ""), reg("a", "x")), refuse: "a"},
		{name: "entry below a whiteout", tar: mkTar(t, reg(".wh.d", ""), reg("d/x", "x")), refuse: "d/x"},
		{name: "opaque marker below a whiteout", tar: mkTar(t, reg(".wh.d", ""), reg("d/.wh..wh..opq", "")), refuse: "d/.wh..wh..opq"},
		{name: "hard link to a whited-out name", tar: mkTar(t, reg(".wh.a", ""), hardlink("h", "a")), refuse: "h"},
		{name: "opaque root", tar: mkTar(t, reg(".wh..wh..opq", ""), reg("kept", "k")),
			check: all(content(".wh..wh..opq", ""), content("kept", "k"))},
		{name: "aufs metadata", tar: mkTar(t, reg(".wh..wh.plnk", ""), dirEntry(".wh..wh.orph/")),
			check: func(t *testing.T, layer string) {
				if ents, _ := os.ReadDir(layer); len(ents) != 0 {
					t.Errorf("layer holds %d entries, want the metadata skipped", len(ents))
				}
			}},
		{name: "overlay private xattrs", tar: mkTar(t, withPAX(dirEntry("d/"), "SCHILY.xattr.trusted.overlay.redirect", "/etc", "SCHILY.xattr.user.overlay.origin", "x")),
			check: func(t *testing.T, layer string) {
				for _, x := range []string{"trusted.overlay.redirect", "user.overlay.origin"} {
					if _, err := unix.Lgetxattr(filepath.Join(layer, "d"), x, nil); err == nil {
						t.Errorf("d kept %s", x)
					}
				}
			}},
		// Names the tar format should not carry.
		{name: "NUL in a ustar name", tar: rawTar(rawHeader("safe\x00/../../victim/evil", tar.TypeReg, 1, ""), []byte("x")),
			check: content("safe", "x")},
		{name: "NUL in a GNU long name", tar: rawTar(rawHeader("././@LongLink", tar.TypeGNULongName, 28, ""), []byte("gnu\x00/../../victim/evil-long\x00"),
			rawHeader("placeholder", tar.TypeReg, 1, ""), []byte("y")),
			check: content("gnu", "y")},
		{name: "NUL in a PAX path", tar: rawTar(rawHeader("pax", tar.TypeXHeader, int64(len(paxRecord("path", "a\x00/../../victim/evil"))), ""),
			[]byte(paxRecord("path", "a\x00/../../victim/evil")), rawHeader("placeholder", tar.TypeReg, 1, ""), []byte("z")),
			errHas: "read tar"},
		{name: "name past PATH_MAX", tar: mkTar(t, reg(deep, "deep")), check: content(deep, "deep")},
		{name: "name component past NAME_MAX", tar: mkTar(t, reg(longComp, "x")), errHas: longComp},
		{name: "symlink target past PATH_MAX", tar: mkTar(t, symlink("l", strings.Repeat("t/", 2100))), errHas: "l"},
		{name: "root as a file", tar: mkTar(t, reg(".", "x")), refuse: "."},
		{name: "unsupported entry type", tar: mkTar(t, tarEntry{Header: tar.Header{Typeflag: 'V', Name: "volume"}}), refuse: "volume"},
		// Privilege.
		{name: "character device when unprivileged", tar: mkTar(t, dev("null", tar.TypeChar, 1, 3)), unpriv: true, refuse: "null"},
		{name: "block device when unprivileged", tar: mkTar(t, dev("sda", tar.TypeBlock, 8, 0)), unpriv: true, refuse: "sda"},
		{name: "overlay whiteout device when unprivileged", tar: mkTar(t, dev("gone", tar.TypeChar, 0, 0)), unpriv: true,
			check: content(".wh.gone", "")},
		{name: "set-user-ID when unprivileged", tar: mkTar(t, withMode(reg("su", "x"), 0o6755, 0, 0), withMode(dirEntry("sgid/"), 0o2775, 0, 0)), unpriv: true,
			check: func(t *testing.T, layer string) {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(layer, "su"), &st); err != nil || st.Mode&0o7777 != 0o755 {
					t.Errorf("su: mode %o, %v; want 0755 (no set-ID bits)", st.Mode&0o7777, err)
				}
				if err := unix.Lstat(filepath.Join(layer, "sgid"), &st); err != nil || st.Mode&0o7777 != 0o2775 {
					t.Errorf("sgid/: mode %o, %v; want 2775 (a directory's set-group-ID bit is harmless)", st.Mode&0o7777, err)
				}
			}},
		// Sizes.
		{name: "huge PAX header", tar: rawTar(rawHeader("pax", tar.TypeXHeader, 2<<20, ""), bytes.Repeat([]byte("x"), 2<<20)), errHas: "read tar"},
		{name: "decompression bomb", tar: mkTar(t, tarEntry{Header: bomb.Header, Body: string(make([]byte, bomb.Size))}), max: 16 << 20, refuse: "zeros"},
		{name: "bomb across entries", tar: mkTar(t, reg("a", strings.Repeat("a", 3000)), reg("b", strings.Repeat("b", 3000))), max: 5000, refuse: "b"},
		{name: "size past the limit, no data", tar: rawTar(rawHeader("huge", tar.TypeReg, 1<<40, "")), max: 1 << 30, refuse: "huge"},
		{name: "skipped data past the limit", tar: rawTar(rawHeader(".wh.skipped", tar.TypeReg, 1<<40, "")), max: 1 << 30, refuse: ".wh.skipped"},
		{name: "data shorter than its header says", tar: rawTar(rawHeader("short", tar.TypeReg, 4096, ""), []byte("only this")), errHas: "short"},
		// Replacements, legal in a tar: the later entry wins.
		{name: "duplicate file", tar: mkTar(t, reg("a", "first"), reg("a", "second")), check: content("a", "second")},
		{name: "file replaces an empty directory", tar: mkTar(t, dirEntry("d/"), reg("d", "file")), check: content("d", "file")},
		{name: "file over a directory with entries", tar: mkTar(t, reg("d/x", "x"), reg("d", "file")), errHas: "d"},
		{name: "directory replaces a file", tar: mkTar(t, reg("d", "file"), dirEntry("d/"), reg("d/x", "x")), check: content("d/x", "x")},
		{name: "directory replaces a symlink out", tar: mkTar(t, symlink("l", "../victim"), dirEntry("l/"), reg("l/x", "inside")),
			check: all(isType("l", unix.S_IFDIR), content("l/x", "inside"))},
		{name: "file replaces a symlink out", tar: mkTar(t, symlink("l", "../victim/hello"), reg("l", "mine")),
			check: all(isType("l", unix.S_IFREG), content("l", "mine"))},
		{name: "file replaces a hard link", tar: mkTar(t, reg("a", "orig"), hardlink("b", "a"), reg("b", "new")),
			check: all(content("a", "orig"), content("b", "new"))},
		{name: "hard link to a symlink out", tar: mkTar(t, symlink("s", "../victim/hello"), hardlink("h", "s")),
			check: isType("h", unix.S_IFLNK)},
		{name: "directory metadata through a later symlink", tar: mkTar(t, withMode(dirEntry("d/"), 0o777, 0, 0), symlink("d", "../victim")),
			check: isType("d", unix.S_IFLNK)},
		{name: "file replaced by a directory across layers", tar: mkTar(t, reg("x", "file")), then: mkTar(t, dirEntry("x/"), reg("x/y", "y")),
			check: content("x", "file")},
		{name: "directory replaced by a file across layers", tar: mkTar(t, reg("x/y", "y")), then: mkTar(t, reg(".wh.x", ""), reg("y", "new")),
			check: content("x/y", "y")},
	}
}

func TestHostileLayers(t *testing.T) {
	cases := hostileCorpus(t)
	refused := 0
	for _, tc := range cases {
		if tc.refuse != "" || tc.errHas != "" {
			refused++
		}
	}
	if len(cases) < 30 {
		t.Errorf("the corpus holds %d layers, want at least 30", len(cases))
	}
	t.Logf("%d hostile layers: %d refused, %d applied safely", len(cases), refused, len(cases)-refused)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			layer, victim := breakoutDirs(t)
			base := filepath.Dir(layer)
			var vst unix.Stat_t
			if err := unix.Lstat(victim, &vst); err != nil {
				t.Fatal(err)
			}
			opts := UnpackOptions{Privileged: os.Geteuid() == 0 && !tc.unpriv, MaxSize: tc.max}
			err := Unpack(layer, bytes.NewReader(tc.tar), opts)
			if err == nil && tc.then != nil {
				layer2 := filepath.Join(base, "layer2")
				if err := os.Mkdir(layer2, 0o755); err != nil {
					t.Fatal(err)
				}
				err = Unpack(layer2, bytes.NewReader(tc.then), opts)
			}
			var re *RefusedError
			switch {
			case tc.refuse != "":
				if !errors.As(err, &re) || !errors.Is(err, ErrRefused) {
					t.Fatalf("got %v, want a refusal of %q", err, tc.refuse)
				}
				if re.Entry != tc.refuse || !strings.Contains(err.Error(), tc.refuse) {
					t.Errorf("refusal %q names %q, want %q", err, re.Entry, tc.refuse)
				}
			case tc.errHas != "":
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Errorf("got %v, want an error that says %q", err, tc.errHas)
				}
			default:
				if err != nil {
					t.Fatalf("got %v, want the layer applied", err)
				}
				tc.check(t, layer)
			}
			checkVictim(t, victim)
			var vst2 unix.Stat_t
			if err := unix.Lstat(victim, &vst2); err != nil || vst2.Mode != vst.Mode || vst2.Mtim != vst.Mtim || vst2.Ctim != vst.Ctim {
				t.Errorf("the victim dir changed: mode %o mtime %v ctime %v (%v), was %o %v %v", vst2.Mode, vst2.Mtim, vst2.Ctim, err, vst.Mode, vst.Mtim, vst.Ctim)
			}
			ents, _ := os.ReadDir(base)
			for _, e := range ents {
				if n := e.Name(); n != "layer" && n != "layer2" && n != "victim" {
					t.Errorf("%s appeared beside the layer", n)
				}
			}
			for _, p := range []string{"/tmp/strata-hostile-absolute", "/tmp/strata-hostile-dir", "/tmp/strata-hostile-evil"} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s was written", p)
					_ = os.RemoveAll(p) // for the next run
				}
			}
		})
	}
}

// readBeneath reads the file rel below dir one directory at a time, for paths
// longer than PATH_MAX.
func readBeneath(dir, rel string) ([]byte, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	parts := strings.Split(rel, "/")
	for i, p := range parts {
		flags := unix.O_PATH | unix.O_DIRECTORY | unix.O_NOFOLLOW
		if i == len(parts)-1 {
			flags = unix.O_RDONLY | unix.O_NOFOLLOW
		}
		next, err := unix.Openat(fd, p, flags|unix.O_CLOEXEC, 0)
		_ = unix.Close(fd) // a test's read-only walk
		if err != nil {
			return nil, &os.PathError{Op: "openat", Path: p, Err: err}
		}
		fd = next
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(f)
	return b.Bytes(), err
}
