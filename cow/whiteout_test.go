package cow

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/whiteout"
)

var formats = []whiteout.Format{whiteout.OCI, whiteout.Overlay}

// Fixtures in an upper directory.
func ociWhiteout(t *testing.T, dir, name string) {
	mustWrite(t, filepath.Join(dir, whiteout.Prefix+name), "", 0o644)
}

func overlayWhiteout(t *testing.T, dir, name string) {
	if err := unix.Mknod(filepath.Join(dir, name), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
}

// hasWhiteout reports which whiteouts for name dir holds.
func hasWhiteout(t *testing.T, dir, name string) (oci, overlay bool) {
	oci = exists(t, filepath.Join(dir, whiteout.Prefix+name))
	if exists(t, filepath.Join(dir, name)) {
		st := lstat(t, filepath.Join(dir, name))
		overlay = whiteout.IsOverlayWhiteout(st.Mode, st.Rdev)
	}
	return oci, overlay
}

// isOpaque reports whether dir is marked opaque in either format.
func isOpaque(t *testing.T, dir string) (oci, overlay bool) {
	oci = exists(t, filepath.Join(dir, whiteout.OpaqueMarker))
	for n, v := range xattrs(t, dir) {
		if whiteout.IsOpaqueXattr(n, []byte(v)) {
			overlay = true
		}
	}
	return oci, overlay
}

// creators make one entry each at (dirfd, name), as unionfs does; the file keeps
// its descriptor open in *fd.
func createFile(fd *int) func(int, string) error {
	return func(dirfd int, name string) error {
		var err error
		if *fd, err = unix.Openat(dirfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0); err != nil {
			return err
		}
		return unix.Fchmod(*fd, 0o4755)
	}
}

func createDir(dirfd int, name string) error {
	if err := unix.Mkdirat(dirfd, name, 0); err != nil {
		return err
	}
	return unix.Fchmodat(dirfd, name, 0o2755, 0)
}

func createSymlink(dirfd int, name string) error {
	return unix.Symlinkat("somewhere", dirfd, name)
}

func TestMake(t *testing.T) {
	requireRoot(t)
	for _, f := range formats {
		for _, tc := range []struct {
			name     string
			kind     uint32 // S_IFREG, S_IFDIR, S_IFLNK
			opaque   bool
			existing func(t *testing.T, dir, name string)
		}{
			{"file", unix.S_IFREG, false, nil},
			{"file over OCI whiteout", unix.S_IFREG, false, ociWhiteout},
			{"file over overlay whiteout", unix.S_IFREG, false, overlayWhiteout},
			{"symlink over overlay whiteout", unix.S_IFLNK, false, overlayWhiteout},
			{"dir", unix.S_IFDIR, false, nil},
			{"opaque dir", unix.S_IFDIR, true, nil},
			{"opaque dir over OCI whiteout", unix.S_IFDIR, true, ociWhiteout},
			{"opaque dir over overlay whiteout", unix.S_IFDIR, true, overlayWhiteout},
			{"opaque dir over both whiteouts", unix.S_IFDIR, true, func(t *testing.T, dir, name string) {
				ociWhiteout(t, dir, name)
				overlayWhiteout(t, dir, name)
			}},
		} {
			t.Run(f.String()+"/"+tc.name, func(t *testing.T) {
				e := newEnv(t, f, nil)
				dir := filepath.Join(e.upper, "sub")
				mustMkdir(t, dir)
				if tc.existing != nil {
					tc.existing(t, dir, "n")
				}
				fd := -1
				create := map[uint32]func(int, string) error{
					unix.S_IFREG: createFile(&fd), unix.S_IFDIR: createDir, unix.S_IFLNK: createSymlink,
				}[tc.kind]
				err := e.u.Make("sub", "n", owner, group, tc.opaque, true, create)
				if fd >= 0 {
					defer unix.Close(fd)
				}
				if err != nil {
					t.Fatal(err)
				}
				p := filepath.Join(dir, "n")
				got := lstat(t, p)
				if got.Mode&unix.S_IFMT != tc.kind {
					t.Errorf("type: got %o, want %o", got.Mode&unix.S_IFMT, tc.kind)
				}
				if got.Uid != owner || got.Gid != group {
					t.Errorf("owner: got %d:%d, want %d:%d", got.Uid, got.Gid, owner, group)
				}
				switch tc.kind {
				case unix.S_IFREG:
					if got.Mode&0o7777 != 0o4755 {
						t.Errorf("mode: got %o, want 4755 (chown must not eat set-user-ID)", got.Mode&0o7777)
					}
					// The descriptor create kept still writes the entry.
					if _, err := unix.Write(fd, []byte("via fd")); err != nil {
						t.Fatal(err)
					}
					if b, _ := os.ReadFile(p); string(b) != "via fd" {
						t.Errorf("content: got %q, want \"via fd\"", b)
					}
				case unix.S_IFDIR:
					if got.Mode&0o7777 != 0o2755 {
						t.Errorf("mode: got %o, want 2755", got.Mode&0o7777)
					}
					oci, ovl := isOpaque(t, p)
					wantOCI := tc.opaque && f == whiteout.OCI
					wantOvl := tc.opaque && f == whiteout.Overlay
					if oci != wantOCI || ovl != wantOvl {
						t.Errorf("opaque: got oci %v overlay %v, want %v %v", oci, ovl, wantOCI, wantOvl)
					}
					if ovl && !exists(t, p) {
						t.Error("unreachable")
					}
					if wantOvl {
						if v := xattrs(t, p)[whiteout.TrustedOpaqueXattr]; v != "y" {
							t.Errorf("%s: got %q, want \"y\" (privileged)", whiteout.TrustedOpaqueXattr, v)
						}
					}
				}
				if oci, _ := hasWhiteout(t, dir, "n"); oci {
					t.Error("OCI whiteout left beside the new entry")
				}
			})
		}
	}
}

// TestMakeExisting: a name that holds a real entry is not replaced, whether
// made in place or staged.
func TestMakeExisting(t *testing.T) {
	for _, f := range formats {
		for _, opaque := range []bool{false, true} {
			t.Run(f.String(), func(t *testing.T) {
				e := newEnv(t, f, nil)
				mustWrite(t, filepath.Join(e.upper, "n"), "keep", 0o644)
				err := e.u.Make("", "n", -1, -1, opaque, true, createDir)
				if !errors.Is(err, unix.EEXIST) {
					t.Errorf("opaque %v: got %v, want EEXIST", opaque, err)
				}
				if b, _ := os.ReadFile(filepath.Join(e.upper, "n")); string(b) != "keep" {
					t.Errorf("existing entry: got %q, want \"keep\"", b)
				}
			})
		}
	}
}

// TestMakeDeviceNotWhiteout: a character device that is not 0/0 is an entry,
// not a whiteout; Make must not rename over it.
func TestMakeDeviceNotWhiteout(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, whiteout.Overlay, nil)
	if err := unix.Mknod(filepath.Join(e.upper, "n"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if err := e.u.Make("", "n", -1, -1, true, true, createDir); !errors.Is(err, unix.EEXIST) {
		t.Errorf("got %v, want EEXIST", err)
	}
	if st := lstat(t, filepath.Join(e.upper, "n")); st.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("device replaced: rdev %x", st.Rdev)
	}
}

// TestMakeCreateFails: when create fails, a staged entry goes with it.
func TestMakeCreateFails(t *testing.T) {
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			e := newEnv(t, f, nil)
			overlayWhiteout(t, e.upper, "n")
			boom := errors.New("boom")
			err := e.u.Make("", "n", -1, -1, true, true, func(dirfd int, name string) error {
				if err := unix.Mkdirat(dirfd, name, 0o755); err != nil {
					return err
				}
				return boom
			})
			if !errors.Is(err, boom) {
				t.Errorf("got %v, want boom", err)
			}
			if _, ovl := hasWhiteout(t, e.upper, "n"); !ovl {
				t.Error("the whiteout is gone")
			}
		})
	}
}

func TestWhiteout(t *testing.T) {
	requireRoot(t)
	for _, f := range formats {
		for _, tc := range []struct {
			name     string
			existing func(t *testing.T, dir, victim string)
		}{
			{"nothing", func(*testing.T, string, string) {}},
			{"file", func(t *testing.T, dir, _ string) { mustWrite(t, filepath.Join(dir, "n"), "x", 0o644) }},
			{"symlink to the victim", func(t *testing.T, dir, v string) {
				if err := os.Symlink(v, filepath.Join(dir, "n")); err != nil {
					t.Fatal(err)
				}
			}},
			{"directory tree", func(t *testing.T, dir, v string) {
				mustMkdir(t, filepath.Join(dir, "n/a/b/c"))
				mustWrite(t, filepath.Join(dir, "n/a/b/c/f"), "x", 0o644)
				mustWrite(t, filepath.Join(dir, "n/.wh.gone"), "", 0o644)
				if err := os.Symlink(v, filepath.Join(dir, "n/a/tovictim")); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(filepath.Join(v, "keep"), filepath.Join(dir, "n/a/b/tokeep")); err != nil {
					t.Fatal(err)
				}
				if err := unix.Mkfifo(filepath.Join(dir, "n/a/fifo"), 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(filepath.Join(dir, "n/a/b"), 0o500); err != nil {
					t.Fatal(err)
				}
			}},
			{"OCI whiteout", func(t *testing.T, dir, _ string) { ociWhiteout(t, dir, "n") }},
			{"overlay whiteout", func(t *testing.T, dir, _ string) { overlayWhiteout(t, dir, "n") }},
		} {
			t.Run(f.String()+"/"+tc.name, func(t *testing.T) {
				v := victim(t)
				e := newEnv(t, f, nil)
				dir := filepath.Join(e.upper, "sub")
				mustMkdir(t, dir)
				tc.existing(t, dir, v)
				if err := e.u.Whiteout("sub", "n"); err != nil {
					t.Fatal(err)
				}
				oci, ovl := hasWhiteout(t, dir, "n")
				switch f {
				case whiteout.OCI:
					if !oci || exists(t, filepath.Join(dir, "n")) {
						t.Errorf("got .wh.n %v, n present %v; want the whiteout and no n", oci, exists(t, filepath.Join(dir, "n")))
					}
					if st := lstat(t, filepath.Join(dir, whiteout.Prefix+"n")); st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 {
						t.Errorf("whiteout: got mode %o size %d, want an empty file", st.Mode, st.Size)
					}
				case whiteout.Overlay:
					if !ovl {
						t.Error("no 0/0 device at n")
					}
				}
			})
		}
	}
}

func TestRemoveWhiteout(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name     string
		existing func(t *testing.T, dir string)
		kept     bool // n is an entry that must stay
	}{
		{"none", func(*testing.T, string) {}, false},
		{"OCI", func(t *testing.T, dir string) { ociWhiteout(t, dir, "n") }, false},
		{"overlay", func(t *testing.T, dir string) { overlayWhiteout(t, dir, "n") }, false},
		{"both", func(t *testing.T, dir string) { ociWhiteout(t, dir, "n"); overlayWhiteout(t, dir, "n") }, false},
		{"a file is no whiteout", func(t *testing.T, dir string) { mustWrite(t, filepath.Join(dir, "n"), "x", 0o644) }, true},
		{"a device is no whiteout", func(t *testing.T, dir string) {
			if err := unix.Mknod(filepath.Join(dir, "n"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
				t.Fatal(err)
			}
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, whiteout.OCI, nil)
			tc.existing(t, e.upper)
			if err := e.u.RemoveWhiteout("", "n"); err != nil {
				t.Fatal(err)
			}
			if oci, ovl := hasWhiteout(t, e.upper, "n"); oci || ovl {
				t.Errorf("whiteouts left: oci %v overlay %v", oci, ovl)
			}
			if got := exists(t, filepath.Join(e.upper, "n")); got != tc.kept {
				t.Errorf("n present: got %v, want %v", got, tc.kept)
			}
		})
	}
}

func TestSetOpaque(t *testing.T) {
	requireRoot(t)
	for _, f := range formats {
		for _, rel := range []string{"sub", "sub/deeper", ""} {
			t.Run(f.String()+"/"+rel, func(t *testing.T) {
				e := newEnv(t, f, nil)
				mustMkdir(t, filepath.Join(e.upper, "sub/deeper"))
				for range 2 { // the second time is a no-op
					if err := e.u.SetOpaque(rel); err != nil {
						t.Fatal(err)
					}
				}
				oci, ovl := isOpaque(t, filepath.Join(e.upper, rel))
				if oci != (f == whiteout.OCI) || ovl != (f == whiteout.Overlay) {
					t.Errorf("got oci %v overlay %v", oci, ovl)
				}
			})
		}
	}
}

// TestBadNames: names that are not entries of their own are refused before any
// call can reach the directory itself or its parent.
func TestBadNames(t *testing.T) {
	e := newEnv(t, whiteout.Overlay, nil)
	mustMkdir(t, filepath.Join(e.upper, "sub"))
	for _, name := range []string{"", ".", "..", "a/b"} {
		if err := e.u.Make("sub", name, -1, -1, true, true, createDir); !errors.Is(err, unix.EINVAL) {
			t.Errorf("Make(%q): got %v, want EINVAL", name, err)
		}
		if err := e.u.Whiteout("sub", name); !errors.Is(err, unix.EINVAL) {
			t.Errorf("Whiteout(%q): got %v, want EINVAL", name, err)
		}
		if err := e.u.RemoveWhiteout("sub", name); !errors.Is(err, unix.EINVAL) {
			t.Errorf("RemoveWhiteout(%q): got %v, want EINVAL", name, err)
		}
	}
	for _, rel := range []string{"..", "sub/..", "."} {
		if err := e.u.SetOpaque(rel); !errors.Is(err, unix.EINVAL) {
			t.Errorf("SetOpaque(%q): got %v, want EINVAL", rel, err)
		}
	}
	if !exists(t, filepath.Join(e.upper, "sub")) {
		t.Error("sub is gone")
	}
	if oci, ovl := isOpaque(t, e.base); oci || ovl {
		t.Error("SetOpaque marked the directory above the upper")
	}
}

// TestWhiteoutFirst: ahead of a rename, the OCI marker exists while the entry
// still shows (it hides nothing of its own layer); the overlay format asks the
// rename itself for the whiteout. Either way Whiteout afterwards finds the job
// done, and the name ends as a whiteout only.
func TestWhiteoutFirst(t *testing.T) {
	requireRoot(t)
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			e := newEnv(t, f, nil)
			mustWrite(t, filepath.Join(e.upper, "n"), "copied up", 0o644)
			flags, err := e.u.WhiteoutFirst("", "n")
			if err != nil {
				t.Fatal(err)
			}
			marker := exists(t, filepath.Join(e.upper, whiteout.Prefix+"n"))
			switch f {
			case whiteout.OCI:
				if flags != 0 || !marker {
					t.Fatalf("got flags %#x, marker %v; want 0 and the marker", flags, marker)
				}
			default:
				if flags != unix.RENAME_WHITEOUT || marker {
					t.Fatalf("got flags %#x, marker %v; want RENAME_WHITEOUT and no marker", flags, marker)
				}
			}
			if err := unix.Renameat2(unix.AT_FDCWD, filepath.Join(e.upper, "n"), unix.AT_FDCWD, filepath.Join(e.upper, "m"), flags); err != nil {
				t.Fatal(err)
			}
			if err := e.u.Whiteout("", "n"); err != nil {
				t.Fatal(err)
			}
			st := lstat(t, filepath.Join(e.upper, "m"))
			if st.Mode&unix.S_IFMT != unix.S_IFREG {
				t.Errorf("the renamed entry: mode %o", st.Mode)
			}
			if f == whiteout.Overlay {
				st := lstat(t, filepath.Join(e.upper, "n"))
				if !whiteout.IsOverlayWhiteout(st.Mode, st.Rdev) {
					t.Errorf("n: mode %o rdev %d, want a whiteout", st.Mode, st.Rdev)
				}
			} else if exists(t, filepath.Join(e.upper, "n")) {
				t.Error("n is still there beside its marker")
			}
		})
	}
}
