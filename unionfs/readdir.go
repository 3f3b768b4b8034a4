package unionfs

import (
	"cmp"
	"context"
	"slices"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dirHandle is an open directory: a snapshot of its merged listing taken at
// opendir. Offset 0 is the start, 1 follows ".", 2 follows "..", and each
// name's offset is fixed for the life of the index (its cookie), so a handle
// opened just to answer one READDIR at an offset (see rawFS) resumes where the
// last one stopped. pos indexes dots, then children.
type dirHandle struct {
	node     *node
	dots     [2]fuse.DirEntry
	children []fuse.DirEntry // shared with the index: read only
	pos      int
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
	children := idx.entries()
	n.mu.Unlock()
	return &dirHandle{node: n, children: children, dots: [2]fuse.DirEntry{
		{Name: ".", Mode: syscall.S_IFDIR, Ino: self},
		{Name: "..", Mode: syscall.S_IFDIR, Ino: up},
	}}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

func (d *dirHandle) len() int { return len(d.dots) + len(d.children) }

// Readdirent hands out the entry at the position, with the offset of the next.
func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if d.pos >= d.len() {
		return nil, 0
	}
	var e fuse.DirEntry
	if d.pos < len(d.dots) {
		e = d.dots[d.pos]
		e.Off = uint64(d.pos + 1)
	} else {
		e = d.children[d.pos-len(d.dots)]
	}
	d.pos++
	return &e, 0
}

// Seekdir moves to an offset handed out by Readdirent: just after the entry
// that carried it, or, if that name is gone, before the next one that stayed.
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off < dotEntries {
		d.pos = int(off)
		return 0
	}
	i, _ := slices.BinarySearchFunc(d.children, off, func(e fuse.DirEntry, off uint64) int {
		return cmp.Compare(e.Off, off+1) // the first entry past off
	})
	d.pos = len(d.dots) + i
	return 0
}

// Fsyncdir syncs the upper's copy of the directory.
func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return d.node.Fsync(ctx, nil, flags)
}
