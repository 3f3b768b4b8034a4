package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/nsenter"
)

// InitArg is argv[0] of the init stage of Start, ExecArg of Exec's. A
// program that calls Start or Exec must call Init first thing when os.Args[0]
// is one of them (IsInit).
const (
	InitArg = "strata-init"
	ExecArg = "strata-exec"
)

// The init stage's descriptors: the first of cmd.ExtraFiles. nsenter's
// constructor writes its errors to errorFD too.
const (
	specFD  = 3
	errorFD = 4
	syncFD  = 5
)

// StartOptions are the parent's side of Start.
type StartOptions struct {
	// Stdin, Stdout and Stderr become the command's; nil is /dev/null.
	Stdin, Stdout, Stderr *os.File
	// CgroupFD, when UseCgroupFD is set, is a cgroup v2 directory that the
	// child is cloned into (CLONE_INTO_CGROUP).
	CgroupFD    int
	UseCgroupFD bool
	// Join, when not nil, is called with the child's pid before the child
	// goes on: it puts it into its cgroup (v1 hierarchies).
	Join func(pid int) error
}

// Process is a started container: its first process.
type Process struct {
	cmd *exec.Cmd
	// Pid is its pid on the host.
	Pid int
}

// Start clones this program into new namespaces, runs the init stage there
// and returns once the command of spec runs (execve succeeded), or with the
// error that kept it from running: a *StartError when the init stage failed
// (the child has then exited and been reaped).
func Start(spec *Spec, opts StartOptions) (*Process, error) {
	flags := uintptr(unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC)
	if !spec.NetHost {
		flags |= unix.CLONE_NEWNET
	}
	cmd := &exec.Cmd{
		Path: "/proc/self/exe", // the host's binary, never one on the mount
		Args: []string{InitArg},
		Env:  []string{}, // the spec carries the command's environment
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: flags,
			// The container cannot outlive its supervisor: without it
			// the union it runs on is gone.
			Pdeathsig:   syscall.SIGKILL,
			UseCgroupFD: opts.UseCgroupFD,
			CgroupFD:    opts.CgroupFD,
		},
	}
	return start(cmd, spec, opts, nil)
}

// Exec runs spec's command in the namespaces of the running process pid (the
// first process of a container) with package nsenter's constructor, which
// this binary must link. The process Exec returns is the constructor's
// parent, outside the pid namespace: its exit status is the command's, and it
// forwards the signals it gets to the command. opts.Join puts it in the
// container's cgroup before it joins anything.
func Exec(spec *Spec, pid int, opts StartOptions) (*Process, error) {
	if !nsenter.Available {
		return nil, errors.New("exec: this strata was built without cgo, which joining a mount namespace needs")
	}
	syncR, syncW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("sandbox: sync pipe: %w", err)
	}
	defer func() { _ = syncW.Close() }() // written once, or failing
	cmd := &exec.Cmd{
		Path: "/proc/self/exe",
		Args: []string{ExecArg},
		Env: []string{
			fmt.Sprintf("%s=%d", nsenter.EnvPid, pid),
			fmt.Sprintf("%s=%d", nsenter.EnvSync, syncFD),
		},
	}
	return start(cmd, spec, opts, func() error {
		if _, err := syncW.Write([]byte{0}); err != nil {
			return fmt.Errorf("sandbox: go ahead: %w", err)
		}
		return nil
	}, syncR)
}

// start starts cmd, the init stage, and speaks its side of the pipes. goAhead,
// if not nil, is called once the child is in its cgroup (Exec's sync byte),
// and extra are more descriptors for the child, from 5 on.
func start(cmd *exec.Cmd, spec *Spec, opts StartOptions, goAhead func() error, extra ...*os.File) (_ *Process, err error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(spec)
	if err != nil {
		return nil, fmt.Errorf("sandbox: encode spec: %w", err)
	}
	specR, specW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("sandbox: spec pipe: %w", err)
	}
	defer func() { _ = specW.Close() }() // closed early on success; here on failure
	errR, errW, err := os.Pipe()
	if err != nil {
		_ = specR.Close() // failing already
		return nil, fmt.Errorf("sandbox: error pipe: %w", err)
	}
	defer func() { _ = errR.Close() }() // read to its end, or failing

	cmd.Stdin, cmd.Stdout, cmd.Stderr = opts.Stdin, opts.Stdout, opts.Stderr
	cmd.ExtraFiles = append([]*os.File{specR, errW}, extra...)
	err = cmd.Start()
	for _, f := range append([]*os.File{specR, errW}, extra...) {
		_ = f.Close() // the child's copies are the ones that count now
	}
	if err != nil {
		return nil, fmt.Errorf("sandbox: start init: %w", err)
	}
	p := &Process{cmd: cmd, Pid: cmd.Process.Pid}
	defer func() {
		if err != nil {
			_ = cmd.Process.Kill() // it may be waiting on a pipe
			_ = cmd.Wait()         // reap; err says what went wrong
		}
	}()
	if opts.Join != nil {
		if err := opts.Join(p.Pid); err != nil {
			return nil, err
		}
	}
	if goAhead != nil {
		if err := goAhead(); err != nil {
			return nil, err
		}
	}
	if _, err := specW.Write(payload); err != nil {
		return nil, fmt.Errorf("sandbox: send spec: %w", err)
	}
	if err := specW.Close(); err != nil {
		return nil, fmt.Errorf("sandbox: send spec: %w", err)
	}
	msg, err := io.ReadAll(io.LimitReader(errR, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("sandbox: read init status: %w", err)
	}
	if len(msg) == 0 {
		return p, nil // the command runs: execve closed the pipe
	}
	serr := &StartError{}
	if jerr := json.Unmarshal(msg, serr); jerr != nil || serr.Msg == "" {
		serr = &StartError{Code: 1, Msg: fmt.Sprintf("sandbox: init: %q", msg)}
	}
	return nil, serr
}

// Signal sends sig to the container's first process.
func (p *Process) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Wait waits for the container's first process to exit and returns its
// status. Once it returns the pid namespace is empty: the kernel kills every
// other process in it when its PID 1 dies.
func (p *Process) Wait() (syscall.WaitStatus, error) {
	err := p.cmd.Wait()
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		return ws, fmt.Errorf("sandbox: wait: %w", err)
	}
	if !ok {
		return ws, errors.New("sandbox: wait: no wait status")
	}
	return ws, nil
}

// ExitCode is the shell's spelling of a wait status: the exit code, or 128
// plus the number of the signal that killed the process.
func ExitCode(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}
