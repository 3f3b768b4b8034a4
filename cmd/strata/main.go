// Command strata mounts union file systems through FUSE: read-only layers
// merged under a writable upper, like the kernel's overlayfs. See the README
// and `strata --help`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/strata-fs/strata/cmd/strata/cmd"
	_ "github.com/strata-fs/strata/internal/nsenter" // strata exec: joins namespaces before the Go runtime starts
	"github.com/strata-fs/strata/internal/sandbox"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version string

func main() {
	if sandbox.IsInit() {
		// A container's init stage (strata run): this copy of strata
		// was started in the container's new namespaces.
		sandbox.Init()
	}
	// SIGINT and SIGTERM cancel the context: a mount in the foreground
	// unmounts and exits 0.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	os.Args = cmd.Alias(os.Args)
	root := cmd.New(buildVersion())
	root.SetArgs(os.Args[1:])
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		// One line on stderr, whatever the error carries.
		// A container's exit code comes with no message.
		if msg := strings.TrimSpace(strings.ReplaceAll(err.Error(), "\n", " ")); msg != "" {
			fmt.Fprintln(os.Stderr, "strata:", msg)
		}
		os.Exit(cmd.ExitCode(err))
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
