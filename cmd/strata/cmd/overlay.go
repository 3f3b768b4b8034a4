package cmd

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/strata-fs/strata/layers"
	"github.com/strata-fs/strata/unionfs"
	"github.com/strata-fs/strata/whiteout"
)

// overlayOptions are the flags of `strata overlay`: fuse-overlayfs's own.
type overlayOptions struct {
	options    []string // -o, each a comma-separated list
	foreground bool     // -f
	debug      bool     // -d, --debug
	trace      traceOptions
}

// NewCmdOverlay returns `strata overlay`, fuse-overlayfs's command line, for
// podman, buildah and CRI-O (containers/storage's mount_program). strata
// answers to it under any name ending in "overlayfs" too (see main).
func NewCmdOverlay(version string) *cobra.Command {
	var o overlayOptions
	cmd := &cobra.Command{
		Use:   "overlay [-f] [-d] -o OPTIONS MERGED",
		Short: "Mount a union with fuse-overlayfs's command line",
		Long: `Mount a union as fuse-overlayfs does, for tools that run it as their mount
program: -o lowerdir=TOP:...:BOTTOM,upperdir=U,workdir=W[,volatile] MERGED, top
layer first, "\," and "\:" escaping commas and colons in paths. Without
upperdir the union is read-only. It returns once the union answers requests
and serves it in the background, its output detached; -f serves in the
foreground.

Whiteouts are written in the kernel overlay format (0/0 character devices, the
trusted.overlay.opaque xattr, or user.overlay.* without privilege), which
containers/storage writes in its layers; ".wh." files are read too.

volatile skips the fsync of copied-up files, as overlayfs's volatile does: a
crash may lose changes. noatime, nodev, nosuid, fsync=0, static_nlink and noacl
are accepted and change nothing; ro and allow_other are passed to FUSE;
context= is accepted where SELinux does not run. Any other option is refused.

uidmapping=STORED:SHOWN:COUNT[:...] and gidmapping= show the owners stored in
the layers as other ids (and store a new owner back through the same map; an id
no range maps shows, and is stored, as 65534); squash_to_root, squash_to_uid=
and squash_to_gid= show every file as owned by one id.

xattr_permissions=1 (security.fuseoverlayfs.override_stat) or =2
(user.fuseoverlayfs.override_stat) keeps owners and modes in an xattr,
"UID:GID:MODE", for a daemon that cannot chown: regular files and directories
show the xattr's owner and mode where they have it; chown and chmod through the
union write it instead of changing the disk; new files and directories get it;
the xattr itself is hidden. Symlinks and special files keep the disk's owner
and mode: a chown or chmod of one that the daemon may not make is accepted and
changes nothing, as in fuse-overlayfs. 0 turns it off.`,
		Example: `  strata overlay -o lowerdir=/l/app:/l/base,upperdir=/c/diff,workdir=/c/work /c/merged
  ln -s "$(command -v strata)" /usr/local/bin/strata-overlayfs   # mount_program = "/usr/local/bin/strata-overlayfs"`,
		Version:      version,
		Args:         usageArgs(cobra.ExactArgs(1)),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return serveUnion(cmd, !o.foreground, &o.trace, func() (unionfs.Config, string, error) {
				return o.config(args[0], cmd.ErrOrStderr())
			})
		},
	}
	cmd.SetVersionTemplate("strata {{.Version}} (fuse-overlayfs command line)\n")
	f := cmd.Flags()
	f.StringArrayVarP(&o.options, "options", "o", nil, "mount `OPTIONS`: lowerdir=, upperdir=, workdir=, volatile, ...")
	f.BoolVarP(&o.foreground, "foreground", "f", false, "serve in the foreground")
	f.BoolVarP(&o.debug, "debug", "d", false, "log every FUSE request (to stderr, with -f)")
	o.trace.addFlags(f)
	return cmd
}

// config reads fuse-overlayfs's options into a union configuration, its paths
// resolved and checked, and the mount point checked against it.
func (o *overlayOptions) config(mountpoint string, stderr io.Writer) (unionfs.Config, string, error) {
	fo, err := layers.ParseFuseOverlay(strings.Join(o.options, ","))
	if err != nil {
		return unionfs.Config{}, "", err
	}
	if err := unsupported(fo); err != nil {
		return unionfs.Config{}, "", err
	}
	if len(fo.Lowers) == 0 {
		return unionfs.Config{}, "", fmt.Errorf("no lowerdir: %w", layers.ErrBadOption)
	}
	return resolve(fo.Stack, mountpoint, unionfs.Config{
		Whiteout:     whiteout.Overlay,
		Options:      fo.Options,
		IDs:          mapperOf(fo),
		StatOverride: statOverrideXattr(fo.XattrPermissions),
		Debug:        o.debug,
	}, stderr)
}

// idMapper is fuse-overlayfs's id mapping and squashing, for unionfs.
type idMapper struct{ fo layers.FuseOverlay }

// mapperOf returns the mapper fo asks for, or nil when it maps nothing.
func mapperOf(fo layers.FuseOverlay) unionfs.IDMapper {
	if len(fo.UIDMap) == 0 && len(fo.GIDMap) == 0 && !fo.SquashToRoot && fo.SquashUID < 0 && fo.SquashGID < 0 {
		return nil
	}
	return idMapper{fo}
}

// overflowID is what fuse-overlayfs shows for a stored id no range maps.
const overflowID = 65534

func (m idMapper) maps(uid bool) []layers.IDMap {
	if uid {
		return m.fo.UIDMap
	}
	return m.fo.GIDMap
}

func (m idMapper) Shown(stored uint32, uid bool) uint32 {
	switch {
	case uid && m.fo.SquashUID >= 0:
		return uint32(m.fo.SquashUID)
	case !uid && m.fo.SquashGID >= 0:
		return uint32(m.fo.SquashGID)
	case m.fo.SquashToRoot:
		return 0
	}
	if id, ok := layers.ToShown(m.maps(uid), stored); ok {
		return id
	}
	return overflowID
}

func (m idMapper) Stored(shown uint32, uid bool) (uint32, bool) {
	return layers.ToStored(m.maps(uid), shown)
}

// statOverrideXattr is the xattr fuse-overlayfs's xattr_permissions=n names
// (ParseFuseOverlay took only 0, 1 and 2).
func statOverrideXattr(n int) string {
	switch n {
	case 1:
		return unionfs.OverrideXattrPrivileged
	case 2:
		return unionfs.OverrideXattrUser
	}
	return ""
}

// unsupported refuses what strata reads but does not do yet, naming it.
func unsupported(fo layers.FuseOverlay) error {
	if fo.Context != "" && selinuxRuns() {
		return fmt.Errorf("option context: %w: not supported by strata yet", layers.ErrBadOption)
	}
	return nil
}

// selinuxRuns reports whether SELinux runs here: only then does a context=
// label mean anything.
func selinuxRuns() bool {
	_, err := os.Stat("/sys/fs/selinux/enforce")
	return err == nil
}
