package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

func init() {
	if IsInit() {
		// Namespaces that are per thread (unshare of the cgroup one) must
		// be those of the thread that calls execve: keep main on one.
		runtime.LockOSThread()
	}
}

// IsInit reports whether this process is an init stage that Start started.
func IsInit() bool { return len(os.Args) > 0 && (os.Args[0] == InitArg || os.Args[0] == ExecArg) }

// Init runs the init stage and never returns: it becomes the container's
// command, or exits after writing its error to the parent.
func Init() {
	// The command inherits no descriptor but 0, 1 and 2. Go's exec passes
	// on every descriptor its caller left open without close-on-exec (a
	// shell's `exec 5</`, say), and a directory of the host held open in
	// the container is a way out of it: fchdir(2), or /proc/self/fd/N/..
	// (runc's CVE-2024-21626). The error pipe closes too: its execve
	// closing the pipe is how the parent learns that the command runs.
	if err := closeExecFrom(3); err != nil {
		fail(os.NewFile(errorFD, "error"), err)
	}
	errPipe := os.NewFile(errorFD, "error")
	spec, err := readSpec()
	if err == nil && os.Args[0] == InitArg {
		err = setup(spec) // an exec joins namespaces set up already
	}
	if err == nil {
		err = run(spec, errPipe)
	}
	// Only failures get here.
	fail(errPipe, err)
}

// fail writes err to the parent and exits.
func fail(errPipe *os.File, err error) {
	var serr *StartError
	if !errors.As(err, &serr) {
		serr = &StartError{Code: 1, Msg: err.Error()}
	}
	b, _ := json.Marshal(serr) // a struct of a string and an int
	_, _ = errPipe.Write(b)    // the parent reads it; nobody else would
	os.Exit(serr.Code)
}

// closeExecFrom marks every descriptor from first on close-on-exec, as runc's
// utils.CloseExecFrom does: close_range(2) where the kernel has it (5.11),
// else one by one from /proc/self/fd.
func closeExecFrom(first int) error {
	err := unix.CloseRange(uint(first), math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) {
		return &os.SyscallError{Syscall: "close_range", Err: err}
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("init: close descriptors: %w", err)
	}
	for _, e := range ents {
		// The descriptor ReadDir read with is closed already: that
		// one fails, harmlessly.
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= first {
			unix.CloseOnExec(fd)
		}
	}
	return nil
}

func readSpec() (*Spec, error) {
	f := os.NewFile(specFD, "spec")
	b, err := io.ReadAll(f)
	_ = f.Close() // read to its end
	if err != nil {
		return nil, fmt.Errorf("init: read spec: %w", err)
	}
	if len(b) == 0 {
		return nil, errors.New("init: no spec: the parent went away")
	}
	var s Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("init: read spec: %w", err)
	}
	return &s, s.validate()
}

// setup turns this process's namespaces into the container's: everything but
// the command.
func setup(s *Spec) error {
	// The parent put us in our cgroup before it sent the spec.
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return &os.SyscallError{Syscall: "unshare cgroup namespace", Err: err}
	}
	if err := setupRoot(s.Root); err != nil {
		return err
	}
	if s.Hostname != "" {
		if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
			return &os.SyscallError{Syscall: "sethostname", Err: err}
		}
	}
	if !s.NetHost {
		if err := loopbackUp(); err != nil {
			return err
		}
	}
	return nil
}

// run takes the user and directory of the command, finds it, and execs it
// (or, with s.Init, starts it and stays as its init).
func run(s *Spec, errPipe *os.File) error {
	env := s.Env
	path, err := lookPath(s.Args[0], getenv(env, "PATH"), s.Image)
	if err != nil {
		return err
	}
	cred, home, err := lookupUser(s.User)
	if err != nil {
		return startErrorf(1, "user %q: %v", s.User, err)
	}
	if getenv(env, "HOME") == "" {
		env = append(env, "HOME="+home)
	}
	cwd := s.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if err := os.MkdirAll(cwd, 0o755); err != nil {
		return startErrorf(1, "working directory: %v", err)
	}
	if err := dropCapabilities(); err != nil {
		return err
	}
	if s.Init {
		return tinyInit(s, path, env, cred, cwd, errPipe)
	}
	if s.Tty {
		if err := takeTerminal(); err != nil {
			return err
		}
	}
	if err := cred.apply(); err != nil {
		return err
	}
	if err := os.Chdir(cwd); err != nil {
		return startErrorf(1, "working directory: %v", err)
	}
	err = unix.Exec(path, s.Args, env)
	return execError(s.Args[0], path, err)
}

// execError explains a failed execve of name (found at path) with the exit
// code a shell would give.
func execError(name, path string, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT):
		// The file is there, so its interpreter is not (#!/bin/bash, or
		// the dynamic loader of an ELF file).
		return startErrorf(ExitNotFound, "exec: %q: %s: its interpreter or loader is missing", name, path)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.ENOEXEC), errors.Is(err, unix.EISDIR):
		return startErrorf(ExitCannotRun, "exec: %q: %s: %v", name, path, err)
	}
	return startErrorf(ExitCannotRun, "exec: %q: %v", name, err)
}

func getenv(env []string, key string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if v, ok := strings.CutPrefix(env[i], key+"="); ok {
			return v
		}
	}
	return ""
}

// defaultPath is the PATH of a command whose image sets none (Docker's).
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// lookPath finds name as a shell would, inside the new root: as a path when it
// holds a "/", else in each directory of pathEnv.
func lookPath(name, pathEnv, image string) (string, error) {
	notFound := func() error {
		if image == "" {
			return startErrorf(ExitNotFound, "exec: %q: not found", name)
		}
		return startErrorf(ExitNotFound, "exec: %q: not found in image %s", name, image)
	}
	if strings.Contains(name, "/") {
		fi, err := os.Stat(name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return "", notFound()
		case err != nil:
			return "", startErrorf(ExitCannotRun, "exec: %q: %v", name, err)
		case fi.IsDir() || fi.Mode()&0o111 == 0:
			return "", startErrorf(ExitCannotRun, "exec: %q: permission denied", name)
		}
		return name, nil
	}
	if pathEnv == "" {
		pathEnv = defaultPath
	}
	for _, dir := range filepath.SplitList(pathEnv) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", notFound()
}

// takeTerminal makes stdin, a terminal, the controlling terminal of a new
// session led by this process.
func takeTerminal() error {
	if _, err := unix.Setsid(); err != nil {
		return &os.SyscallError{Syscall: "setsid", Err: err}
	}
	if err := unix.IoctlSetInt(0, unix.TIOCSCTTY, 0); err != nil {
		return &os.SyscallError{Syscall: "ioctl TIOCSCTTY", Err: err}
	}
	return nil
}

// loopbackUp brings up "lo", the only interface of a new network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return &os.SyscallError{Syscall: "socket", Err: err}
	}
	defer func() { _ = unix.Close(fd) }() // a socket for two ioctls
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return &os.SyscallError{Syscall: "ioctl SIOCGIFFLAGS lo", Err: err}
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return &os.SyscallError{Syscall: "ioctl SIOCSIFFLAGS lo", Err: err}
	}
	return nil
}
