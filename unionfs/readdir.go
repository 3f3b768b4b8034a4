package unionfs

import (
	"cmp"
	"context"
	"slices"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dirHandle is an open directory: a snapshot of its merged listing, taken
// whenever a reader starts at offset 0 (opendir, rewinddir). Position 0 is the
// start, 1 follows ".", 2 follows "..", and each name's position is fixed for
// the life of the index (its cookie), so a handle opened just to answer one
// READDIR at an offset (see rawFS) resumes where the last one stopped. pos
// indexes dots, then children.
type dirHandle struct {
	node     *node
	taken    bool // the snapshot below is there
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

// OpendirHandle opens the directory for reading. The kernel may keep the pages
// it reads (FOPEN_CACHE_DIR): every change to the directory goes through this
// daemon, and the kernel drops its copy when it sees one.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if _, err := n.index(); err != nil {
		return nil, 0, toErrno(err)
	}
	return &dirHandle{node: n}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// snapshot takes the directory's current listing. A handle must not answer
// offset 0 from a listing older than that: the kernel stamps the cache it
// fills from offset 0 with the directory's version at that moment.
func (d *dirHandle) snapshot() error {
	n := d.node
	idx, err := n.index()
	if err != nil {
		return err
	}
	self := n.StableAttr().Ino
	up := self
	if p, _ := n.parent(); p != nil {
		up = p.StableAttr().Ino
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	d.taken = true
	d.children = idx.entries()
	d.dots = [2]fuse.DirEntry{
		{Name: ".", Mode: syscall.S_IFDIR, Ino: self, Off: 1},
		{Name: "..", Mode: syscall.S_IFDIR, Ino: up, Off: dotEntries},
	}
	return nil
}

func (d *dirHandle) len() int { return len(d.dots) + len(d.children) }

// Readdirent hands out the entry at the position, with the offset of the next.
func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if d.pos == 0 || !d.taken {
		if err := d.snapshot(); err != nil {
			return nil, toErrno(err)
		}
	}
	d.node.listed.Store(true) // the kernel may cache what it reads
	if d.pos >= d.len() {
		return nil, 0
	}
	var e fuse.DirEntry
	if d.pos < len(d.dots) {
		e = d.dots[d.pos]
	} else {
		e = d.children[d.pos-len(d.dots)]
	}
	d.pos++
	return &e, 0
}

// Seekdir moves to an offset handed out by Readdirent: just after the entry
// that carried it, or, if that name is gone, before the next one that stayed.
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if !d.taken {
		if err := d.snapshot(); err != nil {
			return toErrno(err)
		}
	}
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

var _ = (fs.FileLookuper)((*dirHandle)(nil))

// errBare makes go-fuse hand out an entry of READDIRPLUS without attributes
// (node id 0). Any errno does; this one says "not now" in a trace.
const errBare = syscall.EAGAIN

// Lookup answers for one entry of READDIRPLUS (the name Readdirent just gave):
// with its node and attributes, or, when reading them would likely cost a
// disk read nobody asked for, bare (plus.go).
func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n := d.node
	if n.GetChild(name) == nil {
		n.mu.Lock()
		var e *entry
		if n.idx != nil { // nil while a change has it rebuilt
			e = n.idx.names[name]
		}
		bare := e != nil && e.mode != syscall.S_IFDIR && !n.u.plus.wantAttrs()
		if bare {
			e.bare = true
		}
		n.mu.Unlock()
		if bare {
			n.u.plus.handedBare()
			return nil, errBare
		}
	}
	return n.Lookup(ctx, name, out)
}
