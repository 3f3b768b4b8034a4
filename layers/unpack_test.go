package layers

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tarEntry is one entry of a test tar; Body is the file's content.
type tarEntry struct {
	tar.Header
	Body string
}

func reg(name, body string) tarEntry {
	return tarEntry{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}, Body: body}
}
func dirEntry(name string) tarEntry {
	return tarEntry{Header: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}
func symlink(name, target string) tarEntry {
	return tarEntry{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}
func hardlink(name, target string) tarEntry {
	return tarEntry{Header: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target}}
}

// mkTar builds a tar in memory (go-containerregistry mutate_test.go mkLayer).
func mkTar(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := e.Header
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1700000000, 0)
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %s: %v", h.Name, err)
		}
		if _, err := tw.Write([]byte(e.Body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// breakoutDirs makes a base dir with an empty layer dir and a victim dir beside
// it holding one file.
func breakoutDirs(t *testing.T) (layer, victim string) {
	t.Helper()
	base := t.TempDir()
	layer = filepath.Join(base, "layer")
	victim = filepath.Join(base, "victim")
	for _, d := range []string{layer, victim} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(victim, "hello"), []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	return layer, victim
}

// checkVictim fails unless victim still holds exactly its one file.
func checkVictim(t *testing.T, victim string) {
	t.Helper()
	ents, err := os.ReadDir(victim)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "hello" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("victim dir holds %v, want [hello]", names)
	}
	b, err := os.ReadFile(filepath.Join(victim, "hello"))
	if err != nil || string(b) != "untouched" {
		t.Errorf("victim/hello: %q, %v; want \"untouched\"", b, err)
	}
}

func TestUnpackRefuses(t *testing.T) {
	dev := tarEntry{Header: tar.Header{Typeflag: tar.TypeChar, Name: "null", Mode: 0o666, Devmajor: 1, Devminor: 3}}
	for _, tc := range []struct {
		name    string
		entries []tarEntry
		entry   string // the entry the refusal must name
		noRoot  bool
	}{
		{"dotdot", []tarEntry{reg("../victim/dotdot", "x")}, "../victim/dotdot", false},
		{"dotdot inside", []tarEntry{dirEntry("a/"), reg("a/../../victim/x", "x")}, "a/../../victim/x", false},
		{"absolute", []tarEntry{reg("/etc/passwd-strata-test", "x")}, "/etc/passwd-strata-test", false},
		{"symlink parent out", []tarEntry{symlink("out", "../victim"), reg("out/evil", "x")}, "out/evil", false},
		{"symlink parent absolute", []tarEntry{symlink("out", "/"), reg("out/tmp/evil", "x")}, "out/tmp/evil", false},
		{"symlink parent inside", []tarEntry{dirEntry("d/"), symlink("l", "d"), reg("l/x", "x")}, "l/x", false},
		{"hardlink out", []tarEntry{hardlink("h", "../victim/hello")}, "h", false},
		{"hardlink absolute", []tarEntry{hardlink("h", "/etc/passwd")}, "h", false},
		{"hardlink through symlink", []tarEntry{symlink("out", "../victim"), hardlink("h", "out/hello")}, "h", false},
		{"device when not root", []tarEntry{dev}, "null", true},
		{"entry then its whiteout", []tarEntry{reg("a", "x"), reg(".wh.a", "")}, ".wh.a", false},
		{"whiteout then the entry", []tarEntry{reg(".wh.a", ""), reg("a", "x")}, "a", false},
		{"entry below a whiteout", []tarEntry{reg(".wh.d", ""), reg("d/x", "x")}, "d/x", false},
		{"whiteout of a dir with entries", []tarEntry{reg("d/x", "x"), reg(".wh.d", "")}, ".wh.d", false},
		{"hardlink to a whited-out name", []tarEntry{reg(".wh.a", ""), hardlink("h", "a")}, "h", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			layer, victim := breakoutDirs(t)
			priv := os.Geteuid() == 0 && !tc.noRoot
			err := Unpack(layer, bytes.NewReader(mkTar(t, tc.entries...)), UnpackOptions{Privileged: priv})
			var re *RefusedError
			if !errors.As(err, &re) || !errors.Is(err, ErrRefused) {
				t.Fatalf("got %v, want a *RefusedError", err)
			}
			if re.Entry != tc.entry {
				t.Errorf("refusal names %q, want %q (%v)", re.Entry, tc.entry, err)
			}
			if !strings.Contains(err.Error(), tc.entry) {
				t.Errorf("message %q does not name %q", err, tc.entry)
			}
			checkVictim(t, victim)
			if _, err := os.Lstat("/etc/passwd-strata-test"); err == nil {
				t.Errorf("/etc/passwd-strata-test was written")
			}
		})
	}
}

// A directory entry replaced by a symlink of the same name: the directory's
// metadata, set at the end, must not reach through the symlink.
func TestUnpackDirReplacedBySymlink(t *testing.T) {
	layer, victim := breakoutDirs(t)
	if err := os.Chmod(victim, 0o750); err != nil {
		t.Fatal(err)
	}
	d := dirEntry("d/")
	d.Mode = 0o777
	tr := mkTar(t, d, symlink("d", "../victim"))
	if err := Unpack(layer, bytes.NewReader(tr), UnpackOptions{Privileged: os.Geteuid() == 0}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(victim)
	if err != nil || fi.Mode().Perm() != 0o750 {
		t.Errorf("victim dir: %v, %v; want mode 0750 as it was", fi.Mode(), err)
	}
	checkVictim(t, victim)
}

func TestUnpackWhiteouts(t *testing.T) {
	layer := t.TempDir()
	opaqueDir := dirEntry("opq/")
	opaqueDir.PAXRecords = map[string]string{"SCHILY.xattr.trusted.overlay.opaque": "y"}
	overlayWh := tarEntry{Header: tar.Header{Typeflag: tar.TypeChar, Name: "dir/gone", Mode: 0}}
	tr := mkTar(t,
		dirEntry("dir/"),
		reg("dir/.wh.deleted", ""),
		reg("dir/.wh..wh..opq", ""),
		reg("dir/kept", "k"),
		overlayWh,
		opaqueDir,
		reg("opq/new", "n"),
		reg(".wh..wh.plnk", ""), // aufs metadata: skipped
	)
	if err := Unpack(layer, bytes.NewReader(tr), UnpackOptions{Privileged: os.Geteuid() == 0}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"dir/.wh.deleted", "dir/.wh..wh..opq", "dir/.wh.gone", "opq/.wh..wh..opq"} {
		fi, err := os.Lstat(filepath.Join(layer, want))
		if err != nil {
			t.Errorf("%s: %v", want, err)
			continue
		}
		if !fi.Mode().IsRegular() || fi.Size() != 0 {
			t.Errorf("%s: mode %v size %d, want an empty file", want, fi.Mode(), fi.Size())
		}
	}
	for _, gone := range []string{"dir/gone", ".wh..wh.plnk"} {
		if _, err := os.Lstat(filepath.Join(layer, gone)); err == nil {
			t.Errorf("%s exists, want it translated or skipped", gone)
		}
	}
	if _, err := unix.Lgetxattr(filepath.Join(layer, "opq"), "trusted.overlay.opaque", nil); err == nil {
		t.Errorf("opq kept the overlay opaque xattr")
	}
}

func TestUnpackMetadata(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("owners and devices need root")
	}
	layer := t.TempDir()
	mtime := time.Unix(1600000000, 123456789)
	f := reg("d/file", "data")
	f.Mode = 0o4750
	f.Uid, f.Gid = 1234, 5678
	f.ModTime = mtime
	f.Format = tar.FormatPAX
	f.PAXRecords = map[string]string{"SCHILY.xattr.user.test": "v1", "SCHILY.xattr.trusted.t": "v2"}
	d := dirEntry("d/")
	d.Mode = 0o710
	d.ModTime = mtime
	d.Format = tar.FormatPAX
	long := strings.Repeat("n", 200) + "/" + strings.Repeat("m", 200)
	dev := tarEntry{Header: tar.Header{Typeflag: tar.TypeChar, Name: "d/null", Mode: 0o666, Devmajor: 1, Devminor: 3}}
	fifo := tarEntry{Header: tar.Header{Typeflag: tar.TypeFifo, Name: "d/fifo", Mode: 0o600}}
	zeros := reg("d/zeros", strings.Repeat("\x00", 1<<20)+"end")
	tr := mkTar(t, d, f, hardlink("d/link", "d/file"), symlink("d/sym", "/nowhere"), reg(long, "long"), dev, fifo, zeros)
	if err := Unpack(layer, bytes.NewReader(tr), UnpackOptions{Privileged: true}); err != nil {
		t.Fatal(err)
	}
	p := func(n string) string { return filepath.Join(layer, n) }
	var st unix.Stat_t
	if err := unix.Lstat(p("d/file"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o4750 || st.Uid != 1234 || st.Gid != 5678 || st.Nlink != 2 {
		t.Errorf("d/file: mode %o uid %d gid %d nlink %d, want 4750 1234 5678 2", st.Mode&0o7777, st.Uid, st.Gid, st.Nlink)
	}
	if got := time.Unix(st.Mtim.Unix()); !got.Equal(mtime) {
		t.Errorf("d/file mtime %v, want %v", got, mtime)
	}
	for name, want := range map[string]string{"user.test": "v1", "trusted.t": "v2"} {
		buf := make([]byte, 64)
		n, err := unix.Lgetxattr(p("d/file"), name, buf)
		if err != nil || string(buf[:n]) != want {
			t.Errorf("xattr %s: %q, %v; want %q", name, buf[:n], err, want)
		}
	}
	if err := unix.Lstat(p("d"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o710 || !time.Unix(st.Mtim.Unix()).Equal(mtime) {
		t.Errorf("d: mode %o mtime %v, want 710 %v", st.Mode&0o7777, time.Unix(st.Mtim.Unix()), mtime)
	}
	if l, err := os.Readlink(p("d/sym")); err != nil || l != "/nowhere" {
		t.Errorf("d/sym: %q, %v", l, err)
	}
	if b, err := os.ReadFile(p(long)); err != nil || string(b) != "long" {
		t.Errorf("long name: %q, %v", b, err)
	}
	if err := unix.Lstat(p("d/null"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("d/null: mode %o rdev %d, %v", st.Mode, st.Rdev, err)
	}
	if err := unix.Lstat(p("d/fifo"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		t.Errorf("d/fifo: mode %o, %v", st.Mode, err)
	}
	if err := unix.Lstat(p("d/zeros"), &st); err != nil || st.Size != 1<<20+3 || st.Blocks*512 >= 1<<20 {
		t.Errorf("d/zeros: size %d blocks %d, %v; want a hole", st.Size, st.Blocks, err)
	}
}
