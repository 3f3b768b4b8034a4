package layers

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseOverlayOptions(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  string
		want  Stack
		extra []string
	}{
		{"empty", "", Stack{}, nil},
		{"full", "lowerdir=app:base,upperdir=up,workdir=wk",
			Stack{Lowers: []string{"app", "base"}, Upper: "up", Work: "wk"}, nil},
		{"only lowerdir", "lowerdir=/l", Stack{Lowers: []string{"/l"}}, nil},
		{"missing lowerdir", "upperdir=up,workdir=wk", Stack{Upper: "up", Work: "wk"}, nil},
		{"escaped colon", `lowerdir=a\:b:c`, Stack{Lowers: []string{"a:b", "c"}}, nil},
		{"escaped comma", `lowerdir=a\,b:c,ro`, Stack{Lowers: []string{"a,b", "c"}}, []string{"ro"}},
		{"escaped backslash", `lowerdir=a\\:b`, Stack{Lowers: []string{`a\`, "b"}}, nil},
		{"escapes in upper and work", `lowerdir=l,upperdir=u\,p,workdir=w\:k`,
			Stack{Lowers: []string{"l"}, Upper: "u,p", Work: "w:k"}, nil},
		{"volatile", "lowerdir=l,upperdir=u,workdir=w,volatile",
			Stack{Lowers: []string{"l"}, Upper: "u", Work: "w", Volatile: true}, nil},
		{"lower_passthrough", "lowerdir=l,upperdir=u,workdir=w,lower_passthrough",
			Stack{Lowers: []string{"l"}, Upper: "u", Work: "w", LowerPassthrough: true}, nil},
		{"fuse options kept in order", "ro,lowerdir=l,noatime,allow_other,fsname=x\\,y",
			Stack{Lowers: []string{"l"}}, []string{"ro", "noatime", "allow_other", "fsname=x,y"}},
		{"empty options skipped", ",,lowerdir=l,,", Stack{Lowers: []string{"l"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, extra, err := ParseOverlayOptions(tc.opts)
			if err != nil {
				t.Fatalf("ParseOverlayOptions(%q): %v", tc.opts, err)
			}
			if !reflect.DeepEqual(s, tc.want) {
				t.Errorf("stack: got %+v, want %+v", s, tc.want)
			}
			if !reflect.DeepEqual(extra, tc.extra) {
				t.Errorf("extra: got %q, want %q", extra, tc.extra)
			}
		})
	}
}

func TestParseOverlayOptionsErrors(t *testing.T) {
	for _, opts := range []string{
		"lowerdir=",
		"lowerdir",
		"upperdir=",
		"workdir",
		"lowerdir=a::b",
		"lowerdir=a:",
		"lowerdir=a,lowerdir=b",
		"lowerdir=a,upperdir=u,upperdir=v",
		`lowerdir=a\`,
		`lowerdir=a\\\`,
		"volatile=yes",
		"lowerdir=a,index=on",
		"lowerdir+=a",
		"lowerdir=a,metacopy=on",
		"lowerdir=a,userxattr",
	} {
		t.Run(opts, func(t *testing.T) {
			_, _, err := ParseOverlayOptions(opts)
			if !errors.Is(err, ErrBadOption) || !errors.Is(err, ErrInvalid) {
				t.Errorf("got %v, want ErrBadOption", err)
			}
		})
	}
}

// tree makes the directories (names ending in "/") and files under a fresh
// temp dir and returns the dir, its symlinks resolved.
func tree(t *testing.T, names ...string) string {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		p := filepath.Join(dir, n)
		if strings.HasSuffix(n, "/") {
			err = os.MkdirAll(p, 0o755)
		} else if err = os.MkdirAll(filepath.Dir(p), 0o755); err == nil {
			err = os.WriteFile(p, nil, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// mountTmpfs mounts a small tmpfs on dir until the test ends; it skips the
// test without root.
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			_ = unix.Unmount(dir, unix.MNT_DETACH) // never leave it behind
		}
	})
}

func TestResolve(t *testing.T) {
	d := tree(t, "base/", "app/", "up/", "wk/work/", "wk/index/", "file", "sub/dir/")
	if err := os.Symlink(filepath.Join(d, "base"), filepath.Join(d, "link")); err != nil {
		t.Fatal(err)
	}
	t.Chdir(d)

	s, err := Stack{Lowers: []string{"app", "link"}, Upper: "up", Work: "./wk/", Volatile: true}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	want := Stack{
		Lowers:   []string{filepath.Join(d, "app"), filepath.Join(d, "base")},
		Upper:    filepath.Join(d, "up"),
		Work:     filepath.Join(d, "wk"),
		Volatile: true,
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("got %+v, want %+v", s, want)
	}

	ro, err := Stack{Lowers: []string{"sub/dir/.."}}.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{filepath.Join(d, "sub")}; !reflect.DeepEqual(ro.Lowers, want) {
		t.Errorf("read-only: got %q, want %q", ro.Lowers, want)
	}
}

func TestValidateRefuses(t *testing.T) {
	d := tree(t, "base/", "app/", "up/", "wk/", "file", "base/up/", "base/wk/",
		"up/inner/", "up/wk/", "wk/up/", "full/junk", "workfile/work", "base/link-target/")
	if err := os.Symlink(filepath.Join(d, "base/link-target"), filepath.Join(d, "sneaky")); err != nil {
		t.Fatal(err)
	}
	p := func(n string) string { return filepath.Join(d, n) }
	lowers := []string{p("app"), p("base")}
	for _, tc := range []struct {
		name  string
		stack Stack
		err   error
		path  string // the path the message must name
	}{
		{"no layers", Stack{}, ErrNoLayers, ""},
		{"missing layer", Stack{Lowers: []string{p("app"), p("nope")}}, ErrNotExist, p("nope")},
		{"empty layer path", Stack{Lowers: []string{""}}, ErrNotExist, `layer ""`},
		{"layer is a file", Stack{Lowers: []string{p("file")}}, ErrNotDir, p("file")},
		{"layer below a file", Stack{Lowers: []string{p("file/x")}}, ErrNotDir, p("file/x")},
		{"upper without work", Stack{Lowers: lowers, Upper: p("up")}, ErrNoWork, p("up")},
		{"work without upper", Stack{Lowers: lowers, Work: p("wk")}, ErrNoUpper, p("wk")},
		{"missing upper", Stack{Lowers: lowers, Upper: p("nope"), Work: p("wk")}, ErrNotExist, p("nope")},
		{"missing work", Stack{Lowers: lowers, Upper: p("up"), Work: p("nope")}, ErrNotExist, p("nope")},
		{"upper is a file", Stack{Lowers: lowers, Upper: p("file"), Work: p("wk")}, ErrNotDir, p("file")},
		{"upper inside layer", Stack{Lowers: lowers, Upper: p("base/up"), Work: p("wk")}, ErrOverlap, p("base/up")},
		{"upper inside layer by symlink", Stack{Lowers: lowers, Upper: p("sneaky"), Work: p("wk")}, ErrOverlap, p("base/link-target")},
		{"work inside layer", Stack{Lowers: lowers, Upper: p("up"), Work: p("base/wk")}, ErrOverlap, p("base/wk")},
		{"layer inside upper", Stack{Lowers: []string{p("up/inner")}, Upper: p("up"), Work: p("wk")}, ErrOverlap, p("up/inner")},
		{"layer is upper", Stack{Lowers: []string{p("up")}, Upper: p("up"), Work: p("wk")}, ErrOverlap, p("up")},
		{"work inside upper", Stack{Lowers: lowers, Upper: p("up"), Work: p("up/wk")}, ErrOverlap, p("up/wk")},
		{"upper inside work", Stack{Lowers: lowers, Upper: p("wk/up"), Work: p("wk")}, ErrOverlap, p("wk/up")},
		{"upper is work", Stack{Lowers: lowers, Upper: p("up"), Work: p("up")}, ErrOverlap, p("up")},
		{"work not empty", Stack{Lowers: lowers, Upper: p("up"), Work: p("full")}, ErrNotEmpty, p("full")},
		{"work holds a file named work", Stack{Lowers: lowers, Upper: p("up"), Work: p("workfile")}, ErrNotEmpty, p("workfile")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.stack.Validate()
			if !errors.Is(err, tc.err) {
				t.Fatalf("got %v, want %v", err, tc.err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%v: not ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.path) {
				t.Errorf("%q does not name %q", err, tc.path)
			}
			var e *Error
			if !errors.Is(tc.err, ErrNoLayers) && !errors.As(err, &e) {
				t.Errorf("%v: not an *Error", err)
			}
		})
	}
}

func TestValidateCrossDevice(t *testing.T) {
	d := tree(t, "base/", "up/")
	mountTmpfs(t, filepath.Join(d, "tmpfs"))
	wk := filepath.Join(d, "tmpfs", "wk")
	if err := os.Mkdir(wk, 0o755); err != nil {
		t.Fatal(err)
	}
	err := Stack{Lowers: []string{filepath.Join(d, "base")}, Upper: filepath.Join(d, "up"), Work: wk}.Validate()
	if !errors.Is(err, ErrCrossDevice) {
		t.Fatalf("got %v, want ErrCrossDevice", err)
	}
	if !strings.Contains(err.Error(), `work "`+wk+`"`) {
		t.Errorf("%q does not name the work dir %q", err, wk)
	}
}

func TestCheckMountpoint(t *testing.T) {
	d := tree(t, "base/", "up/", "wk/", "mnt/", "file", "base/mnt/", "up/mnt/")
	p := func(n string) string { return filepath.Join(d, n) }
	s := Stack{Lowers: []string{p("base")}, Upper: p("up"), Work: p("wk")}

	for _, ok := range []string{"mnt", "base", "up"} {
		got, err := CheckMountpoint(p(ok), s)
		if err != nil || got != p(ok) {
			t.Errorf("CheckMountpoint(%s): got %q, %v; want %q, nil", ok, got, err, p(ok))
		}
	}
	for _, tc := range []struct {
		mnt string
		err error
	}{
		{"nope", ErrNotExist},
		{"file", ErrNotDir},
		{"base/mnt", ErrOverlap},
		{"up/mnt", ErrOverlap},
		{"wk", ErrOverlap},
	} {
		_, err := CheckMountpoint(p(tc.mnt), s)
		if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), `mount point "`+p(tc.mnt)+`"`) {
			t.Errorf("CheckMountpoint(%s): got %v, want %v naming the mount point", tc.mnt, err, tc.err)
		}
	}

	t.Run("busy", func(t *testing.T) {
		mountTmpfs(t, p("mnt"))
		_, err := CheckMountpoint(p("mnt"), s)
		if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), p("mnt")) {
			t.Errorf("got %v, want ErrBusy naming %s", err, p("mnt"))
		}
	})
}
