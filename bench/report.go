package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Report is the outcome of a Run: a row per measurement and system.
type Report struct {
	Date  time.Time `json:"date"`
	Host  Host      `json:"host"`
	Quick bool      `json:"quick"`
	// Runs is the number of runs of each measurement on each system, or
	// with a Budget (seconds), the most.
	Runs    int            `json:"runs"`
	Budget  float64        `json:"budget,omitempty"`
	Sizes   Sizes          `json:"sizes"`
	Systems []SystemResult `json:"systems"`
	Notes   []string       `json:"notes,omitempty"`
	Rows    []Row          `json:"rows"`
	// Elapsed is the time of the whole run, in seconds: fixtures, mounts
	// and cleanup included.
	Elapsed float64 `json:"elapsed,omitempty"`
}

// Host is the machine a report was made on.
type Host struct {
	Kernel string `json:"kernel"`
	CPUs   int    `json:"cpus"`
	Memory uint64 `json:"memory"` // bytes
}

// SystemResult is a system asked for: its version, or why it was skipped.
type SystemResult struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
	Skipped string `json:"skipped,omitempty"`
}

// Row is one measurement on one system.
type Row struct {
	Measure  string `json:"measure"` // "stat-walk cold"
	Workload string `json:"workload"`
	System   string `json:"system"`
	// Unit is "s" for a time (lower is better), or the name of a rate of
	// Ops per second ("IOPS", higher is better).
	Unit string `json:"unit"`
	// Seconds is the time of each run.
	Seconds []float64 `json:"seconds"`
	// Ops is the number of operations of one run, for a rate.
	Ops int64 `json:"ops,omitempty"`
	// Error is why the measurement failed on this system.
	Error string `json:"error,omitempty"`

	// Set by Summarize, in Unit. Best is the least time or the highest
	// rate.
	Best   float64 `json:"best"`
	Median float64 `json:"median"`
	// XOverlay and XDisk are Median divided by kernel overlayfs's and the
	// disk's Median on the same measurement; 0 when there is none.
	XOverlay float64 `json:"x_overlay,omitempty"`
	XDisk    float64 `json:"x_disk,omitempty"`
}

// rate says whether the row is a rate: higher is better.
func (r *Row) rate() bool { return r.Unit != "s" }

// TimeXOverlay is the row's median time over overlay's: above 1 is slower,
// for a rate as for a time. 0 when there is no ratio.
func (r *Row) TimeXOverlay() float64 {
	if r.XOverlay == 0 || !r.rate() {
		return r.XOverlay
	}
	return 1 / r.XOverlay
}

// Summarize sets the Best, Median and ratios of every row from Seconds and
// Ops.
func (rep *Report) Summarize() {
	for i := range rep.Rows {
		r := &rep.Rows[i]
		r.Best, r.Median, r.XOverlay, r.XDisk = 0, 0, 0, 0
		if len(r.Seconds) == 0 {
			continue
		}
		s := slices.Clone(r.Seconds)
		slices.Sort(s)
		best, med := s[0], median(s)
		if r.rate() {
			best, med = float64(r.Ops)/best, float64(r.Ops)/med
		}
		r.Best, r.Median = best, med
	}
	for i := range rep.Rows {
		r := &rep.Rows[i]
		if ov := rep.row(r.Measure, Overlay); ov != nil && ov.Median > 0 {
			r.XOverlay = r.Median / ov.Median
		}
		if d := rep.row(r.Measure, Disk); d != nil && d.Median > 0 {
			r.XDisk = r.Median / d.Median
		}
	}
}

func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func (rep *Report) row(measure, system string) *Row {
	for i := range rep.Rows {
		if rep.Rows[i].Measure == measure && rep.Rows[i].System == system {
			return &rep.Rows[i]
		}
	}
	return nil
}

// Measures are the measurements of the report, in the order they ran.
func (rep *Report) Measures() []string {
	var ms []string
	for _, r := range rep.Rows {
		if !slices.Contains(ms, r.Measure) {
			ms = append(ms, r.Measure)
		}
	}
	return ms
}

// WriteJSON writes the report as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// ReadJSON reads a report written by WriteJSON.
func ReadJSON(r io.Reader) (*Report, error) {
	var rep Report
	if err := json.NewDecoder(r).Decode(&rep); err != nil {
		return nil, fmt.Errorf("read report: %w", err)
	}
	return &rep, nil
}

// Header is the first lines of the table: when, where, what.
func (rep *Report) Header() string {
	var b strings.Builder
	sizes := "default sizes"
	if rep.Quick {
		sizes = "quick sizes"
	}
	runs := fmt.Sprintf("%d runs", rep.Runs)
	if rep.Budget > 0 {
		runs = fmt.Sprintf("up to %d runs, fewer once they add up to %s", rep.Runs, formatDuration(time.Duration(rep.Budget*float64(time.Second))))
	}
	fmt.Fprintf(&b, "strata bench, %s: %s, %d CPUs, %s RAM; %s, %s\n",
		rep.Date.Format("2006-01-02 15:04 MST"), rep.Host.Kernel, rep.Host.CPUs, formatBytes(int64(rep.Host.Memory)), sizes, runs)
	var found, skipped []string
	for _, s := range rep.Systems {
		if s.Skipped != "" {
			skipped = append(skipped, fmt.Sprintf("%s (%s)", s.Name, s.Skipped))
			continue
		}
		if s.Version != "" {
			found = append(found, s.Name+" "+s.Version)
		} else {
			found = append(found, s.Name)
		}
	}
	fmt.Fprintf(&b, "systems: %s\n", strings.Join(found, ", "))
	if len(skipped) > 0 {
		fmt.Fprintf(&b, "skipped: %s\n", strings.Join(skipped, "; "))
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	return b.String()
}

// WriteTable writes the header and an aligned table, a line per row, grouped
// by measurement.
func (rep *Report) WriteTable(w io.Writer) error {
	cells := [][]string{{"measure", "system", "runs", "best", "median", "×overlay", "×disk"}}
	for _, m := range rep.Measures() {
		first := true
		for _, r := range rep.Rows {
			if r.Measure != m {
				continue
			}
			name := ""
			if first {
				name = m
				if r.rate() {
					name += " (" + r.Unit + ")"
				}
			}
			first = false
			if r.Error != "" {
				cells = append(cells, []string{name, r.System, "failed: " + r.Error})
				continue
			}
			cells = append(cells, []string{name, r.System, fmt.Sprint(len(r.Seconds)), formatValue(r.Best, r.Unit), formatValue(r.Median, r.Unit), formatRatio(r.XOverlay), formatRatio(r.XDisk)})
		}
	}
	var b strings.Builder
	b.WriteString(rep.Header())
	b.WriteString("\n")
	writeAligned(&b, cells, 2)
	b.WriteString("\n×overlay, ×disk: median time divided by kernel overlayfs's and the plain disk's (above 1 is slower);\n" +
		"for IOPS rows, IOPS divided by theirs (above 1 is faster). runs: the timed runs; best: the fastest.\n")
	if rep.Elapsed > 0 {
		fmt.Fprintf(&b, "The whole run took %s.\n", formatDuration(time.Duration(rep.Elapsed*float64(time.Second))))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeAligned writes cells in columns: the first left columns aligned left,
// the others right; a row shorter than the header runs on in its last cell.
func writeAligned(b *strings.Builder, cells [][]string, left int) {
	width := make([]int, len(cells[0]))
	for _, row := range cells {
		if len(row) < len(width) {
			continue
		}
		for i, c := range row {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	for _, row := range cells {
		var line strings.Builder
		for i, c := range row {
			if i > 0 {
				line.WriteString("  ")
			}
			pad := strings.Repeat(" ", max(0, width[i]-utf8.RuneCountInString(c)))
			switch {
			case len(row) < len(width) && i == len(row)-1:
				line.WriteString(c)
			case i < left:
				line.WriteString(c + pad)
			default:
				line.WriteString(pad + c)
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
}

// formatValue writes a time in seconds or a rate with three significant
// digits: "812ms", "1.23s", "45.6k".
func formatValue(v float64, unit string) string {
	if unit != "s" {
		switch {
		case v >= 1e6:
			return sig3(v/1e6) + "M"
		case v >= 1e3:
			return sig3(v/1e3) + "k"
		}
		return sig3(v)
	}
	switch {
	case v >= 1:
		return sig3(v) + "s"
	case v >= 1e-3:
		return sig3(v*1e3) + "ms"
	}
	return sig3(v*1e6) + "µs"
}

func sig3(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func formatRatio(x float64) string {
	switch {
	case x == 0 || math.IsInf(x, 0) || math.IsNaN(x):
		return "-"
	case x < 0.01:
		return "<0.01"
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10:
		return fmt.Sprintf("%.1f", x)
	}
	return fmt.Sprintf("%.2f", x)
}

// formatDuration writes d to the second, or to the tenth under a minute:
// "4m32s", "12.3s".
func formatDuration(d time.Duration) string {
	if d < time.Minute {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// formatBytes writes n in binary units: "1.5 GiB".
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, exp := float64(n), 0
	for v >= unit && exp < 5 {
		v /= unit
		exp++
	}
	return fmt.Sprintf("%.3g %ciB", v, "KMGTP"[exp-1])
}
