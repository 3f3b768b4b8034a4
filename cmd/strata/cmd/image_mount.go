package cmd

import (
	"errors"
	"slices"

	"github.com/spf13/cobra"
)

// NewCmdImageMount returns `strata image mount`.
func NewCmdImageMount(store *storeOptions) *cobra.Command {
	var o mountOptions
	cmd := &cobra.Command{
		Use:   "mount [flags] NAME[:TAG]|ID MOUNTPOINT",
		Short: "Mount an image read-only on MOUNTPOINT",
		Long: `Mount the merged layers of an image of the store, read-only, on MOUNTPOINT,
for a look inside, and serve it until it is unmounted: as 'strata mount' with
the image's layer directories as --layer, bottom first, and no upper.

It runs in the foreground and unmounts on SIGINT or SIGTERM; with --daemon it
returns once the image is mounted ('strata umount MOUNTPOINT' ends it). While
it is mounted, 'strata image rm' refuses to remove its layers.`,
		Example: `  strata image mount busybox:latest /mnt/busybox
  strata image mount --daemon busybox /mnt/busybox && ls /mnt/busybox && strata umount /mnt/busybox`,
		Args:         usageArgs(cobra.ExactArgs(2)),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := store.open()
			if err != nil {
				return err
			}
			// The layers stay marked in use while this process serves
			// them: 'strata image rm' refuses to pull them away.
			st, release, err := s.Use(args[0])
			if err != nil {
				return err
			}
			o.layers = slices.Clone(st.Lowers)
			slices.Reverse(o.layers) // --layer is bottom first
			for _, l := range o.layers {
				o.names = append(o.names, s.LayerName(l))
			}
			o.options = []string{"ro"}
			return errors.Join(o.run(cmd, args[1]), release())
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.daemon, "daemon", false, "return once mounted and serve in the background")
	f.BoolVar(&o.debug, "debug", false, "log every FUSE request (to stderr; nowhere with --daemon)")
	o.trace.addFlags(f)
	o.whiteout = "oci"
	return cmd
}
