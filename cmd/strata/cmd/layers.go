package cmd

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/mounts"
	"github.com/strata-fs/strata/layers"
	"github.com/strata-fs/strata/unionfs"
)

// NewCmdLayers returns `strata layers`.
func NewCmdLayers() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "layers [flags] MOUNTPOINT",
		Short: "Show the stack of layers behind a live strata mount",
		Long: `Show the stack behind the strata union mounted on MOUNTPOINT, however it was
mounted (strata mount, --daemon, strata image mount, strata overlay): each
layer by index (0 the upper, then the lowers, top first), its role, name (an
image layer's short diff_id) and directory; the whiteout format written to the
upper, the work directory, and what the upper holds (bytes on disk, entries,
whiteouts, opaque directories).

The serving strata process tells it: the stack is the read-only xattr
` + unionfs.StackXattr + ` of the mount's root.

Exit status: 0 with the stack printed; 2 when MOUNTPOINT is not a strata mount
point; 1 for any other failure (a strata process that is gone, say).`,
		Example: `  strata layers /mnt/merged
  strata layers --format json /mnt/merged`,
		Args:         usageArgs(cobra.ExactArgs(1)),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "text" && format != "json" {
				return usagef(cmd, "--format %q: want text or json", format)
			}
			st, err := mountedStackArg(args[0])
			if err != nil {
				return err
			}
			return printStack(cmd, st, format)
		},
	}
	cmd.Flags().StringVar(&format, "format", "text", "output `FORMAT`: text or json")
	return cmd
}

// mountedStack describes a live mount: what its server says, and the usage
// of its upper.
type mountedStack struct {
	Mountpoint string `json:"mountpoint"`
	unionfs.StackInfo
	Upper *layers.Usage `json:"upper_usage,omitempty"`
}

// askTimeout bounds the wait for a server's answer: one that hangs must not
// hang `strata layers` too.
const askTimeout = 5 * time.Second

func mountedStackOf(mnt string) (mountedStack, error) {
	m, ok, err := mounts.Lookup(mnt)
	if err != nil {
		return mountedStack{}, err
	}
	if !ok {
		return mountedStack{}, fmt.Errorf("%s: %w", mnt, mounts.ErrNotMounted)
	}
	if m.FSType != fsType {
		return mountedStack{}, fmt.Errorf("%s: %w: type %s, not %s", mnt, mounts.ErrForeign, m.FSType, fsType)
	}
	type answer struct {
		v   []byte
		err error
	}
	res := make(chan answer, 1)
	go func() {
		v, err := getxattr(mnt, unionfs.StackXattr)
		res <- answer{v, err}
	}()
	var a answer
	select {
	case a = <-res:
	case <-time.After(askTimeout):
		return mountedStack{}, fmt.Errorf("%s: %w", mnt, mounts.ErrNoAnswer)
	}
	switch {
	case errors.Is(a.err, unix.ENOTCONN):
		return mountedStack{}, fmt.Errorf("%s: its strata process is gone (transport endpoint is not connected; 'strata umount' detaches it)", mnt)
	case errors.Is(a.err, unix.ENODATA):
		return mountedStack{}, fmt.Errorf("%s: %w: its server does not describe its stack (an older strata?)", mnt, mounts.ErrForeign)
	case a.err != nil:
		return mountedStack{}, fmt.Errorf("%s: read stack: %w", mnt, a.err)
	}
	st := mountedStack{Mountpoint: mnt}
	if err := json.Unmarshal(a.v, &st.StackInfo); err != nil {
		return mountedStack{}, fmt.Errorf("%s: read stack: %w", mnt, err)
	}
	for _, l := range st.Layers {
		if l.Role == "upper" {
			u, err := layers.UpperUsage(l.Path)
			if err != nil {
				return mountedStack{}, err
			}
			st.Upper = &u
		}
	}
	return st, nil
}

// getxattr reads an xattr of path whole, following a symlink (a mount point
// is reached as the kernel resolves it).
func getxattr(path, name string) ([]byte, error) {
	for size := 4 << 10; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Getxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

func mountedStackArg(arg string) (mountedStack, error) {
	mnt, err := mountpointPath(arg)
	if err != nil {
		return mountedStack{}, err
	}
	return mountedStackOf(mnt)
}

func printStack(cmd *cobra.Command, st mountedStack, format string) error {
	out := cmd.OutOrStdout()
	if format == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tROLE\tNAME\tPATH")
	for _, l := range st.Layers {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", l.Index, l.Role, l.Name, l.Path)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(&b, "\n%s: served by pid %d", st.Mountpoint, st.Pid)
	if st.Upper == nil {
		b.WriteString("; read-only (no upper)\n")
	} else {
		fmt.Fprintf(&b, "; work dir %s\n", st.Work)
		fmt.Fprintf(&b, "whiteouts written as %s (.wh. files and overlay 0/0 devices are both read)", st.Whiteout)
		if st.Volatile {
			b.WriteString("; volatile: copy-ups not synced")
		}
		fmt.Fprintf(&b, "\nupper: %s on disk in %d entries (whiteouts: %d, opaque directories: %d)\n",
			unionfs.FormatBytes(st.Upper.Bytes), st.Upper.Entries, st.Upper.Whiteouts, st.Upper.Opaque)
	}
	_, err := fmt.Fprint(out, b.String())
	return err
}
