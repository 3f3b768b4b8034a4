package container

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/strata-fs/strata/internal/sandbox"
)

// ExecOptions describe a command to run in a running container.
type ExecOptions struct {
	Args []string
	// Env adds to the container's environment (KEY=VALUE, or KEY for this
	// process's value); Workdir and User replace its own.
	Env           []string
	Workdir, User string
	Tty           bool
	// Stdin, Stdout and Stderr are the command's; nil is /dev/null.
	Stdin, Stdout, Stderr *os.File
	// Started, when not nil, is called once the command runs.
	Started func()
}

// Exec runs a command in the namespaces and the cgroup of the running
// container c (package nsenter does the joining), forwards SIGINT, SIGTERM,
// SIGHUP and SIGQUIT to it, and returns its exit code.
func (c *Container) Exec(o ExecOptions) (int, error) {
	if len(o.Args) == 0 {
		return 0, fmt.Errorf("%w: no command", ErrInvalid)
	}
	st, err := c.State()
	if err != nil {
		return 0, err
	}
	if st.Status != Running {
		return 0, fmt.Errorf("container %s: %w", c.Config.Name, ErrNotRunning)
	}
	cfg := c.Config
	spec := &sandbox.Spec{
		Root: "/", Args: o.Args, Env: buildEnv(cfg.Env, o.Env, cfg.Hostname, o.Tty),
		Cwd: cfg.Cwd, User: cfg.User, Tty: o.Tty, Image: imageName(cfg),
	}
	if o.Workdir != "" {
		spec.Cwd = o.Workdir
	}
	if o.User != "" {
		spec.User = o.User
	}
	opts := sandbox.StartOptions{Stdin: o.Stdin, Stdout: o.Stdout, Stderr: o.Stderr}
	cg, err := c.Cgroup()
	switch {
	case errors.Is(err, ErrNotRunning):
		// Run without cgroups on a host that has none: no cgroup to join.
	case err != nil:
		return 0, err
	default:
		defer func() { _ = cg.Close() }() // the container's; we only joined it
		opts.Join = cg.Add
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)
	p, err := sandbox.Exec(spec, st.Pid, opts)
	if err != nil {
		return 0, err
	}
	if o.Started != nil {
		o.Started()
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-sigs:
				_ = p.Signal(sig) // it may have exited: Wait tells
			case <-done:
				return
			}
		}
	}()
	ws, err := p.Wait()
	close(done)
	return sandbox.ExitCode(ws), err
}
