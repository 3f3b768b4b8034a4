package cmd

import (
	"path/filepath"
	"strings"
)

// Alias rewrites the command line of strata run under another name into its
// own, so that tools which run fuse-overlayfs or a mount helper can run strata
// unchanged:
//
//   - as NAME ending in "overlayfs" (a symlink strata-overlayfs, say, given to
//     podman as mount_program): "NAME ARGS..." is "strata overlay ARGS...";
//   - as mount.fuse.strata (mount -t fuse.strata, /etc/fstab), which mount(8)
//     runs as "mount.fuse.strata SOURCE MOUNTPOINT [-o OPTIONS]...": the source
//     is a name for the mount table only, and this is
//     "strata overlay [-o OPTIONS]... MOUNTPOINT".
//
// Any other name, "strata" among them, leaves args as they are.
func Alias(args []string) []string {
	if len(args) == 0 {
		return args
	}
	name := filepath.Base(args[0])
	switch {
	case name == "mount.fuse.strata" || name == "mount.fuse3.strata":
		out := []string{args[0], "overlay"}
		var positional []string
		for i := 1; i < len(args); i++ {
			switch a := args[i]; {
			case a == "-o" && i+1 < len(args):
				out = append(out, "-o", args[i+1])
				i++
			case strings.HasPrefix(a, "-o"):
				out = append(out, "-o", a[2:])
			case a == "-n", a == "-s", a == "-v": // mount(8)'s: no mtab, sloppy, verbose
			default:
				positional = append(positional, a)
			}
		}
		if len(positional) == 2 { // SOURCE MOUNTPOINT
			positional = positional[1:]
		}
		return append(out, positional...)
	case strings.HasSuffix(name, "overlayfs"):
		return append([]string{args[0], "overlay"}, args[1:]...)
	}
	return args
}
