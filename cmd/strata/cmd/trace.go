package cmd

import (
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/strata-fs/strata/unionfs"
)

// traceOptions are --trace[=FILE] and --trace-format, shared by every command
// that serves a union (serveUnion): one line per decision of the union, see
// unionfs.Tracer.
type traceOptions struct {
	file   string // "" is off, "-" is stderr
	format string // "text" or "json"
}

// traceStderr is the value of a bare --trace.
const traceStderr = "-"

func (t *traceOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&t.file, "trace", "", "trace the union's decisions (which layer answered, copy-ups, whiteouts, renames) to `FILE`, appended; --trace alone: stderr")
	f.Lookup("trace").NoOptDefVal = traceStderr
	f.StringVar(&t.format, "trace-format", "text", "trace `FORMAT`: text, or json (one object a line)")
}

// check refuses flags that cannot work, before anything starts.
func (t *traceOptions) check(cmd *cobra.Command, background bool) error {
	if t == nil {
		return nil
	}
	if t.format != "text" && t.format != "json" {
		return usagef(cmd, "--trace-format %q: want text or json", t.format)
	}
	if background && t.file == traceStderr {
		return usagef(cmd, "--trace: give a file (--trace=FILE): a union served in the background has no stderr")
	}
	return nil
}

// open returns the tracer the flags ask for (nil when tracing is off) and a
// function that closes its file.
func (t *traceOptions) open(cmd *cobra.Command) (unionfs.Tracer, func() error, error) {
	if t == nil || t.file == "" {
		return nil, func() error { return nil }, nil
	}
	if t.file == traceStderr {
		return unionfs.NewTraceWriter(cmd.ErrOrStderr(), t.format == "json"), func() error { return nil }, nil
	}
	f, err := os.OpenFile(t.file, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, func() error { return nil }, usagef(cmd, "--trace: %w", err)
	}
	return unionfs.NewTraceWriter(f, t.format == "json"), f.Close, nil
}
