// Package cgroups holds a container to its limits (memory, CPU time, number
// of processes) with Linux control groups, on cgroup v1, v2 and hybrid hosts.
// `strata run` creates a container's cgroup before it starts the command,
// moves the command into it, asks it after the end whether the OOM killer
// struck, and destroys it; `strata ps`, `exec` and `rm` find it again by name.
//
// # What a cgroup is
//
// A cgroup is a directory in a cgroup file system, and a set of processes.
// Its files are its interface: writing a pid to cgroup.procs moves that
// process in (its children, forked later, are born in it too), writing
// "67108864" to a limit file sets a limit, reading memory.current reads a
// figure. mkdir makes a cgroup (the kernel fills the directory with its
// files) and rmdir removes it, which the kernel refuses while processes are
// in it. A controller (memory, cpu, pids...) is the part of the kernel that
// enforces one kind of limit; each hierarchy of cgroups has some of them.
//
// # v1, v2 and hybrid
//
// cgroup v1 (Linux 2.6.24) has one hierarchy per controller, or per few
// controllers mounted together ("cpu,cpuacct"), each a file system of its
// own, usually /sys/fs/cgroup/CONTROLLER. A process has a place in each
// hierarchy, so a container's cgroup is one directory per hierarchy used,
// and a process must be moved into each. The files: memory.limit_in_bytes,
// memory.memsw.limit_in_bytes (memory plus swap, so the same figure means no
// swap; present only with swap accounting), cpu.cfs_quota_us and
// cpu.cfs_period_us, pids.max; the OOM kills are counted in
// memory.oom_control.
//
// cgroup v2 (Linux 4.5, "unified") has a single hierarchy that holds every
// controller, usually at /sys/fs/cgroup. A controller reaches a cgroup only
// if each ancestor lists it in its cgroup.subtree_control, and a cgroup that
// passes controllers down may hold no processes of its own (the
// no-internal-process rule; only the root is exempt). So strata enables
// memory, cpu and pids in the root's and in the strata parent's
// subtree_control, the strata parent holds no process, and each container's
// cgroup is a leaf. The files: memory.max, memory.swap.max (swap alone: 0 is
// no swap), cpu.max ("QUOTA PERIOD"), pids.max; memory.events counts OOM
// kills. v2 adds cgroup.kill (Linux 5.14), which kills every process of a
// cgroup at once, and clone3's CLONE_INTO_CGROUP (Linux 5.7), which starts a
// child inside a cgroup instead of moving it after the fact.
//
// A hybrid host, systemd's layout before it went v2 (and this build
// machine's), mounts the v1 hierarchies with the controllers, and the
// unified hierarchy beside them, at /sys/fs/cgroup/unified, with few
// controllers or none: systemd tracks processes there. strata limits
// through the v1 hierarchies, and also makes the container's cgroup in the
// unified one (as runc does) so that every process of the container is in
// one v2 cgroup: Destroy can then cgroup.kill it.
//
// Which of the three a host is, and where its hierarchies are, is read from
// /proc/self/mountinfo (a v1 mount's super options name its controllers;
// the unified one has type cgroup2) and /proc/self/cgroup (which
// hierarchies this process is in, and where), never assumed from paths. A
// Host holds the result; tests build one on a tree of their own.
//
// The two kinds of cgroup are two implementations of the Cgroup interface:
// v1Cgroup (a directory per v1 hierarchy, plus the unified one on a hybrid
// host) and v2Cgroup (one directory). runc's cgroups.Manager has the same
// split (fs and fs2), with far more in it.
//
// # Where the cgroups are
//
// A container's cgroup is PARENT/NAME under the root of each hierarchy
// strata uses: /sys/fs/cgroup/memory/strata/web on v1,
// /sys/fs/cgroup/strata/web on v2, as Docker's cgroupfs driver makes
// /docker/ID. It is not under strata's own cgroup: a detached container
// outlives the strata that started it, and that cgroup may be a login
// session's, which goes when the session does. This needs root; strata does
// not ask systemd for a delegated subtree (runc's systemd driver): on a
// systemd host its cgroups are outside systemd's knowledge, as Docker's
// cgroupfs driver's are.
// The parent is removed with its last container.
//
// # Getting a process in
//
// On v2, FD gives a descriptor of the cgroup's directory for
// SysProcAttr.UseCgroupFD: the child is born inside, and there is no moment
// in which it runs unlimited. v1 has no such thing: the caller starts the
// child, Adds it, and only then lets it run the container's command (runc's
// init waits on a pipe for this). A cgroup namespace (CLONE_NEWCGROUP) is
// rooted at the cgroup its first process is in when it is made: cloned with
// CLONE_INTO_CGROUP, that is the container's; on v1 the child must unshare
// it after it was Added, or the container sees strata's cgroup as its root.
//
// # Getting everything out
//
// Destroy kills what is in the cgroup, waits until it is empty and removes
// the directories. With cgroup.kill, one write kills every process, and none
// can fork away meanwhile. Without it (a pure v1 host, Linux before 5.14) it
// SIGKILLs the listed processes round after round until none is left: a
// process that forked before it died has its child killed in the next
// round. A listed pid may have been freed and reused by then, so each is
// pinned with pidfd_open and killed only if it is still in the cgroup after
// (runc freezes the v1 cgroup instead, which takes one more hierarchy). A
// process that SIGKILL does not end, stuck in an uninterruptible sleep,
// makes Destroy fail after 10 seconds.
//
// # Limits
//
// Memory is a hard limit on memory and swap together: past it the kernel
// reclaims what it can, then OOM-kills a process of the container, which is
// what `strata run` reports as exit 137. (With swap but no swap accounting
// on v1, the container could swap past its limit; the kernel offers no file
// to stop that.) CPUs is a CFS quota per 100ms period: 0.5 lets the
// container run 50ms of every 100ms, spread over any CPUs, and then it waits
// for the next period. Pids counts processes and threads; fork and clone
// fail with EAGAIN at the limit. Memory below MinMemory is refused (a
// limit of "64", bytes, is a slip for 64m), as Docker does. A limit whose controller the host lacks is
// an error, never a silent no-limit.
package cgroups
