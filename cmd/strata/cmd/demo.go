package cmd

import (
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/strata-fs/strata/cmd/strata/internal/demo"
	"github.com/strata-fs/strata/whiteout"
)

// NewCmdDemo returns `strata demo`.
func NewCmdDemo() *cobra.Command {
	var (
		format string
		opts   demo.Options
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Show what a union does, step by step, in a temp dir",
		Long: `Build a stack of three small layers in a temp dir, mount it, and show step by
step what a union does: a merged read, a copy-up, a whiteout and an opaque
directory. Then unmount and remove everything. Needs root and /dev/fuse.`,
		Example: `  sudo strata demo
  sudo strata demo --whiteout overlay --keep`,
		Args:         usageArgs(cobra.NoArgs),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := whiteout.ParseFormat(format)
			if err != nil {
				return usagef(cmd, "--whiteout: %w", err)
			}
			opts.Whiteout = f
			// `strata demo | head` closes stdout early. Left alone, the
			// next write would kill strata by SIGPIPE with the union still
			// mounted and the temp dir in place; ignored, it is an EPIPE
			// that the demo returns after cleaning up.
			signal.Ignore(syscall.SIGPIPE)
			return demo.Run(contextOf(cmd), cmd.OutOrStdout(), opts)
		},
	}
	cmd.Flags().StringVar(&format, "whiteout", "oci", "whiteout `FORMAT` the union writes: oci or overlay")
	cmd.PersistentFlags().BoolVar(&opts.Keep, "keep", false, "keep the temp dir afterwards (unmounted)")
	cmd.PersistentFlags().StringVar(&opts.Dir, "dir", "", "make the temp dir in `DIR` (default: $TMPDIR or /tmp)")
	cmd.AddCommand(&cobra.Command{
		Use:   "run",
		Short: "Show a container on a union: an image from this host, its upper, its unchanged layers",
		Long: `Build a small image from this host's binaries (the static /bin/busybox when
there is one; else /bin/sh and a few coreutils with their libraries), import it
into an image store in a temp dir, and run a container on it with a 64 MiB
memory limit that deletes a file of the image, rewrites one and writes a new
one. Then show the container's upper (the whiteout, the copy, the new file) and
the image's layer, unchanged. Then remove everything. No download; needs root,
/dev/fuse and a cgroup memory controller.`,
		Example:      `  sudo strata demo run`,
		Args:         usageArgs(cobra.NoArgs),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			signal.Ignore(syscall.SIGPIPE) // as above
			return demo.RunContainer(contextOf(cmd), cmd.OutOrStdout(), opts)
		},
	})
	return cmd
}
