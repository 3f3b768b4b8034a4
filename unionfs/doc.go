// Package unionfs serves a union of directory layers through FUSE: an ordered stack
// of read-only lower layers under one writable upper layer, merged into a single
// tree with the semantics of the kernel's overlayfs.
//
// # The model
//
// Layer 0 is the upper (absent in a read-only union), layers 1..n are the lowers,
// top first. A name resolves to the topmost layer that holds it; a directory
// merges with the directories of the same name below it, down to the first layer
// where that name is a non-directory, a whiteout, or where the directory is
// opaque. The rules for whiteouts and opaque markers are package whiteout's; this
// package applies them.
//
// Each directory node keeps a dirIndex: the merged listing of the directory, built
// once from every contributing layer by getdents (whiteouts folded in), then kept
// up to date by the union's own changes. Lookup, readdir and rmdir's emptiness
// check answer from it without touching the disk; only attributes are read from
// the layer that holds an entry. strata must therefore be the only writer of the
// upper while mounted, as overlayfs requires too; lower layers never change.
//
// # Writes
//
// A change to an entry that lives in a lower layer first copies it up (package
// cow), parents first; the node then lives in the upper for good. Deletions write
// whiteouts; a directory created where a whiteout stood is opaque. Renames of
// lower directories copy the whole merged tree up, so no EXDEV reaches a caller.
//
// # Identity
//
// st_ino is the inode number of the entry where it was first found, with the
// index of its device in the top bits when the layers span several filesystems.
// A copied-up entry keeps its old number for the life of the mount through a
// table from upper inode to union inode. Lower files with several hard links get
// one node per name (the same st_ino, another generation): FUSE hands the daemon
// an inode, not the name it was reached by, and a copy-up must copy the name that
// was written to.
//
// # Caching
//
// Entries, attributes and negative lookups are cached by the kernel with long
// timeouts; every change goes through this daemon, so the kernel's own bookkeeping
// of FUSE replies keeps its caches true.
//
// File data goes through FUSE passthrough when the kernel offers it: the kernel
// reads and writes the layer file itself, as the inode's backing file. That
// holds for upper files, for lower files of a read-only union, and for lower
// files of a writable union only with Config.LowerPassthrough, for the reason
// below: by default those are read through this daemon into the kernel's page
// cache, kept across opens (FOPEN_KEEP_CACHE), and after a copy-up their open
// handles read the upper copy, as in overlayfs. Lower files are opened from a
// read-only view of their layer's mount (readOnlyView), and only for readers:
// writers open the upper copy. With LowerPassthrough, lower files smaller than
// lowerPassthroughMin (4 KiB) stay in the page cache all the same: lock files
// and the like keep one inode across their copy-up, so that locks hold between
// readers and writers.
//
// The kernel gives an open inode one backing file, and opens it anew for each
// opener of the inode with that opener's flags (fs/fuse/iomode.c,
// passthrough.c): an inode whose backing file is a lower file must never get a
// writer. A copy-up while readers hold the lower file open therefore gives the
// copy a new generation, and an open of the copy on the old inode gets ESTALE;
// the kernel then walks the path again, revalidating every name with a LOOKUP
// (do_filp_open's LOOKUP_REVAL retry), and the name leads to a new node, a new
// kernel inode backed by the copy. The old inode stays with its readers: they
// keep reading the lower file as it was, as overlayfs did before Linux 4.19
// (it has since moved such readers to the copy at their next read, and
// fuse-overlayfs's shared page cache shows them the writes too). Locks the
// kernel keeps per inode (flock, POSIX and OFD locks) then no longer conflict
// between those readers and the writers. The kernel never mixes the two I/O
// modes on an inode (see addFile).
package unionfs
