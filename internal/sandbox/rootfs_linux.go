package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mountError is a failed mount(2), with everything it was given (runc
// libcontainer/mount_linux.go).
type mountError struct {
	op, source, target, fstype string
	flags                      uintptr
	data                       string
	err                        error
}

func (e *mountError) Error() string {
	s := e.op + " " + e.target
	if e.source != "" {
		s += " from " + e.source
	}
	if e.fstype != "" {
		s += " (" + e.fstype + ")"
	}
	if e.flags != 0 {
		s += fmt.Sprintf(" flags %#x", e.flags)
	}
	if e.data != "" {
		s += " data " + e.data
	}
	return s + ": " + e.err.Error()
}

func (e *mountError) Unwrap() error { return e.err }

// mount is mount(2), retried on EINTR.
func mount(source, target, fstype string, flags uintptr, data string) error {
	for {
		err := unix.Mount(source, target, fstype, flags, data)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &mountError{op: "mount", source: source, target: target, fstype: fstype, flags: flags, data: data, err: err}
		}
		return nil
	}
}

func unmount(target string, flags int) error {
	for {
		err := unix.Unmount(target, flags)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &mountError{op: "unmount", target: target, flags: uintptr(flags), err: err}
		}
		return nil
	}
}

// A kernel file system the container gets, mounted at Target inside the root.
type kernelMount struct {
	target, fstype string
	flags          uintptr
	data           string
}

// kernelMounts are mounted in this order: /dev before what lives in it.
var kernelMounts = []kernelMount{
	{"/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"/dev", "tmpfs", unix.MS_NOSUID | unix.MS_STRICTATIME, "mode=755,size=65536k"},
	{"/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"},
	{"/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=1777,size=65536k"},
	{"/dev/mqueue", "mqueue", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_RDONLY, ""},
}

// devices are the character devices of /dev, as runc's default set has them.
var devices = []struct {
	name         string
	major, minor uint32
}{
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
}

// devLinks are the symbolic links of /dev.
var devLinks = [][2]string{
	{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"},
	{"/proc/self/fd/2", "stderr"}, {"pts/ptmx", "ptmx"},
}

// maskedPaths are hidden behind /dev/null or an empty read-only tmpfs, and
// readonlyPaths are made read-only: runc's defaults (its spec generator).
var (
	maskedPaths = []string{
		"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
		"/sys/firmware", "/sys/devices/virtual/powercap",
	}
	readonlyPaths = []string{
		"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
	}
)

// setupRoot makes root, a path of the host, this mount namespace's root, with
// the kernel file systems mounted inside it and the host's tree detached.
func setupRoot(root string) error {
	// Nothing we mount or unmount from here on may propagate to the host's
	// namespace, and pivot_root refuses a new root whose parent mount is
	// shared.
	if err := mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return err
	}
	// pivot_root needs the new root to be a mount point of its own.
	if err := mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	for _, m := range kernelMounts {
		target := filepath.Join(root, m.target)
		if err := mountPoint(target); err != nil {
			return err
		}
		if err := mount(m.fstype, target, m.fstype, m.flags, m.data); err != nil {
			return err
		}
		if m.target == "/dev" {
			if err := populateDev(target); err != nil {
				return err
			}
		}
	}
	if err := pivotRoot(root); err != nil {
		return err
	}
	for _, p := range maskedPaths {
		if err := maskPath(p); err != nil {
			return err
		}
	}
	for _, p := range readonlyPaths {
		if err := readonlyPath(p); err != nil {
			return err
		}
	}
	return nil
}

// mountPoint checks that target is a directory, or makes it. The init layer
// (package container) holds /proc, /sys and /dev above the image's layers,
// and the rest are in our own /dev, so an image cannot turn one into a
// symbolic link that would carry a mount out of the root.
func mountPoint(target string) error {
	fi, err := os.Lstat(target)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(target, 0o755); err != nil {
			return fmt.Errorf("mount point: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("mount point: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("mount point %s: not a directory", target)
	}
	return nil
}

// populateDev makes the devices, links and mount points of a fresh /dev.
func populateDev(dev string) error {
	old := unix.Umask(0) // the modes below are the ones meant
	defer unix.Umask(old)
	for _, d := range devices {
		p := filepath.Join(dev, d.name)
		if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor))); err != nil {
			return &os.PathError{Op: "mknod", Path: p, Err: err}
		}
	}
	for _, l := range devLinks {
		if err := os.Symlink(l[0], filepath.Join(dev, l[1])); err != nil {
			return fmt.Errorf("/dev: %w", err)
		}
	}
	for _, d := range []string{"pts", "shm", "mqueue"} {
		if err := os.Mkdir(filepath.Join(dev, d), 0o755); err != nil {
			return fmt.Errorf("/dev: %w", err)
		}
	}
	return nil
}

// pivotRoot makes rootfs the root of this mount namespace and detaches the old
// one, as runc's rootfs_linux.go pivotRoot does.
func pivotRoot(rootfs string) error {
	// pivot_root(".", ".") stacks the old root on top of the new one, at
	// the same place, so no directory for it has to exist in the image:
	// "/" is then the new root, and "." (our cwd) the old one.
	oldroot, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: "/", Err: err}
	}
	defer func() { _ = unix.Close(oldroot) }() // read-only
	newroot, err := unix.Open(rootfs, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: rootfs, Err: err}
	}
	defer func() { _ = unix.Close(newroot) }() // read-only
	// Stand in the new root, so that "." names it.
	if err := unix.Fchdir(newroot); err != nil {
		return &os.PathError{Op: "fchdir", Path: rootfs, Err: err}
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return &os.PathError{Op: "pivot_root", Path: rootfs, Err: err}
	}
	// The kernel leaves the cwd on the old root today, but does not promise
	// it: go there explicitly.
	if err := unix.Fchdir(oldroot); err != nil {
		return &os.PathError{Op: "fchdir", Path: "old root", Err: err}
	}
	// Make the old root a slave, recursively, so that the unmount below
	// cannot propagate to the host even where a mount was shared with it
	// after our MS_PRIVATE (runc prefers MS_SLAVE to MS_PRIVATE here:
	// private races with host processes that expect their mounts gone).
	if err := mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return err
	}
	// Detach the old root, with everything mounted in it: MNT_DETACH lets
	// us unmount the directory we stand in.
	if err := unmount(".", unix.MNT_DETACH); err != nil {
		return err
	}
	// Back to the new root, now "/".
	if err := unix.Chdir("/"); err != nil {
		return &os.PathError{Op: "chdir", Path: "/", Err: err}
	}
	return nil
}

// maskPath hides p: a directory under an empty read-only tmpfs, a file under
// /dev/null. A path the kernel does not have is skipped.
func maskPath(p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mask: %w", err)
	}
	if fi.IsDir() {
		return mount("tmpfs", p, "tmpfs", unix.MS_RDONLY, "size=0")
	}
	return mount("/dev/null", p, "", unix.MS_BIND, "")
}

// readonlyPath bind-mounts p onto itself and makes that read-only.
func readonlyPath(p string) error {
	if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := mount(p, p, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	return mount(p, p, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
}

// defaultCaps are the capabilities a container keeps: Docker's default set
// without CAP_MKNOD. Docker lets a container make any device node and keeps
// it from opening one outside its list with the device cgroup; strata has no
// device cgroup, and /dev is a tmpfs that honours device nodes, so
// `mknod /dev/sda b 8 0` would read the host's disk. (Device nodes of the
// image are harmless: the union is mounted nodev.)
var defaultCaps = map[int]bool{
	unix.CAP_CHOWN: true, unix.CAP_DAC_OVERRIDE: true, unix.CAP_FOWNER: true, unix.CAP_FSETID: true,
	unix.CAP_KILL: true, unix.CAP_SETGID: true, unix.CAP_SETUID: true, unix.CAP_SETPCAP: true,
	unix.CAP_NET_BIND_SERVICE: true, unix.CAP_NET_RAW: true, unix.CAP_SYS_CHROOT: true,
	unix.CAP_AUDIT_WRITE: true, unix.CAP_SETFCAP: true,
}

// dropCapabilities removes every capability outside defaultCaps from the
// bounding set. Root's capabilities after execve are the bounding set, so the
// command never holds the others (CAP_SYS_ADMIN: no remount of what is
// masked, no unmount of /proc).
func dropCapabilities() error {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return fmt.Errorf("capabilities: %w", err)
	}
	last, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("capabilities: cap_last_cap: %w", err)
	}
	for c := 0; c <= last; c++ {
		if defaultCaps[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return &os.SyscallError{Syscall: fmt.Sprintf("prctl PR_CAPBSET_DROP %d", c), Err: err}
		}
	}
	return nil
}
