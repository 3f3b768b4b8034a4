package cmd

import (
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/strata-fs/strata/layers"
)

// NewCmdImageImport returns `strata image import`.
func NewCmdImageImport(store *storeOptions) *cobra.Command {
	var opts layers.ImportOptions
	cmd := &cobra.Command{
		Use:   "import [flags] ARCHIVE|LAYOUT[:TAG|@DIGEST]",
		Short: "Import a docker-archive or an OCI image layout into the store",
		Long: `Import an image: a docker-archive file (docker save, podman save) or an OCI
image layout directory (one holding index.json), optionally followed by :TAG or
@sha256:DIGEST to pick one of its images. A multi-platform index yields the
manifest of --platform (default: this host's).

Layers may be gzip, zstd or uncompressed tars. Every digest is checked: blobs,
the manifest, the config and each layer's diff_id. Layers the store has are not
unpacked again. On any failure the store is left as it was.

The image is tagged with -t, or with the names the archive gives (RepoTags of a
docker archive; DIR:REF for the org.opencontainers.image.ref.name REF of a
layout). It prints the image id.`,
		Example: `  strata image import busybox.tar
  strata image import ./oci-layout:1.0 -t myimage:1.0
  strata image import --platform linux/arm64 ./multi-arch`,
		Args:         usageArgs(cobra.ExactArgs(1)),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := store.open()
			if err != nil {
				return err
			}
			opts.Unpack.Privileged = os.Geteuid() == 0
			opts.Progress = newProgress(cmd.ErrOrStderr())
			id, err := s.Import(contextOf(cmd), args[0], opts)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), id)
			return err
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&opts.Tags, "tag", "t", nil, "tag the image `NAME[:TAG]`; repeatable")
	f.StringVar(&opts.Platform, "platform", "", "the `OS/ARCH[/VARIANT]` to import (default: this host's)")
	return cmd
}

// newProgress shows a bar per layer on a terminal, a line per layer
// otherwise.
func newProgress(w io.Writer) layers.Progress {
	f, ok := w.(*os.File)
	return &progress{w: w, tty: ok && term.IsTerminal(int(f.Fd()))}
}

type progress struct {
	w   io.Writer
	tty bool
}

func (p *progress) Layer(i, n int, diffID v1.Hash, size int64) layers.LayerProgress {
	desc := fmt.Sprintf("layer %d/%d %.19s", i, n, diffID.String())
	if !p.tty {
		return &lineProgress{w: p.w, desc: desc}
	}
	bar := progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100_000_000), // 100ms
		progressbar.OptionClearOnFinish(),
	)
	return &barProgress{bar: bar, w: p.w, desc: desc}
}

type barProgress struct {
	bar  *progressbar.ProgressBar
	w    io.Writer
	desc string
}

func (b *barProgress) Write(p []byte) (int, error) { return b.bar.Write(p) }

func (b *barProgress) Done(status string, err error) {
	_ = b.bar.Finish() // the line below says how it ended
	if err == nil {
		_, _ = fmt.Fprintf(b.w, "%s: %s\n", b.desc, status) // a note for a person
	}
}

type lineProgress struct {
	w    io.Writer
	desc string
	n    int64
}

func (l *lineProgress) Write(p []byte) (int, error) {
	l.n += int64(len(p))
	return len(p), nil
}

func (l *lineProgress) Done(status string, err error) {
	switch {
	case err != nil:
	case l.n == 0:
		_, _ = fmt.Fprintf(l.w, "%s: %s\n", l.desc, status) // a note for a person
	default:
		_, _ = fmt.Fprintf(l.w, "%s: %s (%s read)\n", l.desc, status, humanSize(l.n)) // a note for a person
	}
}
