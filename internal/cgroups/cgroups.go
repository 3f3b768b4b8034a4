package cgroups

import (
	"errors"
	"fmt"
	"strings"
)

// Limits are what a container is held to. A zero field means no limit.
type Limits struct {
	// Memory is the most memory, in bytes, the container's processes may use
	// together. Swap is held to the same total (no swap beyond it), so going
	// over it means the OOM killer, not a slow container.
	Memory int64
	// CPUs is how many CPUs' worth of time the container gets: 0.5 is a quota
	// of 50ms in every 100ms period.
	CPUs float64
	// Pids is the most processes (and threads) the container may have at once.
	Pids int64
}

// Cgroup is one container's cgroup, in every hierarchy the host has. It is
// made by Host.Create or found by Host.Load. A v1 (or hybrid) host and a pure
// v2 host each have their own implementation.
type Cgroup interface {
	// Name is the name given to Create or Load.
	Name() string
	// Add moves the process pid, with its threads, into the cgroup in every
	// hierarchy. Its children stay where they are: move a process before it
	// forks.
	Add(pid int) error
	// FD is a file descriptor of the cgroup's directory for
	// SysProcAttr.UseCgroupFD/CgroupFD, which starts a child inside the
	// cgroup (clone3 CLONE_INTO_CGROUP): no window in which it runs outside.
	// It exists on a pure v2 host only: there is no such thing on v1, where
	// ok is false and the caller Adds the child before it runs anything. The
	// descriptor belongs to the Cgroup; Close or Destroy closes it.
	FD() (fd int, ok bool)
	// OOMKilled reports whether the kernel's OOM killer has killed a process
	// of this cgroup since it was made.
	OOMKilled() (bool, error)
	// MemoryUsage is the memory the cgroup uses now, in bytes, without the
	// page cache the kernel can drop at once (inactive file pages), as
	// `docker stats` shows it.
	MemoryUsage() (int64, error)
	// Pids lists the processes in the cgroup, sorted.
	Pids() ([]int, error)
	// Destroy kills every process left in the cgroup, waits until it is
	// empty, and removes its directory from every hierarchy. It is
	// idempotent: a cgroup already gone is not an error.
	Destroy() error
	// Close releases the descriptor FD returned and leaves the cgroup as it
	// is, for a caller that is done with it but not the container (run -d).
	Close() error
}

// Errors, for errors.Is. Each is wrapped with what was asked for.
var (
	// ErrInvalid is input that does not make sense: a limit that does not
	// parse or is out of range, a bad cgroup name.
	ErrInvalid = errors.New("invalid")
	// ErrNoController is a limit asked for on a host whose cgroups lack the
	// controller that enforces it. strata refuses to run without the limit
	// rather than run without it silently.
	ErrNoController = errors.New("no cgroup controller")
)

// checkName refuses a name that is not one plain path element: the name
// becomes a directory under the strata parent in every hierarchy.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("cgroup name %q: %w: want one path element", name, ErrInvalid)
	}
	return nil
}
