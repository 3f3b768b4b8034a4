package cmd

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// NewCmdImageLs returns `strata image ls`.
func NewCmdImageLs(store *storeOptions) *cobra.Command {
	var (
		quiet  bool
		format string
	)
	cmd := &cobra.Command{
		Use:     "ls [flags]",
		Aliases: []string{"list"},
		Short:   "List the images of the store",
		Long: `List the images of the store, newest first: name, tag, image id, number of
layers, size (of the unpacked layers) and creation time. An image with several
tags shows once per tag; one without any shows as <none>.`,
		Example: `  strata image ls
  strata image ls -q
  strata image ls --format json`,
		Args:         usageArgs(cobra.NoArgs),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "" && format != "json" && format != "table" {
				return usagef(cmd, "--format %q: want table or json", format)
			}
			s, err := store.open()
			if err != nil {
				return err
			}
			imgs, err := s.Images()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if quiet {
				for _, img := range imgs {
					if _, err := fmt.Fprintln(out, shortID(img.ID.Hex)); err != nil {
						return err
					}
				}
				return nil
			}
			type row struct {
				Repository   string `json:"Repository"`
				Tag          string `json:"Tag"`
				ID           string `json:"ID"`
				Layers       int    `json:"Layers"`
				Size         string `json:"Size"`
				CreatedAt    string `json:"CreatedAt"`
				CreatedSince string `json:"CreatedSince"`
			}
			var rows []row
			now := time.Now()
			for _, img := range imgs {
				tags := img.Tags
				if len(tags) == 0 {
					tags = []string{"<none>:<none>"}
				}
				for _, t := range tags {
					i := strings.LastIndexByte(t, ':')
					rows = append(rows, row{
						Repository: t[:i], Tag: t[i+1:], ID: shortID(img.ID.Hex), Layers: len(img.Layers),
						Size: humanSize(img.Size), CreatedAt: img.Created.UTC().Format(time.RFC3339),
						CreatedSince: since(now, img.Created),
					})
				}
			}
			if format == "json" {
				enc := json.NewEncoder(out)
				for _, r := range rows {
					if err := enc.Encode(r); err != nil {
						return err
					}
				}
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
			// tabwriter buffers: Flush reports a failed write.
			_, _ = fmt.Fprintln(tw, "REPOSITORY\tTAG\tIMAGE ID\tLAYERS\tSIZE\tCREATED")
			for _, r := range rows {
				_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", r.Repository, r.Tag, r.ID, r.Layers, r.Size, r.CreatedSince)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print image ids only")
	cmd.Flags().StringVar(&format, "format", "", "`table` (default) or json: one JSON object per line")
	return cmd
}

func shortID(hex string) string { return hex[:min(12, len(hex))] }

// humanSize spells n bytes as docker does: SI units, three significant
// digits.
func humanSize(n int64) string {
	units := []string{"B", "kB", "MB", "GB", "TB", "PB"}
	f := float64(n)
	i := 0
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	return strings.TrimSuffix(strings.TrimSuffix(fmt.Sprintf("%.3g", f), ".0"), ".") + units[i]
}

// since spells how long ago t was: "3 days ago".
func since(now, t time.Time) string {
	if t.IsZero() {
		return "N/A"
	}
	d := now.Sub(t)
	plural := func(n int, unit string) string {
		if n == 1 {
			return fmt.Sprintf("1 %s ago", unit)
		}
		return fmt.Sprintf("%d %ss ago", n, unit)
	}
	switch {
	case d < time.Minute:
		return "less than a minute ago"
	case d < time.Hour:
		return plural(int(d.Minutes()), "minute")
	case d < 48*time.Hour:
		return plural(int(d.Hours()), "hour")
	case d < 14*24*time.Hour:
		return plural(int(d.Hours()/24), "day")
	case d < 60*24*time.Hour:
		return plural(int(d.Hours()/24/7), "week")
	case d < 2*365*24*time.Hour:
		return plural(int(d.Hours()/24/30), "month")
	}
	return plural(int(d.Hours()/24/365), "year")
}
