package cmd

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/strata-fs/strata/internal/container"
)

// NewCmdExec returns `strata exec`.
func NewCmdExec() *cobra.Command {
	var (
		store   storeOptions
		o       container.ExecOptions
		tty     bool
		interac bool
	)
	cmd := &cobra.Command{
		Use:   "exec [flags] NAME COMMAND [ARG...]",
		Short: "Run a command in a running container",
		Long: `Run a command in a running container: in every one of its namespaces (mount,
pid, uts, ipc, network, cgroup) and in its cgroup, so that it sees the same
files and processes and counts against the same limits. The environment,
working directory and user are the container's; -e, -w and -u change them.

Exit status: the command's; 127 when it is not in the image, 126 when it
cannot be executed; 2 when the container does not exist or does not run.`,
		Example: `  strata exec web ps
  strata exec -it web sh`,
		Args:         usageArgs(cobra.MinimumNArgs(2)),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := container.Open(store.root, args[0])
			if err != nil {
				return err
			}
			o.Args = args[1:]
			o.Stdout, o.Stderr = os.Stdout, os.Stderr
			if interac {
				o.Stdin = os.Stdin
			}
			var restore func()
			if tty {
				t, err := openTerminal(interac)
				if err != nil {
					return err
				}
				defer t.Close()
				o.Stdin, o.Stdout, o.Stderr, o.Tty = t.slave, t.slave, t.slave, true
				o.Started = func() { restore = t.relay() }
			}
			code, err := c.Exec(o)
			if restore != nil {
				restore()
			}
			if err != nil {
				return err
			}
			return exitOf(code, false)
		},
	}
	store.addFlags(cmd)
	f := cmd.Flags()
	f.SetInterspersed(false)
	f.StringArrayVarP(&o.Env, "env", "e", nil, "set `KEY=VALUE` (KEY alone: this environment's value); repeatable")
	f.StringVarP(&o.Workdir, "workdir", "w", "", "the working `DIR` inside the container")
	f.StringVarP(&o.User, "user", "u", "", "run as `USER[:GROUP]` (names or ids)")
	f.BoolVarP(&tty, "tty", "t", false, "give the command a pseudo-terminal")
	f.BoolVarP(&interac, "interactive", "i", false, "pass stdin on")
	return cmd
}
