package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/strata-fs/strata/cmd/strata/internal/daemon"
	"github.com/strata-fs/strata/internal/mounts"
	"github.com/strata-fs/strata/layers"
	"github.com/strata-fs/strata/unionfs"
	"github.com/strata-fs/strata/whiteout"
)

// mountOptions are the flags of `strata mount`.
type mountOptions struct {
	layers   []string // --layer, bottom first
	upper    string
	work     string
	options  []string // -o, each a comma-separated list
	whiteout string
	metacopy string // --metacopy: auto, on or off
	daemon   bool
	debug    bool
	trace    traceOptions
	// names label the layers (--layer order, bottom first) in traces and
	// in `strata layers`; nil names them by their directories.
	names []string
}

// NewCmdMount returns `strata mount`.
func NewCmdMount() *cobra.Command {
	var o mountOptions
	cmd := &cobra.Command{
		Use:   "mount [flags] MOUNTPOINT",
		Short: "Mount a union of layers on MOUNTPOINT",
		Long: `Mount a union of directory layers on MOUNTPOINT and serve it until it is
unmounted.

Name the layers either with --layer, bottom layer first and top layer last, as
the lines of a Dockerfile stack up, or in the kernel overlayfs spelling,
-o lowerdir=TOP:...:BOTTOM, top layer first. In lowerdir, "\:" and "\," stand
for a colon and a comma inside a path. Without an upper directory the union is
read-only. -o also takes FUSE mount options (ro, noatime, allow_other, ...),
which are passed on, "volatile", which skips the syncs of copied-up files, and
"lower_passthrough": lower files are handed to the kernel like upper files,
so their reads never reach strata, but a file opened on a lower layer before
its copy-up then keeps reading the lower layer's data as it was, as overlayfs
did before Linux 4.19 (without it, it reads what writers write, as overlayfs
does now). A read-only union always passes lower files through.

strata runs in the foreground and unmounts on SIGINT or SIGTERM; if the union
is busy then, it is detached and served until its last user leaves. With
--daemon it returns once the union answers requests, and runs on until
'strata umount MOUNTPOINT'.

Exit status: 0 once unmounted (foreground) or mounted (--daemon); 2 for a usage
error or a refused stack or mount point, with nothing mounted or changed, and
when a --daemon child fails before it is ready; 1 for any other failure.`,
		Example: `  # Top layer last, like a Dockerfile:
  strata mount --layer base --layer app --upper up --work wk /mnt/merged

  # The kernel overlayfs spelling, top layer first:
  strata mount -o lowerdir=app:base,upperdir=up,workdir=wk /mnt/merged

  # Read-only, in the background:
  strata mount --daemon -o ro,lowerdir=app:base /mnt/merged
  strata umount /mnt/merged`,
		Args:         usageArgs(cobra.ExactArgs(1)),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd, args[0])
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.layers, "layer", nil, "a read-only layer `DIR`; repeat, bottom layer first")
	f.StringVar(&o.upper, "upper", "", "the upper `DIR` that takes every change (none: read-only)")
	f.StringVar(&o.work, "work", "", "the work `DIR`, empty, on the upper's file system")
	f.StringArrayVarP(&o.options, "options", "o", nil, "mount `OPTIONS`: lowerdir=, upperdir=, workdir=, volatile, and FUSE options")
	f.StringVar(&o.whiteout, "whiteout", "oci", "whiteout `FORMAT` written to the upper: oci or overlay (both are read)")
	f.StringVar(&o.metacopy, "metacopy", "auto", "metadata-only copy-up of lower files on chmod, chown, utimes and xattr changes: on, off, or auto (on unless the upper is given with -o upperdir= or --whiteout is overlay, where other programs read the upper)")
	f.BoolVar(&o.daemon, "daemon", false, "return once mounted and serve in the background")
	f.BoolVar(&o.debug, "debug", false, "log every FUSE request (to stderr; nowhere with --daemon)")
	o.trace.addFlags(f)
	return cmd
}

// config reads the flags into a union configuration, its paths resolved and
// checked, and the mount point checked against it.
func (o *mountOptions) config(cmd *cobra.Command, mountpoint string) (unionfs.Config, string, error) {
	s, extra, err := layers.ParseOverlayOptions(strings.Join(o.options, ","))
	if err != nil {
		return unionfs.Config{}, "", err
	}
	if len(o.layers) > 0 {
		if len(s.Lowers) > 0 {
			return unionfs.Config{}, "", usagef(cmd, "give the layers with --layer or with -o lowerdir=, not both")
		}
		s.Lowers = slices.Clone(o.layers)
		slices.Reverse(s.Lowers) // --layer is bottom first, a Stack top first
	}
	names := slices.Clone(o.names)
	slices.Reverse(names)
	if len(s.Lowers) == 0 {
		return unionfs.Config{}, "", usagef(cmd, "no layers: give --layer DIR (bottom first) or -o lowerdir=TOP:...:BOTTOM")
	}
	if o.upper != "" {
		if s.Upper != "" {
			return unionfs.Config{}, "", usagef(cmd, "give the upper with --upper or with -o upperdir=, not both")
		}
		s.Upper = o.upper
	}
	if o.work != "" {
		if s.Work != "" {
			return unionfs.Config{}, "", usagef(cmd, "give the work dir with --work or with -o workdir=, not both")
		}
		s.Work = o.work
	}
	format, err := whiteout.ParseFormat(o.whiteout)
	if err != nil {
		return unionfs.Config{}, "", usagef(cmd, "--whiteout: %w", err)
	}
	// Metacopy files are strata's own format: where the upper is another
	// program's to read (the overlayfs spelling, the overlay whiteouts), it
	// gets whole files unless asked.
	var metacopy bool
	switch o.metacopy {
	case "on":
		metacopy = true
	case "off":
	case "auto", "":
		metacopy = o.upper != "" && format == whiteout.OCI
	default:
		return unionfs.Config{}, "", usagef(cmd, "--metacopy %q: want on, off or auto", o.metacopy)
	}
	return resolve(s, mountpoint, unionfs.Config{Whiteout: format, Options: extra, Debug: o.debug, Names: names, Metacopy: metacopy}, cmd.ErrOrStderr())
}

// resolve checks the stack s and the mount point against it, and fills cfg's
// directories with the resolved paths. A strata union whose process died,
// still mounted on the mount point, is detached first, with a note to stderr:
// a killed daemon leaves one behind, and it would refuse the new mount.
func resolve(s layers.Stack, mountpoint string, cfg unionfs.Config, stderr io.Writer) (unionfs.Config, string, error) {
	r, err := s.Resolve()
	if err != nil {
		return unionfs.Config{}, "", err
	}
	if err := clearDeadMount(mountpoint, stderr); err != nil {
		return unionfs.Config{}, "", err
	}
	mnt, err := layers.CheckMountpoint(mountpoint, r)
	if err != nil {
		return unionfs.Config{}, "", err
	}
	cfg.Lowers, cfg.Upper, cfg.Work, cfg.Volatile = r.Lowers, r.Upper, r.Work, r.Volatile
	cfg.LowerPassthrough = r.LowerPassthrough
	return cfg, mnt, nil
}

// clearDeadMount detaches a strata union whose process died from mountpoint,
// and says so. A live union there is left for CheckMountpoint to refuse.
func clearDeadMount(mountpoint string, stderr io.Writer) error {
	mnt, err := mountpointPath(mountpoint)
	if err != nil {
		return nil // CheckMountpoint says what is wrong with it
	}
	detached, err := mounts.DetachDead(mnt, fsType)
	if err != nil {
		return fmt.Errorf("mount point %s: clear a dead union: %w", mnt, err)
	}
	if detached {
		_, _ = fmt.Fprintf(stderr, "strata: %s: the strata process of the union mounted here was gone (transport endpoint is not connected); detached it\n", mnt) // a note; the mount goes on
	}
	return nil
}

func (o *mountOptions) run(cmd *cobra.Command, mountpoint string) error {
	return serveUnion(cmd, o.daemon, &o.trace, func() (unionfs.Config, string, error) {
		return o.config(cmd, mountpoint)
	})
}

// serveUnion mounts the union config describes and serves it until it is
// unmounted. With background set it returns as soon as the union answers
// requests, and a copy of this program, run again with the same arguments
// (os.Args), serves it. config is called in both processes: the input is
// checked before any child starts, so that its errors reach the terminal.
// trace (nil: no such flags) traces the union's decisions.
func serveUnion(cmd *cobra.Command, background bool, trace *traceOptions, config func() (unionfs.Config, string, error)) error {
	ctx := contextOf(cmd)
	if err := trace.check(cmd, background); err != nil {
		return err
	}
	var ready *daemon.Notifier
	if background {
		if ready = daemon.Child(); ready == nil {
			if _, _, err := config(); err != nil {
				return err
			}
			_, err := daemon.Start(ctx, os.Args[1:])
			return err
		}
	}
	cfg, mnt, err := config()
	if err == nil {
		err = ctx.Err() // interrupted before anything was mounted
	}
	closeTrace := func() error { return nil }
	if err == nil {
		cfg.Trace, closeTrace, err = trace.open(cmd)
	}
	defer func() { _ = closeTrace() }() // lines are written whole, one write each
	var srv *unionfs.Server
	if err == nil {
		srv, err = unionfs.Mount(mnt, cfg)
	}
	if ready != nil {
		if rerr := ready.Ready(err); rerr != nil && err == nil {
			// Nobody knows of this mount, or it cannot be served from
			// here: take it down again.
			return errors.Join(rerr, stop(srv, mnt, io.Discard))
		}
	}
	if err != nil {
		return err
	}
	if ready == nil {
		// A note for a person; the union is served whether it is read or not.
		_, _ = fmt.Fprintf(cmd.ErrOrStderr(), "strata: serving %s; stop with Ctrl-C or 'strata umount %s'\n", mnt, mnt)
	}
	return serve(ctx, srv, mnt, cmd.ErrOrStderr())
}

// serve serves the union until it is unmounted from outside, or until ctx ends
// (SIGINT, SIGTERM), when it unmounts it.
func serve(ctx context.Context, srv *unionfs.Server, mnt string, stderr io.Writer) error {
	done := make(chan struct{})
	go func() {
		srv.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil // unmounted from outside: strata umount, umount(8)
	case <-ctx.Done():
	}
	if err := stop(srv, mnt, stderr); err != nil {
		return err
	}
	<-done
	return nil
}

// stop unmounts the union; if it is busy, it detaches it, and the server goes
// on until the last user leaves.
func stop(srv *unionfs.Server, mnt string, stderr io.Writer) error {
	if srv == nil {
		return nil
	}
	err := srv.Unmount()
	if err == nil {
		return nil
	}
	_, _ = fmt.Fprintf(stderr, "strata: unmount %s: %v; detaching it, serving until its last user leaves\n", mnt, err) // a note; the detach below is what counts
	if derr := mounts.Detach(mnt); derr != nil {
		return errors.Join(fmt.Errorf("unmount %s: %w", mnt, err), derr)
	}
	return nil
}
