package container

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/strata-fs/strata/internal/cgroups"
	"github.com/strata-fs/strata/internal/flock"
	"github.com/strata-fs/strata/internal/mounts"
	"github.com/strata-fs/strata/internal/sandbox"
	"github.com/strata-fs/strata/layers"
	"github.com/strata-fs/strata/unionfs"
)

// Options describe a container to run.
type Options struct {
	// Name is the container's name; "" picks one.
	Name string
	// Image is an image of the store, or Layers are directories, bottom
	// first; one of them.
	Image  string
	Layers []string
	// Args replace the image's Cmd (the Entrypoint stays).
	Args []string
	// Env adds to the image's Env: KEY=VALUE, or KEY to pass this process's
	// value on.
	Env []string
	// Workdir and User replace the image's WorkingDir and User.
	Workdir, User string
	// Hostname is the container's; "" means the first 12 digits of its id.
	Hostname string
	// NetHost shares the host's network instead of a loopback of its own.
	NetHost bool
	Limits  cgroups.Limits
	// Init runs a tiny init as PID 1 (see sandbox.Spec.Init).
	Init bool
	// Tty: Stdin is a terminal (a pty's slave) to make the command's
	// controlling terminal.
	Tty bool
	// AutoRemove removes the container once it exits (--rm).
	AutoRemove bool
	// Stdin, Stdout and Stderr are the command's; nil is /dev/null.
	// Detached sends Stdout and Stderr to the container's log file.
	Stdin, Stdout, Stderr *os.File
	Detached              bool
	// Started, when not nil, is called once the command runs (a detached
	// supervisor reports ready there). An error stops the container.
	Started func(*Container) error
	// Signals are forwarded to the container's first process once it runs;
	// nil means SIGINT, SIGTERM, SIGHUP and SIGQUIT.
	Signals []os.Signal
	// Trace, when not nil, receives the union's decisions (`run
	// --trace`); its layers are named "init" and by the image layers'
	// short diff_ids.
	Trace unionfs.Tracer
}

// Result is how a container ended.
type Result struct {
	Name string
	// ExitCode is the command's exit code, or 128+N for signal N.
	ExitCode int
	// OOMKilled: the kernel's OOM killer killed the command (ExitCode 137).
	OOMKilled bool
}

// Prepare checks o against the store without changing anything: the image
// exists, the name is free, the limits parse and the host has their
// controllers. `run -d` calls it before it starts its supervisor, so that
// these errors reach the terminal.
func Prepare(s *layers.Store, o *Options) error {
	if o.Name != "" {
		if err := CheckName(o.Name); err != nil {
			return err
		}
		if _, err := os.Lstat(Dir(s.Root(), o.Name)); err == nil {
			return fmt.Errorf("container %s: %w", o.Name, ErrNameInUse)
		}
	}
	if o.Image != "" {
		if _, err := s.Resolve(o.Image); err != nil {
			return err
		}
	}
	if o.Limits != (cgroups.Limits{}) {
		if _, err := cgroups.Detect(); err != nil {
			return err
		}
	}
	return nil
}

// Run runs a container to its end: it claims the name, builds the init
// layer, makes the cgroup, mounts and serves the union, starts the command in
// its namespaces, forwards signals to it, waits, and takes everything down
// again. The container's directory stays, with its upper, unless
// o.AutoRemove. An error means the command did not run (a *sandbox.StartError
// when the init stage failed), or that the clean-up failed; either way
// nothing stays mounted and no cgroup is left.
func Run(ctx context.Context, s *layers.Store, o Options) (res Result, err error) {
	cfg, release, err := configure(s, &o)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, release()) }()
	res.Name = cfg.Name

	c, err := create(s.Root(), cfg)
	if err != nil {
		return res, err
	}
	lock, err := flock.Exclusive(c.path("lock"))
	if err != nil {
		return res, errors.Join(err, os.RemoveAll(c.dir))
	}
	started := false
	defer func() {
		// A container whose command never ran leaves nothing behind.
		if !started || o.AutoRemove {
			err = errors.Join(err, os.RemoveAll(c.dir))
		}
		err = errors.Join(err, lock.Unlock())
	}()
	if err := writeInitLayer(c.path("init"), cfg.Hostname, cfg.NetHost); err != nil {
		return res, err
	}

	var cg cgroups.Cgroup
	if h, derr := cgroups.Detect(); derr == nil {
		cg, err = h.Create(cfg.ID, cfg.Limits)
		if err != nil {
			return res, err
		}
	} else if cfg.Limits != (cgroups.Limits{}) {
		return res, derr
	}
	// Without limits a host without cgroups runs the container without
	// one: ps then shows no memory use.
	defer func() {
		if cg != nil {
			err = errors.Join(err, cg.Destroy())
		}
	}()

	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	srv, err := mountUnion(c, layerNames(s, c), o.Trace)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, unmountUnion(srv, c.Rootfs())) }()

	stdout, stderr := o.Stdout, o.Stderr
	if o.Detached {
		logf, err := os.OpenFile(c.LogPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_CLOEXEC, 0o600)
		if err != nil {
			return res, fmt.Errorf("container log: %w", err)
		}
		defer func() { _ = logf.Close() }() // the container's copies are what it writes to
		stdout, stderr = logf, logf
	}
	sigs := make(chan os.Signal, 8)
	want := o.Signals
	if want == nil {
		want = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}
	}
	signal.Notify(sigs, want...)
	defer signal.Stop(sigs)

	sopts := sandbox.StartOptions{Stdin: o.Stdin, Stdout: stdout, Stderr: stderr}
	if cg != nil {
		if fd, ok := cg.FD(); ok {
			sopts.CgroupFD, sopts.UseCgroupFD = fd, true
		} else {
			sopts.Join = cg.Add
		}
	}
	p, err := sandbox.Start(&sandbox.Spec{
		Root: c.Rootfs(), Args: cfg.Args, Env: cfg.Env, Cwd: cfg.Cwd, User: cfg.User,
		Hostname: cfg.Hostname, NetHost: cfg.NetHost, Init: cfg.Init, Tty: cfg.Tty, Image: imageName(cfg),
	}, sopts)
	if err != nil {
		return res, err
	}
	started = true
	st := State{Status: Running, Pid: p.Pid, Supervisor: os.Getpid(), Started: time.Now()}
	if err := c.writeState(st); err != nil {
		_ = p.Signal(syscall.SIGKILL) // it cannot be found without its state
		_, _ = p.Wait()
		return res, err
	}
	if o.Started != nil {
		if err := o.Started(c); err != nil {
			_ = p.Signal(syscall.SIGKILL) // nobody knows of it
			_, _ = p.Wait()
			return res, errors.Join(err, c.finish(st, -1, false))
		}
	}

	done := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-sigs:
				_ = p.Signal(sig) // it may have exited already: Wait tells
			case <-done:
				return
			}
		}
	}()
	ws, werr := p.Wait()
	close(done)
	res.ExitCode = sandbox.ExitCode(ws)
	if werr != nil {
		res.ExitCode = -1
	}
	if cg != nil && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
		oom, oerr := cg.OOMKilled()
		res.OOMKilled = oom && oerr == nil
	}
	return res, errors.Join(werr, c.finish(st, res.ExitCode, res.OOMKilled))
}

func (c *Container) finish(st State, code int, oom bool) error {
	st.Status, st.ExitCode, st.OOMKilled, st.Finished = Exited, code, oom, time.Now()
	st.Pid, st.Supervisor = 0, 0
	return c.writeState(st)
}

func imageName(cfg Config) string {
	if cfg.Image != "" {
		return cfg.Image
	}
	return "(--layer " + strings.Join(cfg.Lowers, " ") + ")"
}

// configure applies the image's defaults to o and returns the container's
// config, with the image's layers marked in use until release.
func configure(s *layers.Store, o *Options) (cfg Config, release func() error, err error) {
	release = func() error { return nil }
	if (o.Image == "") == (len(o.Layers) == 0) {
		return cfg, release, fmt.Errorf("%w: give an image or layer directories, one of them", ErrInvalid)
	}
	cfg = Config{ID: NewID(), Name: o.Name, Image: o.Image, Created: time.Now().UTC(), NetHost: o.NetHost,
		Limits: o.Limits, Init: o.Init, Tty: o.Tty, AutoRemove: o.AutoRemove}
	if cfg.Name == "" {
		cfg.Name = cfg.ID[:12]
	}
	if err := CheckName(cfg.Name); err != nil {
		return cfg, release, err
	}
	var entrypoint, cmd, env []string
	if o.Image != "" {
		id, err := s.Resolve(o.Image)
		if err != nil {
			return cfg, release, err
		}
		icfg, err := s.Config(id)
		if err != nil {
			return cfg, release, err
		}
		st, rel, err := s.Use(id.String())
		if err != nil {
			return cfg, release, err
		}
		release = rel
		cfg.ImageID, cfg.Lowers = id.String(), st.Lowers
		entrypoint, cmd, env = icfg.Config.Entrypoint, icfg.Config.Cmd, icfg.Config.Env
		cfg.Cwd, cfg.User = icfg.Config.WorkingDir, icfg.Config.User
	} else {
		st := layers.Stack{Lowers: slices.Clone(o.Layers)}
		slices.Reverse(st.Lowers) // top first
		r, err := st.Resolve()
		if err != nil {
			return cfg, release, err
		}
		cfg.Lowers = r.Lowers
	}
	if len(o.Args) > 0 {
		cmd = o.Args
	}
	cfg.Args = append(slices.Clone(entrypoint), cmd...)
	if len(cfg.Args) == 0 {
		return cfg, release, fmt.Errorf("%w: no command: the image has none; give one after the image", ErrInvalid)
	}
	if o.Workdir != "" {
		cfg.Cwd = o.Workdir
	}
	if o.User != "" {
		cfg.User = o.User
	}
	cfg.Hostname = o.Hostname
	if cfg.Hostname == "" {
		cfg.Hostname = cfg.ID[:12]
	}
	cfg.Env = buildEnv(env, o.Env, cfg.Hostname, o.Tty)
	return cfg, release, nil
}

// buildEnv is the image's environment with defaults (PATH, HOSTNAME, TERM)
// and the user's -e on top; a later KEY replaces an earlier one.
func buildEnv(image, user []string, hostname string, tty bool) []string {
	var env []string
	set := func(kv string) {
		k, _, _ := strings.Cut(kv, "=")
		env = slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, k+"=") })
		env = append(env, kv)
	}
	has := func(k string) bool {
		return slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, k+"=") })
	}
	for _, kv := range image {
		set(kv)
	}
	if !has("PATH") {
		set("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	set("HOSTNAME=" + hostname)
	if tty && !has("TERM") {
		set("TERM=xterm")
	}
	for _, kv := range user {
		if !strings.Contains(kv, "=") {
			v, ok := os.LookupEnv(kv)
			if !ok {
				continue
			}
			kv += "=" + v
		}
		set(kv)
	}
	return env
}

// Lowers are the container's read-only layers, top first: its init layer,
// then the image's layers. Its upper is on top of them.
func (c *Container) Lowers() []string {
	return append([]string{c.path("init")}, c.Config.Lowers...)
}

// layerNames names c's lowers in traces: "init", then the short diff_id of
// each of the store's layers ("" for a --layer directory: its index names it).
func layerNames(s *layers.Store, c *Container) []string {
	names := []string{"init"}
	for _, l := range c.Config.Lowers {
		names = append(names, s.LayerName(l))
	}
	return names
}

// mountUnion mounts the container's tree on its rootfs: the image's layers,
// the init layer on them, the upper on top. names label the lowers, top first,
// in trace's lines.
func mountUnion(c *Container, names []string, trace unionfs.Tracer) (*unionfs.Server, error) {
	st := layers.Stack{
		Lowers: c.Lowers(),
		Upper:  c.Upper(),
		Work:   c.path("work"),
	}
	r, err := st.Resolve()
	if err != nil {
		return nil, err
	}
	mnt, err := layers.CheckMountpoint(c.Rootfs(), r)
	if err != nil {
		return nil, err
	}
	// Metacopy: the container's upper is read by strata alone (commit and
	// diff take the lowers along).
	return unionfs.Mount(mnt, unionfs.Config{Lowers: r.Lowers, Upper: r.Upper, Work: r.Work, FsName: "strata",
		Trace: trace, Names: names, Metacopy: true})
}

// unmountUnion unmounts the container's tree. Its mount namespace died with
// its last process, so nothing should hold it; if something does, it is
// detached and served until its last user leaves.
func unmountUnion(srv *unionfs.Server, mnt string) error {
	err := srv.Unmount()
	if err != nil {
		if derr := mounts.Detach(mnt); derr != nil {
			return errors.Join(fmt.Errorf("unmount %s: %w", mnt, err), derr)
		}
	}
	srv.Wait()
	return nil
}

// Stop sends SIGTERM to the container's first process, and SIGKILL if it has
// not ended within timeout; it returns once its supervisor has taken it down
// (or after a further 30 s, with an error). A container that does not run is
// no error.
func (c *Container) Stop(timeout time.Duration) error {
	st, err := c.State()
	if err != nil || st.Status != Running {
		return err
	}
	if err := syscall.Kill(st.Pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop %s: %w", c.Config.Name, err)
	}
	if c.waitDown(timeout) {
		return nil
	}
	if err := syscall.Kill(st.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop %s: %w", c.Config.Name, err)
	}
	if !c.waitDown(30 * time.Second) {
		return fmt.Errorf("stop %s: its supervisor (pid %d) does not end", c.Config.Name, st.Supervisor)
	}
	return nil
}

// waitDown waits up to d for the supervisor to release the lock.
func (c *Container) waitDown(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		l, err := flock.TryExclusive(c.path("lock"))
		if err == nil {
			_ = l.Unlock() // a probe
			return true
		}
		if !errors.Is(err, flock.ErrBusy) || time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Cgroup loads the cgroup of a running container.
func (c *Container) Cgroup() (cgroups.Cgroup, error) {
	h, err := cgroups.Detect()
	if err != nil {
		return nil, err
	}
	cg, err := h.Load(c.Config.ID)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("container %s: %w", c.Config.Name, ErrNotRunning)
	}
	return cg, err
}
