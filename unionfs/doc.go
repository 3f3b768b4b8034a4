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
// File data of upper files goes through FUSE passthrough when the kernel offers
// it: the kernel reads and writes the layer file directly. Lower files are read
// through the daemon into the kernel's page cache, which is kept across opens:
// the kernel reopens a registered backing file with each new opener's flags, so
// a lower backing file would take the writes of an opener that came after a
// copy-up. After a copy-up, open handles of the lower file read the upper copy.
package unionfs
