// Package daemon runs this program again in the background and waits until the
// copy says it is ready: `strata mount --daemon` returns once the union answers
// requests, or fails with the reason the background copy gave.
//
// The parent re-executes its own binary (os.Executable) with the same
// arguments, in a new session (setsid: no controlling terminal, so no SIGHUP
// or Ctrl-C from it), with stdin, stdout and stderr on /dev/null, and with the
// write end of a pipe as descriptor 3, named in the environment variable
// STRATA_READY_FD. The child finds that variable through Child, does its work,
// and calls Ready: "ok", or the text of its error, then closes the pipe. The
// parent reads the pipe to its end: "ok" is success; anything else, or nothing
// at all because the child died first, is a *ChildError.
//
// The child should not keep the parent's working directory busy: once it no
// longer needs relative paths it should chdir to "/" (Ready does it).
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// envReadyFD names the environment variable that tells a child it was started
// by Start, and which descriptor to report on.
const envReadyFD = "STRATA_READY_FD"

// readyFD is the child's end of the pipe: the first of cmd.ExtraFiles.
const readyFD = 3

const ok = "ok"

// ChildError is the failure a background child reported before it was ready.
type ChildError struct {
	// Msg is what the child wrote: the text of its error, or a note that
	// it died without a word.
	Msg string
	// Code is the child's exit status, -1 if it did not exit normally.
	Code int
}

func (e *ChildError) Error() string { return e.Msg }

// Start runs this executable with args as a detached child and waits until it
// calls Ready. It returns the child's process id on success; the child runs on
// after it. On failure the child has exited (and been reaped), and the error is
// a *ChildError or the reason it could not be started. If ctx ends first, the
// child is sent SIGTERM and ctx's error is returned.
func Start(ctx context.Context, args []string) (pid int, err error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("find own executable: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("readiness pipe: %w", err)
	}
	defer func() { _ = r.Close() }() // the read end; nothing was written through it

	// A daemon must hold none of the descriptors this process inherited: a
	// pipe of the shell that ran us, say, which would never see its end.
	if err := cloexecAll(); err != nil {
		return 0, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", envReadyFD, readyFD))
	cmd.ExtraFiles = []*os.File{w} // descriptor 3 in the child
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Stdin, Stdout and Stderr stay nil: /dev/null.
	err = cmd.Start()
	_ = w.Close() // the child has its copy; ours would keep the pipe from ending
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", exe, err)
	}

	type reply struct {
		msg []byte
		err error
	}
	replies := make(chan reply, 1)
	go func() {
		msg, err := io.ReadAll(io.LimitReader(r, 64<<10))
		replies <- reply{msg, err}
	}()
	select {
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM) // it unmounts whatever it mounted
		_ = cmd.Wait()                          // reap; its status says nothing more
		return 0, ctx.Err()
	case rep := <-replies:
		msg := strings.TrimSpace(string(rep.msg))
		if rep.err == nil && msg == ok {
			pid := cmd.Process.Pid
			_ = cmd.Process.Release() // the child outlives us; nobody waits for it here
			return pid, nil
		}
		werr := cmd.Wait()
		code := cmd.ProcessState.ExitCode()
		if msg == "" {
			msg = fmt.Sprintf("background process exited before it was ready (%v)", werr)
			if rep.err != nil {
				msg = fmt.Sprintf("background process: read readiness: %v", rep.err)
			}
		}
		return 0, &ChildError{Msg: msg, Code: code}
	}
}

// cloexecAll marks every descriptor from 3 up close-on-exec. Go opens its own
// that way already; this catches the ones inherited. Descriptors passed in
// cmd.ExtraFiles are still passed: the fork dup2s them into place.
func cloexecAll() error {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("list descriptors: %w", err)
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		// The descriptor of the listing itself is gone by now: EBADF.
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); err != nil && !errors.Is(err, unix.EBADF) {
			return fmt.Errorf("close-on-exec %d: %w", fd, err)
		}
	}
	return nil
}

// Notifier is a child's end of the readiness pipe.
type Notifier struct {
	f *os.File
}

// Child returns the notifier of this process if Start started it, and nil
// otherwise. It removes the variable from the environment, so that processes
// this one starts don't take themselves for children of Start.
func Child() *Notifier {
	v, set := os.LookupEnv(envReadyFD)
	if !set {
		return nil
	}
	_ = os.Unsetenv(envReadyFD) // cannot fail for a set, well-formed name
	if v != fmt.Sprint(readyFD) {
		return nil
	}
	return &Notifier{f: os.NewFile(readyFD, "ready")}
}

// Ready tells the parent that the child is ready (err == nil) or failed, and
// closes the pipe; only the first call speaks. When ready, it first changes the
// working directory to "/", so that the daemon keeps no directory busy. It
// returns an error when the child must not go on: the chdir failed (the parent
// is told so), or the parent could not be told (it is gone, and its caller was
// told of a failure).
func (n *Notifier) Ready(err error) error {
	if n == nil || n.f == nil {
		return nil
	}
	f := n.f
	n.f = nil
	var cerr error
	if err == nil {
		if e := os.Chdir("/"); e != nil {
			cerr = fmt.Errorf("chdir /: %w", e)
			err = cerr
		}
	}
	msg := ok
	if err != nil {
		msg = err.Error()
		if msg == ok || msg == "" {
			msg = fmt.Sprintf("failed: %q", msg)
		}
	}
	_, werr := io.WriteString(f, msg)
	if werr != nil {
		werr = fmt.Errorf("report readiness: %w", werr)
	}
	return errors.Join(cerr, werr, f.Close())
}
