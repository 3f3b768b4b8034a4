package cmd

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/mounts"
	"github.com/strata-fs/strata/layers"
)

// fsType is the type strata's mounts have in the mount table: "fuse." and the
// name unionfs gives the FUSE server.
const fsType = "fuse.strata"

// NewCmdUmount returns `strata umount`.
func NewCmdUmount() *cobra.Command {
	return &cobra.Command{
		Use:   "umount MOUNTPOINT",
		Short: "Unmount a strata union",
		Long: `Unmount the strata union mounted on MOUNTPOINT. The strata process serving it,
in the foreground or with --daemon, exits once it is unmounted.

A union still in use (an open file, a working directory inside it) is left
mounted, and umount fails with "device or resource busy". A union whose strata
process died answers everything with "transport endpoint is not connected";
umount detaches it lazily and says so. Mounts of other file systems are refused.

Exit status: 0 when unmounted or detached; 2 when MOUNTPOINT is not a strata
mount point; 1 for any other failure, such as a busy union.`,
		Example:      `  strata umount /mnt/merged`,
		Args:         usageArgs(cobra.ExactArgs(1)),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			mnt, err := mountpointPath(args[0])
			if err != nil {
				return err
			}
			res, err := mounts.Unmount(mnt, fsType)
			if errors.Is(err, unix.EBUSY) {
				return fmt.Errorf("%w: a process has a file or its working directory in it", err)
			}
			if err != nil {
				return err
			}
			if res == mounts.Detached {
				_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "strata: %s: its strata process was gone (transport endpoint is not connected); detached\n", mnt) // done either way
			}
			return nil
		},
	}
}

// mountpointPath makes p absolute and resolves its symlinks, as they are in
// the mount table. The mount point of a dead FUSE mount cannot be resolved (stat
// fails with ENOTCONN): then only its parent is.
func mountpointPath(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("mount point %q: %w", p, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if errors.Is(err, unix.ENOTCONN) {
		var dir string
		if dir, err = filepath.EvalSymlinks(filepath.Dir(abs)); err == nil {
			real = filepath.Join(dir, filepath.Base(abs))
		}
	}
	if errors.Is(err, os.ErrNotExist) {
		return "", &layers.Error{Role: "mount point", Path: abs, Err: layers.ErrNotExist}
	}
	if err != nil {
		return "", fmt.Errorf("mount point %q: %w", abs, err)
	}
	return real, nil
}
