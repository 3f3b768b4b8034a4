package cmd

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/strata-fs/strata/internal/container"
	"github.com/strata-fs/strata/layers"
)

// diffOptions are the flags of `strata diff`.
type diffOptions struct {
	layers  []string // --layer, bottom first
	upper   string
	options []string // -o, as strata mount reads it
	format  string
	store   storeOptions
}

// NewCmdDiff returns `strata diff`.
func NewCmdDiff() *cobra.Command {
	var o diffOptions
	cmd := &cobra.Command{
		Use:   "diff [flags] --upper DIR (--layer DIR ... | -o lowerdir=TOP:...:BOTTOM) | diff CONTAINER",
		Short: "Show what an upper directory changes against the layers below it",
		Long: `Show what an upper directory changes against the layers below it, as
'docker diff' does: one line per path, sorted, "A" for added, "C" for changed
(copied up, replaced, or a directory whose attributes or entries changed), "D"
for deleted (hidden by a whiteout). Below an added directory every entry is
listed; below a deleted one none is. A directory made opaque over a lower one
shows as "D" (all it held is hidden), and what the upper holds in it as "A".

Name the layers as 'strata mount' does: --layer, bottom layer first, or
-o lowerdir=TOP:...:BOTTOM; the upper with --upper or -o upperdir= (workdir= is
accepted and not needed). Whiteouts of both formats are read. The upper may be
mounted meanwhile: the diff is then of some moment during the walk.

With CONTAINER, a container of 'strata run' (running or not) under --root:
its upper against its init layer and its image's layers, as 'docker diff'
shows a container. /etc/hostname, /etc/hosts and /etc/resolv.conf, which the
init layer holds for this run, show only when the container changed them.

Exit status: 0 with the diff printed (even if empty); 2 for a usage error, a
refused layer or an unknown container; 1 for any other failure.`,
		Example: `  strata diff --layer base --layer app --upper up
  strata diff -o lowerdir=app:base,upperdir=up
  strata diff --format json --layer base --upper up
  strata diff web`,
		Args:         usageArgs(cobra.MaximumNArgs(1)),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				return o.container(cmd, args[0])
			}
			return o.run(cmd)
		},
	}
	o.store.addFlags(cmd)
	f := cmd.Flags()
	f.StringArrayVar(&o.layers, "layer", nil, "a read-only layer `DIR`; repeat, bottom layer first")
	f.StringVar(&o.upper, "upper", "", "the upper `DIR` to diff")
	f.StringArrayVarP(&o.options, "options", "o", nil, "`OPTIONS` in the kernel overlayfs spelling: lowerdir=, upperdir= (workdir= is ignored)")
	f.StringVar(&o.format, "format", "text", "output `FORMAT`: text (\"A /path\" lines) or json")
	return cmd
}

// stack reads the flags into a resolved stack (its work directory aside).
func (o *diffOptions) stack(cmd *cobra.Command) (layers.Stack, error) {
	s, _, err := layers.ParseOverlayOptions(strings.Join(o.options, ","))
	if err != nil {
		return layers.Stack{}, err
	}
	if len(o.layers) > 0 {
		if len(s.Lowers) > 0 {
			return layers.Stack{}, usagef(cmd, "give the layers with --layer or with -o lowerdir=, not both")
		}
		s.Lowers = slices.Clone(o.layers)
		slices.Reverse(s.Lowers) // --layer is bottom first, a Stack top first
	}
	if o.upper != "" {
		if s.Upper != "" {
			return layers.Stack{}, usagef(cmd, "give the upper with --upper or with -o upperdir=, not both")
		}
		s.Upper = o.upper
	}
	switch {
	case len(s.Lowers) == 0:
		return layers.Stack{}, usagef(cmd, "no layers: give --layer DIR (bottom first) or -o lowerdir=TOP:...:BOTTOM")
	case s.Upper == "":
		return layers.Stack{}, usagef(cmd, "no upper: give --upper DIR, or a CONTAINER")
	}
	// The work directory plays no part in a diff; Resolve wants one with
	// an upper, so check the upper as a layer would be.
	upper := s.Upper
	s.Upper, s.Work = "", ""
	r, err := s.Resolve()
	if err != nil {
		return layers.Stack{}, err
	}
	u, err := layers.Stack{Lowers: []string{upper}}.Resolve()
	if err != nil {
		var le *layers.Error
		if errors.As(err, &le) {
			le.Role = "upper"
		}
		return layers.Stack{}, err
	}
	r.Upper = u.Lowers[0]
	return r, nil
}

func (o *diffOptions) run(cmd *cobra.Command) error {
	if o.format != "text" && o.format != "json" {
		return usagef(cmd, "--format %q: want text or json", o.format)
	}
	s, err := o.stack(cmd)
	if err != nil {
		return err
	}
	changes, err := layers.Diff(s.Upper, s.Lowers)
	if err != nil {
		return err
	}
	return printChanges(cmd, changes, o.format)
}

// container diffs a container of `strata run`: its upper against its lowers,
// the init layer on top of the image's. The init layer's files are below the
// upper like any lower's, so they show only where the container wrote them.
func (o *diffOptions) container(cmd *cobra.Command, name string) error {
	if o.upper != "" || len(o.layers) > 0 || len(o.options) > 0 {
		return usagef(cmd, "give either a CONTAINER or --upper and the layers, not both")
	}
	if o.format != "text" && o.format != "json" {
		return usagef(cmd, "--format %q: want text or json", o.format)
	}
	c, err := container.Open(o.store.root, name)
	if err != nil {
		return err // container.ErrNotFound: exit 2
	}
	changes, err := layers.Diff(c.Upper(), c.Lowers())
	if err != nil {
		return err
	}
	return printChanges(cmd, changes, o.format)
}

func printChanges(cmd *cobra.Command, changes []layers.Change, format string) error {
	out := cmd.OutOrStdout()
	if format == "json" {
		if changes == nil {
			changes = []layers.Change{}
		}
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(changes)
	}
	var b strings.Builder
	for _, c := range changes {
		b.WriteString(c.String())
		b.WriteByte('\n')
	}
	_, err := fmt.Fprint(out, b.String())
	return err
}
