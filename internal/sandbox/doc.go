// Package sandbox starts a container's first process: a copy of this program,
// cloned into new namespaces, that makes the merged tree its root and then
// becomes the container's command. It is the init stage of `strata run`,
// runc's `runc init` in small.
//
// # Two processes, one binary
//
// The process that calls Start serves the union through FUSE. It must never
// fork and exec a binary that lives on that mount: Go forks with vfork, and a
// parent stopped for the garbage collector while its child faults in pages
// of the mount it alone serves is a deadlock (go-fuse fs/api.go). So Start
// runs /proc/self/exe, a file of the host, with argv[0] set to InitArg, in new
// mount, pid, uts, ipc and (unless Spec.NetHost) network namespaces. That copy
// finds InitArg in main (or in TestMain: test binaries run it too, as runc's
// libcontainer/integration/init_test.go does), calls Init, and Init does the
// rest from inside, ending with execve(2) of the command on the merged tree.
//
// The parent and the init stage talk over two pipes:
//
//   - descriptor 3, the spec pipe: the parent writes the Spec as JSON and
//     closes it. The parent writes only once the child is in its cgroup, so
//     the child's first read is also its signal to go on: nothing of the
//     command runs outside the cgroup.
//   - descriptor 4, the error pipe, close-on-exec: a failing init stage
//     writes its error there and exits; a successful execve closes it. The
//     parent reads it to its end: nothing means the command runs.
//
// # The init stage, step by step
//
//  0. Mark every descriptor but 0, 1 and 2 close-on-exec: the command gets
//     nothing its caller left open (a directory of the host held open is a
//     way out of any root: runc's CVE-2024-21626).
//  1. unshare(CLONE_NEWCGROUP), now that the parent has put us in our cgroup:
//     the container sees its own cgroup as the root.
//  2. Make every mount private (MS_REC|MS_PRIVATE on /): nothing mounted or
//     unmounted below leaks out to the host, and pivot_root accepts the tree.
//  3. Bind the merged tree onto itself, so that it is a mount point (pivot_root
//     needs one), and mount inside it: a fresh /proc (nosuid, nodev, noexec);
//     /dev as a small tmpfs with null, zero, full, random, urandom and tty, a
//     new devpts instance with its ptmx, and /dev/shm; /sys read-only. The
//     mount points exist in the init layer (package container), so that none
//     of this writes to the container's upper.
//  4. pivot_root(".", ".") as runc's rootfs_linux.go pivotRoot does, and
//     detach the old root: nothing of the host's tree stays reachable.
//  5. Mask runc's masked paths (a /dev/null or an empty read-only tmpfs over
//     /proc/kcore, /sys/firmware, ...) and make its read-only paths read-only
//     (/proc/sys, /proc/sysrq-trigger, ...).
//  6. Set the hostname, bring up the loopback of a new network namespace.
//  7. Drop the capabilities outside Docker's default set, and CAP_MKNOD
//     (see Limits), from the bounding set, take the user and groups (names looked up in the image's
//     /etc/passwd and /etc/group), change to the working directory, find the
//     command on the image's PATH, and execve it: it is PID 1.
//
// With Spec.Init the init stage stays PID 1 instead: it starts the command
// as its child, forwards the signals it gets to it, reaps every zombie that
// the pid namespace hands it, and exits with the command's status.
//
// # Limits
//
// The container runs as real root with Docker's default capabilities less
// CAP_MKNOD, no seccomp filter and no device cgroup: the namespaces, the
// bounding set and the masked paths are the whole of its fence. Docker keeps
// CAP_MKNOD because its device cgroup refuses to open the nodes a container
// makes; without one, a block device made in /dev (a tmpfs that honours
// device nodes) would read the host's disk. The union itself is mounted
// nodev and nosuid. test/inside_test.go tries the ways out. A user namespace (root in the
// container mapped to an unprivileged range) is not implemented.
package sandbox
