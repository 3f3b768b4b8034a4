package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ErrInput marks input refused before any work: an unknown system or
// workload, a scratch directory without room.
var ErrInput = errors.New("refused input")

// inputError is an error that is an ErrInput, its text its own.
type inputError struct{ err error }

func (e *inputError) Error() string        { return e.err.Error() }
func (e *inputError) Unwrap() error        { return e.err }
func (e *inputError) Is(target error) bool { return target == ErrInput }

func inputErrorf(format string, args ...any) error {
	return &inputError{err: fmt.Errorf(format, args...)}
}

// Stack is what a union system mounts: the lower layers, top first, as
// overlayfs lists them, and an upper and a work directory of its own.
type Stack struct {
	Lowers      []string
	Upper, Work string
}

// A system is one of the file systems measured. Mount mounts s on mnt and
// returns once the mount answers; the disk system mounts nothing and works
// in Stack.Upper, which holds the merged tree.
type system struct {
	name string
	// find says whether the system can be used here: its version, or the
	// reason why not.
	find  func(o *Options) (version string, err error)
	mount func(ctx context.Context, o *Options, s Stack, mnt string) error
	// union is false for disk.
	union bool
}

// Names of the systems, in the order they are listed.
const (
	Disk          = "disk"
	Overlay       = "overlay"
	Strata        = "strata"
	FuseOverlayfs = "fuse-overlayfs"
	UnionfsFuse   = "unionfs-fuse"
)

var systems = []*system{
	{
		name: Disk,
		find: func(*Options) (string, error) { return "", nil },
	},
	{
		name:  Overlay,
		union: true,
		find: func(*Options) (string, error) {
			fss, err := os.ReadFile("/proc/filesystems")
			if err != nil {
				return "", err
			}
			if !bytes.Contains(fss, []byte("\toverlay\n")) {
				return "", errors.New("the kernel has no overlay file system (modprobe overlay)")
			}
			return "kernel " + kernelRelease(), nil
		},
		mount: func(_ context.Context, _ *Options, s Stack, mnt string) error {
			opts := "lowerdir=" + strings.Join(s.Lowers, ":") + ",upperdir=" + s.Upper + ",workdir=" + s.Work
			if err := unix.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
				return &os.PathError{Op: "mount overlay", Path: mnt, Err: err}
			}
			return nil
		},
	},
	{
		name:  Strata,
		union: true,
		find: func(o *Options) (string, error) {
			if o.StrataBin == "" {
				return "", errors.New("no strata executable given")
			}
			out, err := exec.Command(o.StrataBin, "--version").Output()
			if err != nil {
				return "", fmt.Errorf("%s --version: %w", o.StrataBin, err)
			}
			return strings.TrimPrefix(strings.TrimSpace(string(out)), "strata "), nil
		},
		// strata mount --daemon returns once the union answers requests;
		// the daemon exits when the union is unmounted.
		mount: func(ctx context.Context, o *Options, s Stack, mnt string) error {
			args := []string{"mount", "--daemon"}
			for i := len(s.Lowers) - 1; i >= 0; i-- {
				args = append(args, "--layer", s.Lowers[i]) // bottom first
			}
			args = append(args, "--upper", s.Upper, "--work", s.Work, mnt)
			return command(ctx, nil, "", nil, o.StrataBin, args...)
		},
	},
	{
		name:  FuseOverlayfs,
		union: true,
		find:  func(*Options) (string, error) { return toolVersion("fuse-overlayfs", "fuse-overlayfs") },
		// fuse-overlayfs forks into the background once mounted.
		mount: func(ctx context.Context, _ *Options, s Stack, mnt string) error {
			opts := "lowerdir=" + strings.Join(s.Lowers, ":") + ",upperdir=" + s.Upper + ",workdir=" + s.Work
			return command(ctx, nil, "", nil, "fuse-overlayfs", "-o", opts, mnt)
		},
	},
	{
		name:  UnionfsFuse,
		union: true,
		find:  func(*Options) (string, error) { return toolVersion("unionfs", "unionfs-fuse") },
		// unionfs-fuse: the writable branch first; cow copies lower files up
		// on write, as the others do.
		mount: func(ctx context.Context, _ *Options, s Stack, mnt string) error {
			branches := s.Upper + "=RW"
			for _, l := range s.Lowers {
				branches += ":" + l + "=RO"
			}
			return command(ctx, nil, "", nil, "unionfs", "-o", "cow,hide_meta_files", branches, mnt)
		},
	},
}

// SystemNames are the names of every system, in the order they are listed.
func SystemNames() []string {
	var ns []string
	for _, s := range systems {
		ns = append(ns, s.name)
	}
	return ns
}

// ParseSystems returns the systems named in a comma-separated list, in the
// order of SystemNames; "" or "all" is every one. An unknown name is an
// ErrInput.
func ParseSystems(list string) ([]string, error) {
	if list == "" || list == "all" {
		return SystemNames(), nil
	}
	want := map[string]bool{}
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if systemByName(n) == nil {
			return nil, inputErrorf("unknown system %q (known: %s)", n, strings.Join(SystemNames(), ", "))
		}
		want[n] = true
	}
	var ns []string
	for _, s := range systems {
		if want[s.name] {
			ns = append(ns, s.name)
		}
	}
	return ns, nil
}

func systemByName(n string) *system {
	for _, s := range systems {
		if s.name == n {
			return s
		}
	}
	return nil
}

// toolVersion runs `name --version` and returns what follows "version" on
// the line that starts with prefix ("fuse-overlayfs: version 1.10"; the FUSE
// library has its own lines), or the error that says the tool is not here.
func toolVersion(name, prefix string) (string, error) {
	if _, err := lookPath(name); err != nil {
		return "", fmt.Errorf("%s is not installed", name)
	}
	out, _ := exec.Command(name, "--version").CombinedOutput() // some print their version and exit non-zero
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, prefix) {
			continue
		}
		if i := strings.Index(l, "version"); i >= 0 {
			return strings.Trim(l[i+len("version"):], ": "), nil
		}
	}
	return "", nil
}

var lookPath = exec.LookPath

// unmount takes the mount on mnt off, retrying a busy one for a while (a
// child process killed on Ctrl-C may still hold it), then detaching it lazily
// as the last resort. It says whether it had to detach.
func unmount(mnt string) (detached bool, err error) {
	deadline := time.Now().Add(3 * time.Second)
	for {
		err = unix.Unmount(mnt, 0)
		if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return false, nil // unmounted, or nothing was mounted there
		}
		if !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.EINTR) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if derr := unix.Unmount(mnt, unix.MNT_DETACH); derr != nil {
		return false, errors.Join(&os.PathError{Op: "unmount", Path: mnt, Err: err}, &os.PathError{Op: "detach", Path: mnt, Err: derr})
	}
	return true, nil
}

// kernelRelease is uname -r.
func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}
