package cmd

import (
	"encoding/json"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/strata-fs/strata/layers"
)

// inspected is what `strata image inspect` prints for one image.
type inspected struct {
	ID           string       `json:"Id"`
	RepoTags     []string     `json:"RepoTags"`
	Manifest     string       `json:"Manifest"`
	Created      time.Time    `json:"Created"`
	Architecture string       `json:"Architecture"`
	OS           string       `json:"Os"`
	Size         int64        `json:"Size"`
	Config       v1.Config    `json:"Config"`
	Layers       []layerInfo  `json:"Layers"`
	History      []v1.History `json:"History,omitempty"`
}

type layerInfo struct {
	layers.LayerRecord
	Dir string `json:"dir"`
}

// NewCmdImageInspect returns `strata image inspect`.
func NewCmdImageInspect(store *storeOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME[:TAG]|ID...",
		Short: "Show images' configs and layers as JSON",
		Long: `Print a JSON array with one object per image: its id, tags, manifest digest,
platform, config (Entrypoint, Cmd, Env, WorkingDir, User, ...), and its layers,
bottom first, each with its diff_id, blob digest and media type, sizes, and the
directory it is unpacked in.`,
		Example:      `  strata image inspect busybox:latest`,
		Args:         usageArgs(cobra.MinimumNArgs(1)),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := store.open()
			if err != nil {
				return err
			}
			var out []inspected
			for _, ref := range args {
				img, err := s.Image(ref)
				if err != nil {
					return err
				}
				cfg, err := s.Config(img.ID)
				if err != nil {
					return err
				}
				in := inspected{
					ID: img.ID.String(), RepoTags: img.Tags, Manifest: img.Manifest.String(),
					Created: cfg.Created.Time, Architecture: cfg.Architecture, OS: cfg.OS,
					Size: img.Size, Config: cfg.Config, History: cfg.History,
				}
				if in.RepoTags == nil {
					in.RepoTags = []string{}
				}
				for _, l := range img.Layers {
					in.Layers = append(in.Layers, layerInfo{LayerRecord: l, Dir: s.LayerDir(l.DiffID)})
				}
				out = append(out, in)
			}
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(out)
		},
	}
}
