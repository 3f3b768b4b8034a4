// Package nsenter joins the namespaces of a running container before the Go
// runtime starts: `strata exec` needs it, and Go cannot do it.
//
// setns(2) into a mount namespace fails with EINVAL in a process whose threads
// share their file system information (CLONE_FS), and every Go process has
// several threads before main runs. runc solves it with nsexec, C code that
// runs as a constructor, before the runtime; this is the same idea in small.
// Link it in with a blank import (cmd/strata does); it needs cgo.
//
// The constructor does nothing unless the environment holds EnvPid. Then:
//
//  1. it waits for one byte on the descriptor EnvSync names, which the parent
//     writes once it has put this process into the container's cgroup;
//  2. it opens /proc/PID/ns/{cgroup,ipc,uts,net,pid,mnt} and joins each, the
//     mount namespace last (its /proc is the host's until then);
//  3. it forks: a pid namespace only takes the children of whoever joins
//     it. The child returns from the constructor, and Go starts in it,
//     inside every namespace, as the init stage of an exec (package
//     sandbox). The parent stays outside the pid namespace, forwards the
//     signals it gets to the child, and exits with the child's status.
//
// A failure is written to descriptor 4, package sandbox's error pipe, as the
// JSON of a sandbox.StartError, and the process exits 1.
package nsenter

// Environment variables of the constructor.
const (
	// EnvPid is the host pid of a process whose namespaces to join.
	EnvPid = "_STRATA_NSENTER_PID"
	// EnvSync is the descriptor to read the go-ahead byte from.
	EnvSync = "_STRATA_NSENTER_SYNC"
)
