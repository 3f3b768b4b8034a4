package cmd

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/strata-fs/strata/cmd/strata/internal/daemon"
	"github.com/strata-fs/strata/internal/cgroups"
	"github.com/strata-fs/strata/internal/container"
)

// envRunName carries the name `run -d` picked to the supervisor it starts.
const envRunName = "STRATA_RUN_NAME"

// runOptions are the flags of `strata run` that need parsing.
type runOptions struct {
	opts    container.Options
	memory  string
	cpus    string
	pids    int64
	net     string
	tty     bool
	interac bool
	detach  bool
	trace   traceOptions
}

// NewCmdRun returns `strata run`.
func NewCmdRun() *cobra.Command {
	var (
		store storeOptions
		o     runOptions
	)
	cmd := &cobra.Command{
		Use:   "run [flags] IMAGE|--layer DIR... [COMMAND [ARG...]]",
		Short: "Run a command in a container on an image's union",
		Long: `Run a command in a new container: a process in its own mount, pid, uts, ipc,
network and cgroup namespaces, held to the cgroup limits given, whose root is
the union of the image's read-only layers, an init layer (/etc/hostname,
/etc/hosts, /etc/resolv.conf) and the container's own writable upper. The
image's Entrypoint, Cmd, Env, WorkingDir and User are the defaults; COMMAND
replaces Cmd, and -e, -w and -u add to or replace the rest.

The command is PID 1 of its pid namespace (or the child of a tiny init with
--init, which reaps zombies and forwards signals). SIGINT, SIGTERM, SIGHUP and
SIGQUIT are forwarded to it. With -t it gets a pseudo-terminal, resized with
this one. Its state stays under --root/containers/NAME (see 'strata ps',
'strata commit NAME', 'strata rm') unless --rm.

With -d strata prints the container's name and returns once the command runs;
a background strata serves the union until the command exits, and the
command's output goes to --root/containers/NAME/log.

--trace writes one line per decision of the union to FILE (appended), or to
stderr when given alone: which layer answered a lookup (the init layer is
"init", an image's layers are named by their short diff_id), every copy-up,
whiteout, opaque directory and rename. With -d give a FILE. 'strata diff NAME'
shows what the container changed.

Exit status: the command's (128+N when signal N killed it; 137 and "killed:
out of memory" when the memory limit did). 2 for bad input, with nothing
left: an unknown image, a bad limit, a name in use, a limit the host's cgroups
cannot enforce. 127 when the command is not in the image, 126 when it cannot
be executed. 1 for any other failure of strata's.`,
		Example: `  strata run --name web --memory 64M --cpus 0.5 --pids 64 --hostname box busybox sh -c 'hostname; ps'
  strata run --rm -it busybox sh
  strata run -d --name web busybox httpd -f -p 8080
  strata run --layer ./base --layer ./app -- /bin/sh -c 'ls /'
  strata run --rm --trace=trace.log busybox sh -c 'rm /etc/motd; echo hi >> /etc/profile'`,
		Args:         usageArgs(cobra.ArbitraryArgs),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, &store, args)
		},
	}
	store.addFlags(cmd)
	f := cmd.Flags()
	f.SetInterspersed(false) // flags after the image belong to the command
	f.StringVar(&o.opts.Name, "name", "", "the container's `NAME` (default: the first 12 digits of its id)")
	f.StringArrayVar(&o.opts.Layers, "layer", nil, "a read-only layer `DIR` instead of an image; repeat, bottom first")
	f.StringArrayVarP(&o.opts.Env, "env", "e", nil, "set `KEY=VALUE` (KEY alone: this environment's value); repeatable")
	f.StringVarP(&o.opts.Workdir, "workdir", "w", "", "the working `DIR` inside the container")
	f.StringVarP(&o.opts.User, "user", "u", "", "run as `USER[:GROUP]` (names or ids)")
	f.StringVar(&o.opts.Hostname, "hostname", "", "the container's host `NAME` (default: its id, 12 digits)")
	f.StringVar(&o.memory, "memory", "", "memory limit, `SIZE` in bytes or with k, M, G (64M)")
	f.StringVar(&o.cpus, "cpus", "", "CPU quota, in `CPUS` (0.5: half of one)")
	f.Int64Var(&o.pids, "pids", 0, "the most processes and threads at once (`N`)")
	f.StringVar(&o.net, "net", "none", "network: `none` (a loopback of its own) or host")
	f.BoolVar(&o.opts.Init, "init", false, "run a tiny init as PID 1 that reaps zombies and forwards signals")
	f.BoolVarP(&o.tty, "tty", "t", false, "give the command a pseudo-terminal")
	f.BoolVarP(&o.interac, "interactive", "i", false, "pass stdin on (without it the command reads /dev/null)")
	f.BoolVarP(&o.detach, "detach", "d", false, "print the name and run in the background")
	f.BoolVar(&o.opts.AutoRemove, "rm", false, "remove the container when it exits")
	o.trace.addFlags(f)
	return cmd
}

// parse reads the flags and arguments into o.opts.
func (o *runOptions) parse(cmd *cobra.Command, args []string) error {
	if len(o.opts.Layers) == 0 {
		if len(args) == 0 {
			return usagef(cmd, "no image: give IMAGE, or --layer DIR")
		}
		o.opts.Image, args = args[0], args[1:]
	}
	o.opts.Args = args
	var err error
	if o.memory != "" {
		if o.opts.Limits.Memory, err = cgroups.ParseMemory(o.memory); err != nil {
			return usagef(cmd, "--memory: %w", err)
		}
	}
	if o.cpus != "" {
		if o.opts.Limits.CPUs, err = cgroups.ParseCPUs(o.cpus); err != nil {
			return usagef(cmd, "--cpus: %w", err)
		}
	}
	if o.pids < 0 {
		return usagef(cmd, "--pids %d: want a positive number", o.pids)
	}
	o.opts.Limits.Pids = o.pids
	switch o.net {
	case "none":
	case "host":
		o.opts.NetHost = true
	default:
		return usagef(cmd, "--net %q: want none or host", o.net)
	}
	if o.detach && (o.tty || o.interac) {
		return usagef(cmd, "-d runs without a terminal or stdin: drop -t and -i")
	}
	if o.detach && o.opts.AutoRemove {
		return usagef(cmd, "-d with --rm: not supported; 'strata rm' it once stopped")
	}
	if o.opts.Name != "" {
		if err := container.CheckName(o.opts.Name); err != nil {
			return usagef(cmd, "--name: %w", err)
		}
	}
	return o.trace.check(cmd, o.detach)
}

func (o *runOptions) run(cmd *cobra.Command, store *storeOptions, args []string) error {
	if err := o.parse(cmd, args); err != nil {
		return err
	}
	s, err := store.open()
	if err != nil {
		return err
	}
	ctx := contextOf(cmd)
	// The supervisor traces: the foreground strata, or with -d the
	// background one, which opens FILE before it reports ready (and
	// before it leaves the working directory a relative FILE names).
	var ready *daemon.Notifier
	if o.detach {
		ready = daemon.Child() // nil in the parent
	}
	if !o.detach || ready != nil {
		tracer, closeTrace, err := o.trace.open(cmd)
		if err != nil {
			if ready != nil {
				_ = ready.Ready(err) // the parent says it; we are done either way
			}
			return err
		}
		defer func() { _ = closeTrace() }() // lines are written whole, one write each
		o.opts.Trace = tracer
	}
	if o.detach {
		if ready == nil {
			// The parent: check what can be checked here, pick the
			// name, and start the supervisor.
			if o.opts.Name == "" {
				o.opts.Name = container.NewID()[:12]
			}
			if err := container.Prepare(s, &o.opts); err != nil {
				return err
			}
			if err := os.Setenv(envRunName, o.opts.Name); err != nil {
				return err
			}
			if _, err := daemon.Start(ctx, os.Args[1:]); err != nil {
				return err
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), o.opts.Name)
			return err
		}
		o.opts.Name = os.Getenv(envRunName)
		o.opts.Detached = true
		o.opts.Started = func(*container.Container) error { return ready.Ready(nil) }
		_, err := container.Run(ctx, s, o.opts)
		// Tell the parent, if it was not told yet; after Ready(nil) this
		// is a no-op, and the supervisor's exit status goes nowhere.
		if rerr := ready.Ready(err); rerr != nil && err == nil {
			err = rerr
		}
		return err
	}

	o.opts.Stdout, o.opts.Stderr = os.Stdout, os.Stderr
	if o.interac {
		o.opts.Stdin = os.Stdin
	}
	var restore func()
	if o.tty {
		pty, err := openTerminal(o.interac)
		if err != nil {
			return err
		}
		defer pty.Close()
		o.opts.Stdin, o.opts.Stdout, o.opts.Stderr = pty.slave, pty.slave, pty.slave
		o.opts.Tty = true
		o.opts.Started = func(*container.Container) error {
			restore = pty.relay()
			return nil
		}
	}
	res, err := container.Run(ctx, s, o.opts)
	if restore != nil {
		restore()
	}
	if err != nil {
		return err
	}
	return exitOf(res.ExitCode, res.OOMKilled)
}

// exitStatus ends strata with a container's exit code. It says nothing
// unless the OOM killer ended the container.
type exitStatus struct {
	code int
	oom  bool
}

func (e *exitStatus) Error() string {
	if e.oom {
		return "killed: out of memory"
	}
	return ""
}

func exitOf(code int, oom bool) error {
	if code == 0 {
		return nil
	}
	return &exitStatus{code: code, oom: oom}
}
