package cmd

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/strata-fs/strata/bench"
	"github.com/strata-fs/strata/cmd/strata/internal/daemon"
	"github.com/strata-fs/strata/internal/cgroups"
	"github.com/strata-fs/strata/internal/container"
	"github.com/strata-fs/strata/internal/mounts"
	"github.com/strata-fs/strata/internal/sandbox"
	"github.com/strata-fs/strata/layers"
)

// Exit codes, as documented in the README.
const (
	exitFailure  = 1 // the request was fine, carrying it out failed
	exitBadInput = 2 // usage errors and refused input; nothing was changed
)

// ExitCode is the process exit status for err: 0 for nil, 2 for a usage error
// or input that was refused before anything changed (a bad stack or mount
// point, an unmount of something that is not a strata mount, a --daemon child
// that failed before it was ready, an unknown image, an image that cannot be
// imported as it is: bad, a digest mismatch, a refused layer entry, a bench
// without room for its sizes; for run, exec and the other container commands:
// an unknown container, a name in use, a limit that does not parse or that the
// host's cgroups cannot enforce, a container that runs or does not as needed),
// a container's own exit code for run and exec (126 and 127 when its command
// cannot be executed or is not in the image), 1 for any other failure.
func ExitCode(err error) int {
	var (
		usage  *usageError
		child  *daemon.ChildError
		status *exitStatus
		start  *sandbox.StartError
	)
	switch {
	case err == nil:
		return 0
	case errors.As(err, &status):
		return status.code
	case errors.As(err, &start):
		return start.Code
	case errors.As(err, &child) && child.Code > exitBadInput:
		// run -d: the command could not start (126, 127), said the
		// background supervisor before it was ready.
		return child.Code
	case errors.As(err, &usage),
		errors.As(err, &child),
		errors.Is(err, layers.ErrInvalid),
		errors.Is(err, layers.ErrImageNotFound),
		errors.Is(err, layers.ErrBadImage),
		errors.Is(err, layers.ErrDigest),
		errors.Is(err, layers.ErrRefused),
		errors.Is(err, mounts.ErrNotMounted),
		errors.Is(err, mounts.ErrForeign),
		errors.Is(err, bench.ErrInput),
		errors.Is(err, container.ErrNotFound),
		errors.Is(err, container.ErrNameInUse),
		errors.Is(err, container.ErrInvalid),
		errors.Is(err, container.ErrRunning),
		errors.Is(err, container.ErrNotRunning),
		errors.Is(err, cgroups.ErrInvalid),
		errors.Is(err, cgroups.ErrNoController):
		return exitBadInput
	}
	return exitFailure
}

// usageError is a command line that cobra or a command could not make sense
// of.
type usageError struct {
	cmd *cobra.Command
	err error
}

func (e *usageError) Error() string {
	msg := e.err.Error()
	if e.cmd.HasParent() {
		msg = e.cmd.Name() + ": " + msg
	}
	return fmt.Sprintf("%s (see '%s --help')", msg, e.cmd.CommandPath())
}

func (e *usageError) Unwrap() error { return e.err }

func usagef(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{cmd: cmd, err: fmt.Errorf(format, args...)}
}

// usageArgs makes the errors of an argument check usage errors.
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return &usageError{cmd: cmd, err: err}
		}
		return nil
	}
}
