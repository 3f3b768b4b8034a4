package unionfs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dirHandle is an open directory: a snapshot of its merged listing taken at
// opendir, so that offsets (telldir/seekdir) stay valid however the directory
// changes meanwhile. Position 0 and 1 are "." and "..".
type dirHandle struct {
	node    *node
	entries []fuse.DirEntry
	pos     int
}

var (
	_ = (fs.NodeOpendirHandler)((*node)(nil))
	_ = (fs.FileReaddirenter)((*dirHandle)(nil))
	_ = (fs.FileSeekdirer)((*dirHandle)(nil))
	_ = (fs.FileFsyncdirer)((*dirHandle)(nil))
)

// OpendirHandle snapshots the listing. The kernel may keep the pages it reads
// (FOPEN_CACHE_DIR): every change to the directory goes through this daemon,
// and the kernel drops its copy when it sees one.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	idx, err := n.index()
	if err != nil {
		return nil, 0, toErrno(err)
	}
	self := n.StableAttr().Ino
	up := self
	if p, _ := n.parent(); p != nil {
		up = p.StableAttr().Ino
	}
	n.mu.Lock()
	names := idx.list()
	entries := make([]fuse.DirEntry, 0, len(names)+2)
	entries = append(entries,
		fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: self},
		fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: up})
	for _, name := range names {
		e := idx.names[name]
		entries = append(entries, fuse.DirEntry{Name: name, Mode: e.mode, Ino: e.ino})
	}
	n.mu.Unlock()
	for i := range entries {
		entries[i].Off = uint64(i + 1)
	}
	return &dirHandle{node: n, entries: entries}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if d.pos >= len(d.entries) {
		return nil, 0
	}
	e := d.entries[d.pos]
	d.pos++
	return &e, 0
}

// Seekdir moves to an offset handed out by Readdirent: the position after the
// entry that carried it.
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off > uint64(len(d.entries)) {
		off = uint64(len(d.entries))
	}
	d.pos = int(off)
	return 0
}

// Fsyncdir syncs the upper's copy of the directory.
func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return d.node.Fsync(ctx, nil, flags)
}
