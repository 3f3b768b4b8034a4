package layers

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/whiteout"
)

// entry kinds of a diff fixture.
const (
	fxFile    = "file"
	fxDir     = "dir"
	fxWhite   = "whiteout"   // in the layer's format (see mkLayer)
	fxOpaque  = "opaque"     // a directory marked opaque in the layer's format
	fxLink    = "symlink"    // to "target"
	fxCharWh  = "charwh"     // an overlay whiteout in any layer
	fxOpqXatt = "opaquexatt" // a directory with trusted.overlay.opaque=y
)

// mkLayer makes a layer directory from path -> kind; whiteouts and opaque marks
// are written in format f.
func mkLayer(t *testing.T, f whiteout.Format, entries map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, kind := range entries {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch kind {
		case fxFile:
			err = os.WriteFile(full, []byte(p), 0o644)
		case fxDir:
			err = os.MkdirAll(full, 0o755)
		case fxLink:
			err = os.Symlink("target", full)
		case fxWhite, fxCharWh:
			if kind == fxCharWh || f == whiteout.Overlay {
				err = unix.Mknod(full, unix.S_IFCHR, 0)
			} else {
				err = os.WriteFile(filepath.Join(filepath.Dir(full), whiteout.Prefix+filepath.Base(full)), nil, 0o644)
			}
		case fxOpaque, fxOpqXatt:
			if err = os.MkdirAll(full, 0o755); err != nil {
				break
			}
			if kind == fxOpqXatt || f == whiteout.Overlay {
				err = unix.Lsetxattr(full, whiteout.TrustedOpaqueXattr, []byte("y"), 0)
			} else {
				err = os.WriteFile(filepath.Join(full, whiteout.OpaqueMarker), nil, 0o644)
			}
		default:
			t.Fatalf("fixture kind %q", kind)
		}
		if err != nil {
			t.Fatalf("fixture %s: %v", p, err)
		}
	}
	return root
}

func TestDiff(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: overlay whiteouts are device nodes, opaque xattrs trusted.*")
	}
	base := map[string]string{
		"etc/motd": fxFile, "etc/hosts": fxFile, "etc/skel/a": fxFile, "var/cache/c1": fxFile,
		"var/cache/sub/c2": fxFile, "bin/sh": fxFile, "lib/x": fxFile, "gone/g": fxFile,
	}
	app := map[string]string{"etc/app": fxFile, "gone": fxCharWh, "lib": fxOpqXatt, "lib/y": fxFile}
	for _, tc := range []struct {
		name  string
		upper map[string]string
		want  string
	}{
		{"empty upper", map[string]string{}, ""},
		{"added", map[string]string{"new": fxFile, "nd/sub/f": fxFile},
			"A /nd\nA /nd/sub\nA /nd/sub/f\nA /new\n"},
		{"changed file, parent named", map[string]string{"etc/motd": fxFile},
			"C /etc\nC /etc/motd\n"},
		{"deleted file and tree", map[string]string{"etc/hosts": fxWhite, "var/cache": fxWhite},
			"C /etc\nD /etc/hosts\nC /var\nD /var/cache\n"},
		{"whiteout of nothing is no change", map[string]string{"etc/nothing": fxWhite, "gone": fxWhite, "lib/x": fxWhite},
			""},
		{"opaque over a lower directory", map[string]string{"var/cache": fxOpaque, "var/cache/c1": fxFile, "var/cache/new": fxFile},
			"C /var\nD /var/cache\nA /var/cache/c1\nA /var/cache/new\n"},
		{"opaque over an empty merge is only its new entries", map[string]string{"gone": fxOpaque, "gone/n": fxFile},
			"A /gone\nA /gone/n\n"},
		{"entry beside its own whiteout shows", map[string]string{"bin/sh": fxFile, "bin/.keep": fxDir},
			"C /bin\nA /bin/.keep\nC /bin/sh\n"},
		{"type changes", map[string]string{"bin/sh": fxDir, "bin/sh/x": fxFile, "etc/skel": fxLink},
			"C /bin\nC /bin/sh\nA /bin/sh/x\nC /etc\nC /etc/skel\n"},
		{"opaque root", map[string]string{".": fxOpaque, "etc": fxDir, "etc/n": fxFile, "bin/sh": fxFile},
			"D /bin\nA /bin/sh\nD /etc\nA /etc/n\nD /lib\nD /var\n"},
	} {
		for _, f := range []whiteout.Format{whiteout.OCI, whiteout.Overlay} {
			t.Run(tc.name+"/"+f.String(), func(t *testing.T) {
				lowers := []string{mkLayer(t, f, app), mkLayer(t, f, base)}
				upper := mkLayer(t, f, tc.upper)
				// Directories the fixture names take the lowers' times, so
				// that only what the case changes shows.
				syncDirTimes(t, upper, lowers)
				changes, err := Diff(upper, lowers)
				if err != nil {
					t.Fatal(err)
				}
				var got strings.Builder
				for _, c := range changes {
					got.WriteString(c.String() + "\n")
				}
				if got.String() != tc.want {
					t.Errorf("got\n%swant\n%s", got.String(), tc.want)
				}
			})
		}
	}
}

// syncDirTimes gives each directory of upper the mode and times of the same
// directory in the topmost lower that has it.
func syncDirTimes(t *testing.T, upper string, lowers []string) {
	t.Helper()
	var dirs []string
	_ = filepath.WalkDir(upper, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	// Deepest first: setting a child's times does not touch its parent's,
	// but creating the fixture did.
	for i := len(dirs) - 1; i >= 0; i-- {
		rel, _ := filepath.Rel(upper, dirs[i])
		for _, l := range lowers {
			var st unix.Stat_t
			if unix.Lstat(filepath.Join(l, rel), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
				ts := []unix.Timespec{st.Atim, st.Mtim}
				if err := unix.UtimesNano(dirs[i], ts); err != nil {
					t.Fatal(err)
				}
				break
			}
		}
	}
}

func TestUpperUsage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: overlay whiteouts are device nodes")
	}
	up := mkLayer(t, whiteout.OCI, map[string]string{"a": fxFile, "d": fxOpaque, "x": fxWhite, "y": fxCharWh, "e": fxOpqXatt})
	u, err := UpperUsage(up)
	if err != nil {
		t.Fatal(err)
	}
	// a, d, d/.wh..wh..opq, .wh.x, y, e
	if u.Entries != 6 || u.Whiteouts != 2 || u.Opaque != 2 || u.Bytes <= 0 {
		t.Errorf("got %+v, want 6 entries, 2 whiteouts, 2 opaque dirs, some bytes", u)
	}
}
