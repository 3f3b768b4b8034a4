// Package cmd holds strata's cobra commands, one NewCmdX per file. Each RunE
// reads its flags and calls a package (layers, unionfs, internal/mounts); the
// commands print nothing on error: main prints the one line and exits with
// ExitCode.
package cmd

import (
	"context"

	"github.com/spf13/cobra"
)

// New returns the root command, "strata", with every subcommand.
func New(version string) *cobra.Command {
	root := &cobra.Command{
		Use:   "strata",
		Short: "Union file systems through FUSE: read-only layers under a writable upper",
		Long: `strata merges directory layers into one tree, served through FUSE with the
semantics of the kernel's overlayfs: the top layer wins, deletions are recorded
as whiteouts, and every change goes to the upper directory.`,
		Example: `  strata demo run && strata demo
  strata mount --layer base --layer app --upper up --work wk /mnt/merged
  strata umount /mnt/merged
  strata image import busybox.tar && strata run --rm -it busybox sh
  strata bench --quick`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	root.SetVersionTemplate("strata {{.Version}}\n")
	// Flag errors of every subcommand are usage errors: exit code 2.
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &usageError{cmd: c, err: err}
	})
	root.AddCommand(NewCmdMount(), NewCmdUmount(), NewCmdDemo(), NewCmdOverlay(version), NewCmdImage(), NewCmdCommit(), NewCmdBench(), NewCmdDiff(), NewCmdLayers(),
		NewCmdRun(), NewCmdPs(), NewCmdExec(), NewCmdStop(), NewCmdRm())
	return root
}

// contextOf is cmd's context, or the background when RunE is called directly.
func contextOf(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}
