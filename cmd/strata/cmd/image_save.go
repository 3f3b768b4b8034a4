package cmd

import (
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// NewCmdImageSave returns `strata image save`.
func NewCmdImageSave(store *storeOptions) *cobra.Command {
	var out, format string
	cmd := &cobra.Command{
		Use:   "save NAME[:TAG]|ID -o OUT [--format docker|oci]",
		Short: "Write an image as a docker-archive or into an OCI image layout",
		Long: `Write an image of the store as it was imported or committed, blob for blob:
a docker-archive file (docker load, podman load, strata image import) by
default, or with --format oci an OCI image layout directory, created if need
be, where the image is added under its tag (org.opencontainers.image.ref.name).
Either imports back to the same image id.

Without -o, a docker-archive goes to standard output, unless that is a
terminal.`,
		Example: `  strata image save busybox:latest -o busybox.tar
  strata image save busybox:latest --format oci -o ./layout
  umoci stat --image ./layout:latest`,
		Args:         usageArgs(cobra.ExactArgs(1)),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := store.open()
			if err != nil {
				return err
			}
			switch format {
			case "oci":
				if out == "" {
					return usagef(cmd, "--format oci needs -o DIR")
				}
				return s.SaveLayout(args[0], out)
			case "docker", "docker-archive":
				if out != "" && out != "-" {
					return s.SaveArchiveFile(args[0], out)
				}
				w := cmd.OutOrStdout()
				if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
					return usagef(cmd, "refusing to write an archive to a terminal: give -o FILE")
				}
				return s.SaveArchive(args[0], w)
			}
			return usagef(cmd, "--format %q: want docker or oci", format)
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "the `FILE` (docker) or directory (oci) to write")
	cmd.Flags().StringVar(&format, "format", "docker", "`docker` (a docker-archive) or oci (an OCI image layout)")
	return cmd
}
