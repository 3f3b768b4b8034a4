// Package fusedev is strata's edge to the kernel's FUSE device: it mounts a
// FUSE file system on a directory, reads the kernel's requests and writes the
// answers, and registers the backing files of FUSE passthrough.
//
// go-fuse does all of this inside its own fuse.Server. strata keeps go-fuse
// for what it is good at, turning request bytes into calls on a node tree
// (fuse.ProtocolServer), and owns the device so that it can own the loop that
// serves it: see unionfs/serve.go for why that loop matters to speed.
//
// Mounting follows the kernel's and libfuse's rules (fuse(4), mount.fuse3(8)):
// a privileged process calls mount(2) with the device's descriptor in the
// options ("fd=N"); anyone else asks the setuid fusermount3, which mounts and
// passes the descriptor back over a socket (the _FUSE_COMMFD protocol).
package fusedev

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Options describe a mount.
type Options struct {
	// Source is what /proc/mounts shows as the mount's source.
	Source string
	// Subtype names the file system: the mount's type is "fuse.Subtype".
	Subtype string
	// Options are mount(8)-style options: the generic ones (ro, nosuid,
	// nodev, noexec, noatime, ...) become mount flags, the rest
	// (allow_other, default_permissions, ...) go to FUSE as they are.
	// nosuid and nodev hold unless suid or dev is given, as with fusermount3.
	Options []string
	// MaxRead is the largest READ the kernel may send (max_read).
	MaxRead int
}

// Dev is an open, mounted FUSE device: the kernel's end of one mount.
type Dev struct {
	fd int
}

// ErrUnmounted is returned by Read once the mount is gone (ENODEV).
var ErrUnmounted = errors.New("fuse: unmounted")

// flagOptions are the mount options that are mount(2) flags, not FUSE's.
var flagOptions = map[string]struct {
	set   bool
	flags uintptr
}{
	"ro":         {true, unix.MS_RDONLY},
	"rw":         {false, unix.MS_RDONLY},
	"nosuid":     {true, unix.MS_NOSUID},
	"suid":       {false, unix.MS_NOSUID},
	"nodev":      {true, unix.MS_NODEV},
	"dev":        {false, unix.MS_NODEV},
	"noexec":     {true, unix.MS_NOEXEC},
	"exec":       {false, unix.MS_NOEXEC},
	"noatime":    {true, unix.MS_NOATIME},
	"atime":      {false, unix.MS_NOATIME},
	"nodiratime": {true, unix.MS_NODIRATIME},
	"diratime":   {false, unix.MS_NODIRATIME},
	"relatime":   {true, unix.MS_RELATIME},
	"norelatime": {false, unix.MS_RELATIME},
	"sync":       {true, unix.MS_SYNCHRONOUS},
	"async":      {false, unix.MS_SYNCHRONOUS},
	"dirsync":    {true, unix.MS_DIRSYNC},
}

// Mount mounts a FUSE file system on mountpoint and returns its device. The
// kernel's first request, INIT, is waiting on it: nothing on the mount answers
// until it is read and answered.
func Mount(mountpoint string, o Options) (*Dev, error) {
	fd, err := mountDirect(mountpoint, o)
	if errors.Is(err, unix.EPERM) {
		// Not privileged here: fusermount3 is setuid root and checks that
		// the caller owns the mount point.
		fd, err = mountFusermount(mountpoint, o)
	}
	if err != nil {
		return nil, err
	}
	return &Dev{fd: fd}, nil
}

func mountDirect(mountpoint string, o Options) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return -1, &os.PathError{Op: "stat", Path: mountpoint, Err: err}
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: "/dev/fuse", Err: err}
	}
	flags, data := mountArgs(o, fd, st.Mode&unix.S_IFMT, os.Geteuid(), os.Getegid())
	typ := "fuse"
	if o.Subtype != "" {
		typ += "." + o.Subtype
	}
	err = unix.Mount(o.Source, mountpoint, typ, flags, data)
	if err != nil {
		_ = unix.Close(fd) // the mount failed; nothing reads this device
		return -1, &MountError{Target: mountpoint, Type: typ, Flags: flags, Data: data, Err: err}
	}
	return fd, nil
}

// mountArgs turns o into mount(2)'s flags and data for the device fd, mounted
// on a directory of type rootmode by uid and gid.
func mountArgs(o Options, fd int, rootmode uint32, uid, gid int) (uintptr, string) {
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	data := []string{
		fmt.Sprintf("fd=%d", fd),
		fmt.Sprintf("rootmode=%o", rootmode),
		fmt.Sprintf("user_id=%d", uid),
		fmt.Sprintf("group_id=%d", gid),
	}
	if o.MaxRead > 0 {
		data = append(data, fmt.Sprintf("max_read=%d", o.MaxRead))
	}
	for _, opt := range o.Options {
		if f, ok := flagOptions[opt]; ok {
			if f.set {
				flags |= f.flags
			} else {
				flags &^= f.flags
			}
			continue
		}
		data = append(data, opt)
	}
	return flags, strings.Join(data, ",")
}

// MountError is a failed mount(2), with what was asked of it.
type MountError struct {
	Target, Type string
	Flags        uintptr
	Data         string
	Err          error
}

func (e *MountError) Error() string {
	return fmt.Sprintf("mount %s (type %s, flags %#x, %s): %v", e.Target, e.Type, e.Flags, e.Data, e.Err)
}

func (e *MountError) Unwrap() error { return e.Err }

// mountFusermount asks fusermount3 to mount: it opens /dev/fuse, mounts it,
// and sends the descriptor back over the socket named by _FUSE_COMMFD.
func mountFusermount(mountpoint string, o Options) (int, error) {
	bin, err := fusermount()
	if err != nil {
		return -1, err
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, os.NewSyscallError("socketpair", err)
	}
	local := os.NewFile(uintptr(pair[0]), "fusermount-local")
	remote := os.NewFile(uintptr(pair[1]), "fusermount-remote")
	defer local.Close()
	defer remote.Close()

	opts := []string{"fsname=" + o.Source}
	if o.Subtype != "" {
		opts = append(opts, "subtype="+o.Subtype)
	}
	if o.MaxRead > 0 {
		opts = append(opts, fmt.Sprintf("max_read=%d", o.MaxRead))
	}
	opts = append(opts, o.Options...)
	cmd := exec.Command(bin, "-o", strings.Join(opts, ","), "--", mountpoint)
	cmd.Env = []string{"_FUSE_COMMFD=3"}
	cmd.ExtraFiles = []*os.File{remote}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return -1, fmt.Errorf("%s: %w: %s", bin, err, strings.TrimSpace(string(out)))
	}
	return receiveFd(local)
}

// receiveFd reads the descriptor fusermount3 sends (SCM_RIGHTS).
func receiveFd(sock *os.File) (int, error) {
	var data [4]byte
	oob := make([]byte, unix.CmsgSpace(4))
	_, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), data[:], oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return -1, os.NewSyscallError("recvmsg from fusermount3", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return -1, fmt.Errorf("fusermount3 sent no descriptor (%d messages): %v", len(msgs), err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return -1, fmt.Errorf("fusermount3 sent no descriptor: %v", err)
	}
	return fds[0], nil
}

func fusermount() (string, error) {
	for _, name := range []string{"fusermount3", "fusermount"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("mount needs privilege or fusermount3, and neither is here")
}

// Unmount unmounts mountpoint with umount2(2) and flags (0, or MNT_DETACH for
// a lazy unmount), or, when not privileged, with fusermount3 -u (-z). It fails
// with EBUSY while the mount is in use and flags is 0.
func Unmount(mountpoint string, flags int) error {
	err := unix.Unmount(mountpoint, flags)
	for errors.Is(err, unix.EINTR) {
		err = unix.Unmount(mountpoint, flags)
	}
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.EPERM) {
		return &os.PathError{Op: "umount", Path: mountpoint, Err: err}
	}
	bin, ferr := fusermount()
	if ferr != nil {
		return &os.PathError{Op: "umount", Path: mountpoint, Err: err}
	}
	args := []string{"-u"}
	if flags&unix.MNT_DETACH != 0 {
		args = append(args, "-z")
	}
	out, err := exec.Command(bin, append(args, "--", mountpoint)...).CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "busy") {
			// fusermount3 says so in words only; callers test for EBUSY.
			return &os.PathError{Op: "umount", Path: mountpoint, Err: unix.EBUSY}
		}
		return fmt.Errorf("%s -u %s: %w: %s", bin, mountpoint, err, msg)
	}
	return nil
}

// Read reads one request into buf, which must hold the largest (MaxWrite and
// a page of headers). A request interrupted before it was read (ENOENT) is
// skipped; ErrUnmounted means the mount is gone.
func (d *Dev) Read(buf []byte) (int, error) {
	for {
		n, err := unix.Read(d.fd, buf)
		switch {
		case err == nil:
			return n, nil
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.ENOENT), errors.Is(err, unix.EAGAIN):
			continue
		case errors.Is(err, unix.ENODEV):
			return 0, ErrUnmounted
		default:
			return 0, os.NewSyscallError("read /dev/fuse", err)
		}
	}
}

// Write writes one answer, or one notification, made of one or more pieces.
// ENOENT means the kernel no longer waits for this answer (the request was
// interrupted): not an error anyone can act on.
func (d *Dev) Write(pieces ...[]byte) error {
	for {
		_, err := unix.Writev(d.fd, pieces)
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		default:
			return os.NewSyscallError("write /dev/fuse", err)
		}
	}
}

// Splice writes one answer of n bytes, header and data, from the pipe r, by
// reference to the pipe's pages rather than through a buffer. Like Write, it
// takes ENOENT (an interrupted request) for done.
func (d *Dev) Splice(r int, n int) error {
	for {
		m, err := unix.Splice(r, nil, d.fd, nil, n, 0)
		switch {
		case err == nil && int(m) == n, errors.Is(err, unix.ENOENT):
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case err == nil:
			return fmt.Errorf("splice to /dev/fuse: %d of %d bytes", m, n)
		default:
			return os.NewSyscallError("splice to /dev/fuse", err)
		}
	}
}

// backingMap is struct fuse_backing_map (<linux/fuse.h>).
type backingMap struct {
	fd      int32
	flags   uint32
	padding uint64
}

// FUSE_DEV_IOC_BACKING_OPEN and _CLOSE: _IOW(229, 1, struct fuse_backing_map)
// and _IOW(229, 2, uint32_t).
const (
	iocBackingOpen  = 0x4010e501
	iocBackingClose = 0x4004e502
)

// OpenBacking registers fd as a backing file for FUSE passthrough (Linux 6.9,
// CAP_SYS_ADMIN) and returns its id, to hand to the kernel in an OPEN answer.
func (d *Dev) OpenBacking(fd int) (int32, syscall.Errno) {
	m := backingMap{fd: int32(fd)}
	id, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(d.fd), iocBackingOpen, uintptr(unsafe.Pointer(&m)))
	return int32(id), errno
}

// CloseBacking drops a backing file id; files opened with it keep it.
func (d *Dev) CloseBacking(id int32) syscall.Errno {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(d.fd), iocBackingClose, uintptr(unsafe.Pointer(&id)))
	return errno
}

// Close closes the device. A mount whose device is closed answers ENOTCONN
// to everything until it is unmounted.
func (d *Dev) Close() error {
	return unix.Close(d.fd)
}
