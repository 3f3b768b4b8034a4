// Package layers describes the directories a union is made of, and checks them
// before anything is mounted. It returns descriptions; package unionfs mounts
// them. It must not import unionfs (a test in internal/depcheck says so): a stack
// can be built, parsed and refused without a FUSE server.
//
// A Stack names its directories as the kernel's overlayfs does: the lower layers
// top first (lowerdir=top:...:bottom), an optional upper that takes every change,
// and a work directory beside the upper where changes are staged. Validate and
// Resolve refuse the stacks that overlayfs refuses, for the same reasons:
//
//   - an upper or work directory inside a layer, or a layer inside them: a change
//     would show up in a layer that the union promises never changes, or a
//     union would see its own staging area;
//   - an upper and a work directory on different file systems: a staged change is
//     moved into the upper by rename(2), which cannot cross them;
//   - a work directory that holds anything but the "work" and "index"
//     directories that overlayfs and strata create there: strata empties
//     work/work at each mount, and would delete what someone else put there.
//
// Every check is made on paths made absolute with their symlinks resolved, so
// "a/../b" and a symlink to a layer are caught. A bind mount of a layer elsewhere
// is not: its path is not below the layer's path. The checks describe the
// directories at the time of the call; nothing stops another process from
// changing them before the mount.
//
// The package also keeps the image store (store.go), which makes the layer
// directories that stacks are built of: it imports images (import.go), applying
// each layer tar once with Unpack (unpack.go), turns an upper back into a layer
// tar with WriteDiff (commit.go), and saves images (save.go). Store.Stack and
// Store.Use describe an image as a read-only Stack; mounting it is still
// unionfs's business. Everything a layer tar names is resolved inside the
// layer through descriptors (internal/beneath), and every file of the store
// reaches its final name by rename(2) once complete and verified.
package layers

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/mounts"
)

// Stack names the directories of one union.
type Stack struct {
	// Lowers are the read-only layers, top first.
	Lowers []string
	// Upper is the writable layer; "" makes a read-only union.
	Upper string
	// Work is the work directory; it must be set exactly when Upper is.
	Work string
	// Volatile skips the syncs that make changes to the upper durable
	// (overlayfs's "volatile"); it means nothing without an upper.
	Volatile bool
	// LowerPassthrough passes lower files of a writable union through to
	// the kernel; their readers then keep the old data after a copy-up, as
	// in overlayfs before Linux 4.19 (unionfs.Config.LowerPassthrough).
	LowerPassthrough bool
}

// ErrInvalid matches every error that says the stack or the options describing it
// are wrong (errors.Is), as opposed to failing to look at them.
var ErrInvalid = errors.New("invalid stack")

// invalid is a sentinel that also matches ErrInvalid.
type invalid string

func (e invalid) Error() string      { return string(e) }
func (invalid) Is(target error) bool { return target == ErrInvalid }

// Sentinel errors, each returned wrapped in an *Error naming the directory.
var (
	// ErrNoLayers: a stack needs at least one lower layer.
	ErrNoLayers error = invalid("no lower layer")
	// ErrNotExist: the directory does not exist.
	ErrNotExist error = invalid("no such directory")
	// ErrNotDir: the path exists and is not a directory.
	ErrNotDir error = invalid("not a directory")
	// ErrOverlap: one directory of the stack is inside another, or is another.
	ErrOverlap error = invalid("overlapping directories")
	// ErrCrossDevice: the work directory is not on the upper's file system.
	ErrCrossDevice error = invalid("not on the same file system")
	// ErrNotEmpty: the work directory holds something strata did not put there.
	ErrNotEmpty error = invalid("not empty")
	// ErrNoWork: an upper without a work directory.
	ErrNoWork error = invalid("no work directory")
	// ErrNoUpper: a work directory without an upper.
	ErrNoUpper error = invalid("no upper directory")
	// ErrBusy: the mount point is already a mount point.
	ErrBusy error = invalid("already a mount point")
	// ErrBadOption: an overlay mount option that cannot be read or is not
	// supported.
	ErrBadOption error = invalid("bad option")
)

// Error is a refusal of one directory of a stack.
type Error struct {
	// Role is what the directory is for: "layer", "upper", "work" or
	// "mount point".
	Role string
	// Path is the directory as checked: absolute and resolved when that got
	// far enough, as given otherwise.
	Path string
	// Err says what is wrong; it wraps one of the sentinel errors, or the
	// error of the system call that failed.
	Err error
}

func (e *Error) Error() string { return fmt.Sprintf("%s %q: %v", e.Role, e.Path, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// detail is a sentinel with a more specific message.
type detail struct {
	sentinel error
	msg      string
}

func (d *detail) Error() string { return d.msg }
func (d *detail) Unwrap() error { return d.sentinel }

func because(sentinel error, format string, args ...any) error {
	return &detail{sentinel: sentinel, msg: fmt.Sprintf(format, args...)}
}

// Validate checks the stack as Resolve does, and leaves it as it is.
func (s Stack) Validate() error {
	_, err := s.Resolve()
	return err
}

// Resolve checks the stack and returns it with every path absolute and free of
// symlinks, ready to mount. Each refusal is an *Error naming the directory and
// wrapping one of the sentinel errors; it changes nothing on disk.
func (s Stack) Resolve() (Stack, error) {
	if len(s.Lowers) == 0 {
		return Stack{}, ErrNoLayers
	}
	r := Stack{Volatile: s.Volatile, LowerPassthrough: s.LowerPassthrough}
	for _, l := range s.Lowers {
		p, err := resolveDir("layer", l)
		if err != nil {
			return Stack{}, err
		}
		r.Lowers = append(r.Lowers, p)
	}
	switch {
	case s.Upper == "" && s.Work == "":
		return r, nil
	case s.Upper == "":
		return Stack{}, &Error{Role: "work", Path: s.Work, Err: because(ErrNoUpper, "no upper directory to go with it")}
	case s.Work == "":
		return Stack{}, &Error{Role: "upper", Path: s.Upper, Err: because(ErrNoWork, "needs a work directory on the same file system")}
	}
	var err error
	if r.Upper, err = resolveDir("upper", s.Upper); err != nil {
		return Stack{}, err
	}
	if r.Work, err = resolveDir("work", s.Work); err != nil {
		return Stack{}, err
	}
	if err := r.checkOverlap(); err != nil {
		return Stack{}, err
	}
	if err := sameFS(r.Upper, r.Work); err != nil {
		return Stack{}, err
	}
	if err := checkWorkEmpty(r.Work); err != nil {
		return Stack{}, err
	}
	return r, nil
}

// resolveDir makes p absolute, resolves its symlinks and checks that it is a
// directory.
func resolveDir(role, p string) (string, error) {
	if p == "" {
		return "", &Error{Role: role, Path: p, Err: because(ErrNotExist, "empty path")}
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", &Error{Role: role, Path: p, Err: err}
	}
	real, err := filepath.EvalSymlinks(abs)
	if errors.Is(err, os.ErrNotExist) {
		return "", &Error{Role: role, Path: abs, Err: ErrNotExist}
	}
	if errors.Is(err, unix.ENOTDIR) {
		// A file in the middle of the path.
		return "", &Error{Role: role, Path: abs, Err: ErrNotDir}
	}
	if err != nil {
		return "", &Error{Role: role, Path: abs, Err: err}
	}
	fi, err := os.Stat(real)
	if err != nil {
		return "", &Error{Role: role, Path: real, Err: err}
	}
	if !fi.IsDir() {
		return "", &Error{Role: role, Path: real, Err: ErrNotDir}
	}
	return real, nil
}

// within reports whether path p is dir or below it; both are absolute and clean.
func within(p, dir string) bool {
	if p == dir || dir == "/" {
		return true
	}
	return strings.HasPrefix(p, dir+"/")
}

type role struct{ name, path string }

// overlap checks that the directory a is neither inside b nor contains it; the
// error names the inner one.
func overlap(a, b role) error {
	switch {
	case a.path == b.path:
		return &Error{Role: a.name, Path: a.path, Err: because(ErrOverlap, "is also the %s", b.name)}
	case within(a.path, b.path):
		return &Error{Role: a.name, Path: a.path, Err: because(ErrOverlap, "inside %s %q", b.name, b.path)}
	case within(b.path, a.path):
		return &Error{Role: b.name, Path: b.path, Err: because(ErrOverlap, "inside %s %q", a.name, a.path)}
	}
	return nil
}

// checkOverlap refuses an upper or work directory that overlaps a layer or the
// other one. Layers may overlap each other: they are only read.
func (s Stack) checkOverlap() error {
	upper, work := role{"upper", s.Upper}, role{"work", s.Work}
	for _, l := range s.Lowers {
		layer := role{"layer", l}
		if err := overlap(upper, layer); err != nil {
			return err
		}
		if err := overlap(work, layer); err != nil {
			return err
		}
	}
	return overlap(work, upper)
}

func sameFS(upper, work string) error {
	var us, ws unix.Stat_t
	if err := unix.Stat(upper, &us); err != nil {
		return &Error{Role: "upper", Path: upper, Err: &os.PathError{Op: "stat", Path: upper, Err: err}}
	}
	if err := unix.Stat(work, &ws); err != nil {
		return &Error{Role: "work", Path: work, Err: &os.PathError{Op: "stat", Path: work, Err: err}}
	}
	if us.Dev != ws.Dev {
		return &Error{Role: "work", Path: work, Err: because(ErrCrossDevice, "not on the file system of upper %q", upper)}
	}
	return nil
}

// workEntries are what overlayfs and strata leave in a work directory.
var workEntries = map[string]bool{"work": true, "index": true}

func checkWorkEmpty(work string) error {
	ents, err := os.ReadDir(work)
	if err != nil {
		return &Error{Role: "work", Path: work, Err: err}
	}
	for _, e := range ents {
		if !workEntries[e.Name()] || !e.IsDir() {
			return &Error{Role: "work", Path: work, Err: because(ErrNotEmpty,
				"not empty: holds %q (only the directories \"work\" and \"index\" may be there)", e.Name())}
		}
	}
	return nil
}

// CheckMountpoint checks that mnt can take a mount of the resolved stack s: an
// existing directory, not yet a mount point, and not inside one of the stack's
// directories (the union would contain itself). It may be a layer or the upper
// itself: the union is then mounted over it, as with overlayfs. It returns mnt
// absolute and resolved.
func CheckMountpoint(mnt string, s Stack) (string, error) {
	p, err := resolveDir("mount point", mnt)
	if err != nil {
		return "", err
	}
	m, ok, err := mounts.Lookup(p)
	if err != nil {
		return "", &Error{Role: "mount point", Path: p, Err: err}
	}
	if ok {
		return "", &Error{Role: "mount point", Path: p, Err: because(ErrBusy, "already a mount point (%s)", m.FSType)}
	}
	dirs := []role{{"upper", s.Upper}, {"work", s.Work}}
	for _, l := range s.Lowers {
		dirs = append(dirs, role{"layer", l})
	}
	for _, d := range dirs {
		switch {
		case d.path == "":
			continue
		case d.path == p && d.name == "work":
			return "", &Error{Role: "mount point", Path: p, Err: because(ErrOverlap, "is also the work directory")}
		case d.path != p && within(p, d.path):
			return "", &Error{Role: "mount point", Path: p, Err: because(ErrOverlap, "inside %s %q", d.name, d.path)}
		}
	}
	return p, nil
}

// ParseOverlayOptions reads mount options in the kernel overlayfs spelling,
// "lowerdir=top:...:bottom,upperdir=U,workdir=W", into a stack. A backslash
// escapes the next character, as in the kernel and fuse-overlayfs: "\," is a
// comma inside an option and "\:" a colon inside a lowerdir path. "volatile" sets
// Stack.Volatile, "lower_passthrough" Stack.LowerPassthrough. Every other option is returned in extra, unescaped, for FUSE
// ("ro", "noatime", "allow_other"), except options that only kernel overlayfs implements (index=,
// metacopy=, redirect_dir=, ...) are refused with ErrBadOption rather than
// passed on to FUSE, which would refuse them with a bare EINVAL.
//
// The stack is not checked: call Resolve.
func ParseOverlayOptions(opts string) (Stack, []string, error) {
	var (
		s     Stack
		extra []string
		seen  = map[string]bool{}
	)
	for _, opt := range splitEscaped(opts, ',') {
		if opt == "" {
			continue
		}
		key, val, hasVal := strings.Cut(opt, "=")
		switch key {
		case "lowerdir", "upperdir", "workdir":
			if !hasVal || val == "" {
				return Stack{}, nil, fmt.Errorf("option %q: %w: empty path", opt, ErrBadOption)
			}
			if seen[key] {
				return Stack{}, nil, fmt.Errorf("option %q: %w: %s given twice", opt, ErrBadOption, key)
			}
			seen[key] = true
		}
		if danglingEscape(opt) {
			return Stack{}, nil, fmt.Errorf("option %q: %w: ends in a lone backslash", opt, ErrBadOption)
		}
		switch key {
		case "lowerdir":
			for _, l := range splitEscaped(val, ':') {
				if l == "" {
					return Stack{}, nil, fmt.Errorf("option %q: %w: empty layer (data-only layers \"::\" are not supported)", opt, ErrBadOption)
				}
				s.Lowers = append(s.Lowers, unescape(l))
			}
		case "upperdir":
			s.Upper = unescape(val)
		case "workdir":
			s.Work = unescape(val)
		case "volatile":
			if hasVal {
				return Stack{}, nil, fmt.Errorf("option %q: %w: volatile takes no value", opt, ErrBadOption)
			}
			s.Volatile = true
		case "lower_passthrough":
			if hasVal {
				return Stack{}, nil, fmt.Errorf("option %q: %w: lower_passthrough takes no value", opt, ErrBadOption)
			}
			s.LowerPassthrough = true
		case "lowerdir+", "datadir+", "index", "metacopy", "redirect_dir", "xino", "nfs_export",
			"userxattr", "uuid", "verity", "override_creds":
			return Stack{}, nil, fmt.Errorf("option %q: %w: kernel overlayfs only, not supported by strata", opt, ErrBadOption)
		default:
			extra = append(extra, unescape(opt))
		}
	}
	return s, extra, nil
}

// danglingEscape reports whether s ends in a backslash that escapes nothing.
func danglingEscape(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			if i == len(s) {
				return true
			}
		}
	}
	return false
}

// splitEscaped splits s at each sep that no backslash escapes and no double
// quotes enclose (as in context="a,b", which the kernel and SELinux tools
// write), keeping escapes and quotes in the parts.
func splitEscaped(s string, sep byte) []string {
	var parts []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++ // skip the escaped character, whatever it is
		case '"':
			quoted = !quoted
		case sep:
			if !quoted {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

// unescape drops each escaping backslash: `\:` is ":", `\\` is `\`.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
