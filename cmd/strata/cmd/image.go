package cmd

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/strata-fs/strata/layers"
)

// defaultRoot is the image store's directory unless --root or $STRATA_ROOT
// says otherwise.
const defaultRoot = "/var/lib/strata"

// storeOptions are the flags every command on the image store takes.
type storeOptions struct {
	root string
}

func (o *storeOptions) addFlags(cmd *cobra.Command) {
	def := os.Getenv("STRATA_ROOT")
	if def == "" {
		def = defaultRoot
	}
	cmd.PersistentFlags().StringVar(&o.root, "root", def, "the image store `DIR` ($STRATA_ROOT)")
}

func (o *storeOptions) open() (*layers.Store, error) {
	return layers.OpenStore(o.root)
}

// NewCmdImage returns `strata image` and its subcommands.
func NewCmdImage() *cobra.Command {
	var o storeOptions
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Import, list, inspect, mount, save and remove container images",
		Long: `Manage the image store: container images kept as the layer directories that
a union stacks. Each layer is unpacked once, keyed by its diff_id, and shared by
every image that has it. The store is under --root (default /var/lib/strata, or
$STRATA_ROOT); README.md describes its layout.`,
		Example: `  strata image import busybox.tar
  strata image import ./oci-layout:1.0
  strata image ls
  strata image mount busybox /mnt/busybox`,
		Args:         usageArgs(cobra.NoArgs),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	o.addFlags(cmd)
	cmd.AddCommand(NewCmdImageImport(&o), NewCmdImageLs(&o), NewCmdImageInspect(&o), NewCmdImageRm(&o), NewCmdImageSave(&o), NewCmdImageMount(&o))
	return cmd
}
