package sandbox

import (
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// tinyInit starts the command as a child and stays as PID 1: it forwards the
// signals it gets to the command, reaps every process that dies in the pid
// namespace (orphans are re-parented to PID 1), and exits with the command's
// status once the command is gone, which kills whatever is left (the kernel
// does, when a pid namespace's init exits). It returns only errors of the
// start.
func tinyInit(s *Spec, path string, env []string, cred credential, cwd string, errPipe *os.File) error {
	sigs := make(chan os.Signal, 32)
	signal.Notify(sigs)
	cmd := &exec.Cmd{
		Path: path, Args: s.Args, Env: env, Dir: cwd,
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		SysProcAttr: &syscall.SysProcAttr{Credential: cred.sys(), Setsid: s.Tty, Setctty: s.Tty},
	}
	if err := cmd.Start(); err != nil {
		var perr *os.PathError
		if errors.As(err, &perr) {
			err = perr.Err
		}
		return execError(s.Args[0], path, err)
	}
	_ = errPipe.Close() // the command runs: the parent stops waiting
	child := cmd.Process.Pid
	for sig := range sigs {
		switch sig {
		case unix.SIGCHLD:
			for {
				var ws unix.WaitStatus
				pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
				if err != nil || pid <= 0 {
					break
				}
				if pid == child {
					code := ws.ExitStatus()
					if ws.Signaled() {
						code = 128 + int(ws.Signal())
					}
					os.Exit(code)
				}
			}
		case unix.SIGURG:
			// The Go runtime's own preemption signal.
		default:
			_ = unix.Kill(child, sig.(syscall.Signal)) // it may be gone: SIGCHLD tells
		}
	}
	return nil
}
