package cmd

import (
	"fmt"

	"github.com/spf13/cobra"
)

// NewCmdImageRm returns `strata image rm`.
func NewCmdImageRm(store *storeOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME[:TAG]|ID...",
		Aliases: []string{"remove"},
		Short:   "Remove images, and the layers no other image uses",
		Long: `Remove a tag. Once no tag names an image (or when it is named by its id), the
image goes, with the layers and blobs that no other image of the store uses.
Prints "Untagged: NAME:TAG" and "Deleted: ID" as it goes.

An image whose layers a 'strata image mount' serves is not removed (exit
status 1): unmount it first. Only its tag goes when other tags remain, and a
layer another image has stays.`,
		Example:      `  strata image rm busybox:latest`,
		Args:         usageArgs(cobra.MinimumNArgs(1)),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := store.open()
			if err != nil {
				return err
			}
			for _, ref := range args {
				id, err := s.Remove(ref)
				if err != nil {
					return err
				}
				if id.Hex == "" {
					_, err = fmt.Fprintf(cmd.OutOrStdout(), "Untagged: %s\n", ref)
				} else {
					_, err = fmt.Fprintf(cmd.OutOrStdout(), "Deleted: %s\n", id)
				}
				if err != nil {
					return err
				}
			}
			return nil
		},
	}
}
