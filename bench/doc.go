// Package bench measures strata against kernel overlayfs, fuse-overlayfs,
// unionfs-fuse and the plain disk, side by side, over the same layers, in one
// run: `strata bench`.
//
// # What a run does
//
// For each selected workload, Run builds the fixture the workload needs (a
// tree of small files in three layers, a 1 GiB file, a Go module, ...) once,
// in lower layer directories under the scratch directory. Every union system
// mounts those same lower layers with a fresh upper and work directory of its
// own; the disk system gets the merged tree in a plain directory (the upper
// directory itself, no union in the way): hard links to the layers' files
// where no workload changes them, a copy where one does. The systems are
// mounted at the same time, and every run of a measurement visits them in
// turn, in an order that rotates from run to run, so that the noise of a
// shared machine falls on all of them alike and the ratios come from one run.
//
// A measurement is one row of the report: a workload function (StatWalk,
// SeqRead, ...) timed several times. Cold rows drop the kernel's caches
// before every timed call (as root: sync, then 3 > /proc/sys/vm/drop_caches).
// A warm row runs right after its cold row on the same system, in the same
// run, and finds the caches the cold call filled; a warm row without a cold
// one makes an untimed call first. Workloads that change the tree name their
// files after the run (big-0, small-1, ...) so that each run does the same
// work, and clean up after themselves untimed.
//
// # Where the time goes
//
// With every system and the default sizes, a run is about five minutes on a
// quiet 2-CPU machine, most of it the slower systems' runs over 20k-50k
// files. A measurement is repeated Runs times, or with a Budget (the
// default of the command), until its runs on a system add up to the Budget:
// a run of several seconds varies less, relative to its time, than one of a
// few milliseconds, and repeating the long ones was more than half the time
// of a run. Removing data-bearing files is slow on ext4 mounted with discard
// (a block is discarded as it is freed), hence the hard links of the disk
// system.
//
// # Who serves the mounts
//
// The benchmarking process never serves a FUSE mount it measures: strata is
// mounted by running the strata executable (`strata mount --daemon`), and
// fuse-overlayfs and unionfs-fuse by their own commands. A Go process that
// touches a FUSE mount it serves itself can deadlock with its own garbage
// collector, and a separate daemon is what users run.
//
// # Failure and interruption
//
// A system that is missing or cannot be mounted is skipped with the reason,
// and the report says so. A scratch directory without room for the sizes
// asked is refused before anything is written. When ctx ends (SIGINT,
// SIGTERM), the running workload stops at its next check, everything mounted
// is unmounted (lazily, as the last resort) and the scratch data is removed.
// The scratch directory is left in place, and its path returned in the error,
// only when a mount could not be taken off it.
//
// Package bench knows nothing of strata's internals: strata is one more
// command that mounts a union.
package bench
