package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/bench"
)

// quickRuns is the default of --runs with --quick.
const quickRuns = 2

// benchOptions are the flags of `strata bench`.
type benchOptions struct {
	quick     bool
	systems   string
	workloads string
	runs      int
	jsonPath  string
	chartPath string
	dir       string
}

// NewCmdBench returns `strata bench`.
func NewCmdBench() *cobra.Command {
	var o benchOptions
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure strata against kernel overlayfs, fuse-overlayfs and the plain disk",
		Long: `Build the same fresh layers for every system, mount them side by side, time each
workload several times on each, and print the best and median time of every
measurement with its ratio to kernel overlayfs and to the plain disk.

Systems: ` + strings.Join(bench.SystemNames(), ", ") + `.
disk is a plain directory holding the merged tree; strata is mounted by this
executable with 'strata mount --daemon'. A system that is not installed or cannot be mounted
is skipped, and the report says why.

Workloads:
` + workloadHelp() + `
Cold rows drop the kernel's caches before each run (as root); a warm row runs
right after its cold one, or once untimed first. Each measurement is repeated
up to 3 times on a system, fewer once its runs add up to a second; --runs N
asks for exactly N. With all five systems, the default sizes take about 5
minutes on a quiet 2-core machine (the slower FUSE unions take most of it),
--quick under a minute; --systems and --workloads choose less. Needs root to
mount. The scratch data goes under --dir and is removed at the end, or on
Ctrl-C, with everything unmounted. Where the scratch dir is on ext4 without
a journal, whose inode reuse makes creates after deletes vary from run to run,
small-files and untar run on a journaled ext4 made in it (a loop device).

Exit status: 0 when the report is written; 2 for a usage error, an unknown
system or workload, or a scratch directory without room, with nothing done;
1 for any other failure.`,
		Example: `  sudo strata bench --quick
  sudo strata bench --systems strata,overlay,fuse-overlayfs,disk --workloads readdir,seqread --runs 5 --json out.json
  sudo strata bench --chart out.svg`,
		Args:         usageArgs(cobra.NoArgs),
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.quick, "quick", false, "small sizes: the whole run in under a minute")
	f.StringVar(&o.systems, "systems", "all", "comma-separated `LIST` of systems to measure")
	f.StringVar(&o.workloads, "workloads", "all", "comma-separated `LIST` of workloads to run")
	f.IntVar(&o.runs, "runs", 3, "exactly `N` timed runs of each measurement on each system (default: up to 3, fewer once they add up to 1s; --quick: up to 2)")
	f.StringVar(&o.jsonPath, "json", "", "also write the report as JSON to `FILE`")
	f.StringVar(&o.chartPath, "chart", "", "also draw ratios to kernel overlayfs in `FILE`: .svg or .png")
	f.StringVar(&o.dir, "dir", "", "make the scratch dir in `DIR` (default: $TMPDIR or /tmp)")
	return cmd
}

func workloadHelp() string {
	var b strings.Builder
	for _, w := range bench.Workloads {
		fmt.Fprintf(&b, "  %-13s %s\n", w.Name, w.Doc)
	}
	return b.String()
}

// options checks the flags, and that the output files can be written, before
// any work starts.
func (o *benchOptions) options(cmd *cobra.Command) (bench.Options, error) {
	systems, err := bench.ParseSystems(o.systems)
	if err != nil {
		return bench.Options{}, usagef(cmd, "--systems: %w", err)
	}
	workloads, err := bench.ParseWorkloads(o.workloads)
	if err != nil {
		return bench.Options{}, usagef(cmd, "--workloads: %w", err)
	}
	if o.runs < 1 {
		return bench.Options{}, usagef(cmd, "--runs: %d: at least one run", o.runs)
	}
	if ext := filepath.Ext(o.chartPath); o.chartPath != "" && ext != ".svg" && ext != ".png" {
		return bench.Options{}, usagef(cmd, "--chart: %s: the name must end in .svg or .png", o.chartPath)
	}
	for _, p := range []string{o.jsonPath, o.chartPath} {
		if p == "" {
			continue
		}
		if fi, err := os.Stat(filepath.Dir(p)); err != nil || !fi.IsDir() {
			return bench.Options{}, usagef(cmd, "%s: no directory to write it in", p)
		}
	}
	if o.dir != "" {
		if fi, err := os.Stat(o.dir); err != nil || !fi.IsDir() {
			return bench.Options{}, usagef(cmd, "--dir: %s: no such directory", o.dir)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return bench.Options{}, fmt.Errorf("find own executable: %w", err)
	}
	opts := bench.Options{
		Dir:       o.dir,
		Systems:   systems,
		Workloads: workloads,
		Runs:      o.runs,
		Sizes:     bench.DefaultSizes,
		Quick:     o.quick,
		StrataBin: exe,
	}
	if o.quick {
		opts.Sizes = bench.QuickSizes
		if !cmd.Flags().Changed("runs") {
			opts.Runs = quickRuns
		}
	}
	if !cmd.Flags().Changed("runs") {
		opts.Budget = bench.DefaultBudget // --runs N asks for N runs, however long
	}
	return opts, nil
}

func (o *benchOptions) run(cmd *cobra.Command) (err error) {
	opts, err := o.options(cmd)
	if err != nil {
		return err
	}
	// `strata bench | head` must not kill strata by SIGPIPE with its
	// mounts in place.
	signal.Ignore(syscall.SIGPIPE)
	stderr := cmd.ErrOrStderr()
	if isTerminal(stderr) {
		opts.Progress = func(line string) {
			if len(line) > 100 {
				line = line[:100]
			}
			_, _ = fmt.Fprintf(stderr, "\r\033[K%s", line) // a progress line; losing one loses nothing
		}
		defer func() { _, _ = io.WriteString(stderr, "\r\033[K") }() // clear the last line
	}
	rep, err := bench.Run(contextOf(cmd), opts)
	if errors.Is(err, bench.ErrInput) {
		return usagef(cmd, "%w", err)
	}
	if errors.Is(err, context.Canceled) && !errors.Is(err, bench.ErrLeftBehind) {
		return fmt.Errorf("bench: interrupted; what it mounted is unmounted and its scratch data removed: %w", err)
	}
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if opts.Progress != nil {
		_, _ = io.WriteString(stderr, "\r\033[K")
	}
	if err := rep.WriteTable(cmd.OutOrStdout()); err != nil {
		return err
	}
	if o.jsonPath != "" {
		if err := writeStaged(o.jsonPath, rep.WriteJSON); err != nil {
			return err
		}
	}
	if o.chartPath != "" {
		draw := rep.WriteSVG
		if filepath.Ext(o.chartPath) == ".png" {
			draw = rep.WritePNG
		}
		if err := writeStaged(o.chartPath, draw); err != nil {
			return err
		}
	}
	return nil
}

// writeStaged writes path through write: into a new file beside it, renamed
// over path once complete.
func writeStaged(path string, write func(io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".new-")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name()) // the staged copy of a failed write
		}
	}()
	if err = write(f); err != nil {
		_ = f.Close() // the write error is the one to report
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Chmod(0o644); err == nil {
		err = f.Close()
	} else {
		_ = f.Close() // the chmod error is the one to report
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// isTerminal says whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
