package sandbox

import (
	"errors"
	"fmt"
)

// Spec is what the init stage needs to know, sent to it as JSON.
type Spec struct {
	// Root is the merged tree, as a path of the host (the parent's mount
	// namespace, which the child starts with a copy of).
	Root string `json:"root"`
	// Args is the command and its arguments; Args[0] is looked up on the
	// PATH of Env inside the new root unless it holds a "/".
	Args []string `json:"args"`
	// Env is the command's whole environment.
	Env []string `json:"env"`
	// Cwd is the working directory inside the root; "" means "/". It is
	// created if missing, as Docker does for an image's WorkingDir.
	Cwd string `json:"cwd,omitempty"`
	// User is USER[:GROUP], names or numbers, looked up in the root's
	// /etc/passwd and /etc/group; "" means root.
	User string `json:"user,omitempty"`
	// Hostname is the uts namespace's host name.
	Hostname string `json:"hostname,omitempty"`
	// NetHost shares the host's network namespace instead of a new one
	// with only a loopback.
	NetHost bool `json:"netHost,omitempty"`
	// Init keeps the init stage as PID 1, reaping zombies and forwarding
	// signals, with the command as its child.
	Init bool `json:"init,omitempty"`
	// Tty makes the command's stdin, a terminal, its controlling terminal.
	Tty bool `json:"tty,omitempty"`
	// Image names the image in errors ("not found in image NAME").
	Image string `json:"image,omitempty"`
}

func (s *Spec) validate() error {
	if s.Root == "" {
		return errors.New("sandbox: no root")
	}
	if len(s.Args) == 0 || s.Args[0] == "" {
		return errors.New("sandbox: no command")
	}
	return nil
}

// Exit statuses of a command that could not start, as a shell and Docker
// give them.
const (
	// ExitCannotRun: the command exists but cannot be executed.
	ExitCannotRun = 126
	// ExitNotFound: no such command in the image.
	ExitNotFound = 127
)

// StartError is a failure of the init stage, before the command ran.
type StartError struct {
	// Code is ExitNotFound or ExitCannotRun when the command is at fault,
	// 1 when the container could not be set up.
	Code int    `json:"code"`
	Msg  string `json:"msg"`
}

func (e *StartError) Error() string { return e.Msg }

func startErrorf(code int, format string, args ...any) *StartError {
	return &StartError{Code: code, Msg: fmt.Sprintf(format, args...)}
}
