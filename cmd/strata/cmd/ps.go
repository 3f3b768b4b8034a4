package cmd

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/strata-fs/strata/internal/container"
)

// psEntry is one line of `strata ps`, and one object of --format json.
type psEntry struct {
	Name     string `json:"name"`
	ID       string `json:"id"`
	Pid      int    `json:"pid,omitempty"`
	Image    string `json:"image"`
	Command  string `json:"command"`
	Status   string `json:"status"`
	ExitCode *int   `json:"exitCode,omitempty"`
	Created  string `json:"created"`
	Uptime   string `json:"uptime,omitempty"`
	// Memory is the memory use in bytes, -1 when unknown.
	Memory int64 `json:"memory"`
}

// NewCmdPs returns `strata ps`.
func NewCmdPs() *cobra.Command {
	var (
		store  storeOptions
		all    bool
		quiet  bool
		format string
	)
	cmd := &cobra.Command{
		Use:   "ps [-a] [-q] [--format table|json]",
		Short: "List containers",
		Long: `List the running containers: name, host pid of the first process, image,
status, uptime and memory use (from the container's cgroup, without the page
cache that can be dropped at once). -a lists stopped ones too. A container
whose strata process died (killed, crashed) is cleaned up on the way: its dead
mount is detached, its cgroup removed, and it is listed as exited (-1).`,
		Example: `  strata ps
  strata ps -a --format json
  strata rm $(strata ps -aq)`,
		Args:         usageArgs(cobra.NoArgs),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "table" && format != "json" {
				return usagef(cmd, "--format %q: want table or json", format)
			}
			cs, err := container.List(store.root)
			if err != nil {
				return err
			}
			var list []psEntry
			for _, c := range cs {
				e, err := entryOf(c)
				if err != nil {
					return err
				}
				if e.Status != string(container.Running) && !all {
					continue
				}
				list = append(list, e)
			}
			out := cmd.OutOrStdout()
			switch {
			case quiet:
				for _, e := range list {
					if _, err := fmt.Fprintln(out, e.Name); err != nil {
						return err
					}
				}
				return nil
			case format == "json":
				if list == nil {
					list = []psEntry{}
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
			_, _ = fmt.Fprintln(tw, "NAME\tPID\tIMAGE\tCOMMAND\tSTATUS\tUPTIME\tMEMORY")
			for _, e := range list {
				pid, mem, status := "-", "-", e.Status
				if e.Pid != 0 {
					pid = fmt.Sprint(e.Pid)
				}
				if e.Memory >= 0 {
					mem = humanBytes(e.Memory)
				}
				if e.ExitCode != nil {
					status = fmt.Sprintf("%s (%d)", e.Status, *e.ExitCode)
				}
				uptime := e.Uptime
				if uptime == "" {
					uptime = "-"
				}
				_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Name, pid, e.Image, e.Command, status, uptime, mem)
			}
			return tw.Flush()
		},
	}
	store.addFlags(cmd)
	f := cmd.Flags()
	f.BoolVarP(&all, "all", "a", false, "list stopped containers too")
	f.BoolVarP(&quiet, "quiet", "q", false, "print the names only")
	f.StringVar(&format, "format", "table", "output `FORMAT`: table or json")
	return cmd
}

func entryOf(c *container.Container) (psEntry, error) {
	st, err := c.State()
	if err != nil {
		return psEntry{}, err
	}
	cfg := c.Config
	e := psEntry{
		Name: cfg.Name, ID: cfg.ID, Image: cfg.Image, Status: string(st.Status),
		Command: truncate(strings.Join(cfg.Args, " "), 30), Created: cfg.Created.Format(time.RFC3339), Memory: -1,
	}
	if e.Image == "" {
		e.Image = "(layers)"
	}
	switch st.Status {
	case container.Running:
		e.Pid = st.Pid
		e.Uptime = time.Since(st.Started).Round(time.Second).String()
		if cg, err := c.Cgroup(); err == nil {
			if m, err := cg.MemoryUsage(); err == nil {
				e.Memory = m
			}
			_ = cg.Close() // a look only
		}
	case container.Exited:
		code := st.ExitCode
		e.ExitCode = &code
		if st.OOMKilled {
			e.Status = "exited, out of memory"
		}
	}
	return e, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1fGiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%dB", n)
}
