package cmd

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-fs/strata/internal/container"
	"github.com/strata-fs/strata/layers"
)

// NewCmdCommit returns `strata commit`.
func NewCmdCommit() *cobra.Command {
	var (
		store storeOptions
		upper string
		from  string
		opts  layers.CommitOptions
	)
	cmd := &cobra.Command{
		Use:   "commit CONTAINER | --upper DIR --from NAME[:TAG] [-t NEW[:TAG]]",
		Short: "Make a container's upper, or an upper directory, a new layer on top of an image",
		Long: `Write the upper directory of a union (what changed on top of an image) as a
layer tar, and store the image with that layer on top as a new image; print
its id.

The tar holds the upper's entries, sorted by name, with numeric owners, modes,
modification times and xattrs; whiteouts and opaque directories of both formats
(".wh." files, character devices 0/0, the overlay opaque xattr) are written as
".wh.NAME" and ".wh..wh..opq" entries, and hard links as tar links, so that any
OCI tool can apply it. With SOURCE_DATE_EPOCH set, it is the image's creation
time and caps every modification time of the layer: the same upper then always
gives the same image.

Given a CONTAINER (see 'strata run'), the upper is that container's and the
image the one it ran; the files of its init layer (/etc/hostname, /etc/hosts,
/etc/resolv.conf) are left out even where the container wrote them.

Unmount the union first (or stop writing to it, or stop the container): the
upper is read as it is.`,
		Example: `  strata commit web -t web:2
  strata commit --upper up --from busybox:latest -t mybusybox:1`,
		Args:         usageArgs(cobra.MaximumNArgs(1)),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if upper != "" || from != "" {
					return usagef(cmd, "give a container or --upper and --from, not both")
				}
				c, err := container.Open(store.root, args[0])
				if err != nil {
					return err
				}
				if c.Config.ImageID == "" {
					return usagef(cmd, "container %s runs on --layer directories, not an image: nothing to commit on top of", args[0])
				}
				upper, from = c.Upper(), c.Config.ImageID
				opts.Exclude = append(opts.Exclude, container.InitFiles...)
			}
			if upper == "" || from == "" {
				return usagef(cmd, "--upper and --from are required")
			}
			if fi, err := os.Stat(upper); err != nil || !fi.IsDir() {
				return usagef(cmd, "--upper %s: not a directory", upper)
			}
			if sde := os.Getenv("SOURCE_DATE_EPOCH"); sde != "" {
				sec, err := strconv.ParseInt(sde, 10, 64)
				if err != nil {
					return usagef(cmd, "SOURCE_DATE_EPOCH=%q: not a number of seconds", sde)
				}
				opts.Created, opts.Clamp = time.Unix(sec, 0).UTC(), true
			}
			s, err := store.open()
			if err != nil {
				return err
			}
			opts.Unpack.Privileged = os.Geteuid() == 0
			id, err := s.Commit(contextOf(cmd), upper, from, opts)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), id)
			return err
		},
	}
	store.addFlags(cmd)
	f := cmd.Flags()
	f.StringVar(&upper, "upper", "", "the upper `DIR` to commit")
	f.StringVar(&from, "from", "", "the `IMAGE` the upper was on top of (NAME[:TAG] or id)")
	f.StringArrayVarP(&opts.Tags, "tag", "t", nil, "tag the new image `NAME[:TAG]`; repeatable")
	f.StringVarP(&opts.Comment, "message", "m", "", "a `COMMENT` for the layer's history entry")
	f.StringArrayVar(&opts.Exclude, "exclude", nil, "a `PATH` of the upper (relative) to leave out; repeatable")
	return cmd
}
