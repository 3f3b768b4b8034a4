package cmd

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-fs/strata/internal/container"
)

// NewCmdStop returns `strata stop`.
func NewCmdStop() *cobra.Command {
	var (
		store   storeOptions
		timeout int
	)
	cmd := &cobra.Command{
		Use:   "stop [-t SECONDS] NAME...",
		Short: "Stop running containers",
		Long: `Send SIGTERM to each container's first process, then SIGKILL after --time
seconds if it has not exited, and wait until its strata process has unmounted
its union and removed its cgroup. Its upper stays, for 'strata commit' or
'strata rm'. A container that does not run is no error.`,
		Example:      `  strata stop web`,
		Args:         usageArgs(cobra.MinimumNArgs(1)),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout < 0 {
				return usagef(cmd, "--time %d: want 0 or more seconds", timeout)
			}
			return eachContainer(cmd, store.root, args, func(c *container.Container) error {
				return c.Stop(time.Duration(timeout) * time.Second)
			})
		},
	}
	store.addFlags(cmd)
	cmd.Flags().IntVarP(&timeout, "time", "t", 10, "`SECONDS` to wait after SIGTERM before SIGKILL")
	return cmd
}

// NewCmdRm returns `strata rm`.
func NewCmdRm() *cobra.Command {
	var (
		store storeOptions
		force bool
	)
	cmd := &cobra.Command{
		Use:   "rm [-f] NAME...",
		Short: "Remove stopped containers",
		Long: `Remove each container: its upper, work dir, init layer, cgroup and state. A
running container is refused unless -f, which kills it first. rm also cleans
up after a strata process that died: it detaches the dead mount of the union
and removes the cgroup it left.`,
		Example:      `  strata rm web`,
		Args:         usageArgs(cobra.MinimumNArgs(1)),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachContainer(cmd, store.root, args, func(c *container.Container) error {
				if force {
					if err := c.Stop(0); err != nil {
						return err
					}
				}
				return c.Remove()
			})
		},
	}
	store.addFlags(cmd)
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running container first")
	return cmd
}

// eachContainer calls fn on each named container and prints the names it
// succeeded on, as docker does; it goes on past failures and returns them all.
func eachContainer(cmd *cobra.Command, root string, names []string, fn func(*container.Container) error) error {
	var errs []error
	for _, name := range names {
		c, err := container.Open(root, name)
		if err == nil {
			err = fn(c)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		_, _ = fmt.Fprintln(cmd.OutOrStdout(), name)
	}
	return errors.Join(errs...)
}
