package unionfs

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/beneath"
)

// node is one inode of the merged tree.
type node struct {
	fs.Inode
	u *union

	// copyMu serialises copy-ups of this node, so that two writers copy it once,
	// and opens with them (openFile), so that no open straddles a copy-up.
	copyMu sync.Mutex

	mu sync.Mutex // guards the fields below
	// layer is the topmost layer holding the node's object; upperLayer once it
	// has been copied up or created there.
	layer int
	// dirLayers are, for a directory, the layers merging into it, top first.
	dirLayers []int
	// idx is a directory's merged listing, built on first use.
	idx *dirIndex
	// replaced is an index dropped to be rebuilt: its cookies carry over.
	replaced *dirIndex
	// listed is set when a directory's listing is read, and cleared when the
	// kernel is told to drop what it cached of it (see listingChanged).
	listed atomic.Bool
	// unlinked is set when the last name of a node living in a lower layer is
	// removed: its file is still there, but the union reports st_nlink 0.
	unlinked bool
	// xattrs caches the node's extended attributes; nil until first asked.
	xattrs map[string][]byte
	// made is set on a node this mount created: it has no file capability
	// until one is set through it (see Getxattr).
	made bool
	// group is, for a directory, what a new entry in it needs of its
	// attributes (see owner), once known.
	group dirGroup
	// cached and passedThrough count the open handles in each of the kernel's
	// two I/O modes for an inode, which it never mixes (see addFile);
	// lowerBacking counts those passed through to a lower file.
	cached, passedThrough, lowerBacking int
	// fds are the open handles, for fstat of a node that lost its last name.
	fds map[*file]struct{}
	// meta says whether an upper regular file is a metacopy (metacopy.go),
	// learnt on first need; dataLayer and dataRel then locate its data.
	// Changed only under copyMu.
	meta      metaState
	dataLayer int
	dataRel   string
}

// where returns the node's layer under its lock.
func (n *node) where() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.layer
}

// rel is the node's path below the union's root, "" for the root.
func (n *node) rel() string {
	return n.Path(n.Root())
}

// parent returns the node's directory and its name there.
func (n *node) parent() (*node, string) {
	name, p := n.Parent()
	if p == nil {
		return nil, ""
	}
	return p.Operations().(*node), name
}

func (n *node) isRoot() bool { return n.EmbeddedInode() == n.Root() }

// index returns the directory's merged listing, building it on first use.
func (n *node) index() (*dirIndex, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.indexLocked()
}

func (n *node) indexLocked() (*dirIndex, error) {
	if n.idx != nil {
		return n.idx, nil
	}
	idx, err := n.u.buildIndex(n.rel(), n.dirLayers)
	if err != nil {
		return nil, err
	}
	if n.replaced != nil {
		idx.keepCookies(n.replaced)
		n.replaced = nil
	}
	n.idx = idx
	return idx, nil
}

// listingChanged tells the kernel to drop the pages of the directory's
// listing it cached (FOPEN_CACHE_DIR), if any were read since the last change.
//
// The kernel checks a cached listing's version only when a reader starts at
// offset 0. A reader that started while the cache was still being filled gets
// its first entries from this daemon, and takes the rest from the cache once
// another reader has completed it; that one may have begun before a change,
// so the rest could still hold names the change removed (fuse_readdir_cached,
// fuse_parse_cache in fs/fuse/readdir.c). Without those pages, the kernel
// starts its cache over and asks this daemon. Called after the change, while
// the kernel still holds the directory locked for it, so no reader is between.
func (n *node) listingChanged() {
	if n.listed.Swap(false) {
		_ = n.NotifyContent(0, 0) // ENOENT: the kernel forgot the directory
	}
}

// newChild makes (or finds) the node for the entry e, named name in n, whose
// attributes are st, and fills out.
// made says that the entry was just created by this mount.
func (n *node) newChild(ctx context.Context, name string, e *entry, st *unix.Statx_t, out *fuse.EntryOut, made bool) *fs.Inode {
	id := n.u.ids.of(e.layer, st, n.StableAttr().Ino, name)
	child := &node{u: n.u, layer: e.layer, made: made}
	if e.mode == syscall.S_IFDIR {
		child.dirLayers = append([]int(nil), e.layers...)
	}
	ch := n.NewInode(ctx, child, id)
	attrFromStatx(&out.Attr, st)
	n.u.overrideAt(&out.Attr, e.layer, beneath.Join(n.rel(), name))
	got := ch.Operations().(*node)
	if e.layer == upperLayer && e.mode == syscall.S_IFREG && st.Blocks == 0 && st.Size > 0 {
		// Holes only: perhaps a metacopy stub, whose blocks are below.
		got.learnMetacopy(beneath.Join(n.rel(), name))
		got.metaBlocks(&out.Attr)
	}
	got.fixAttr(&out.Attr)
	return ch
}

// fixAttr corrects what the layer's stat cannot know. The stat override
// (overrideAt) comes before it: it holds stored ids, which fixAttr maps.
func (n *node) fixAttr(a *fuse.Attr) {
	a.Ino = n.StableAttr().Ino
	a.Uid, a.Gid = n.u.shownOwner(a.Uid, a.Gid)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.unlinked {
		a.Nlink = 0
	}
	if len(n.dirLayers) > 1 {
		// A merged directory's link count would need every layer counted;
		// overlayfs reports 1, which tools read as "unknown".
		a.Nlink = 1
	}
}

func attrFromStatx(a *fuse.Attr, st *unix.Statx_t) {
	a.Ino = st.Ino
	a.Size = st.Size
	a.Blocks = st.Blocks
	a.Atime = uint64(st.Atime.Sec)
	a.Atimensec = st.Atime.Nsec
	a.Mtime = uint64(st.Mtime.Sec)
	a.Mtimensec = st.Mtime.Nsec
	a.Ctime = uint64(st.Ctime.Sec)
	a.Ctimensec = st.Ctime.Nsec
	a.Mode = uint32(st.Mode)
	a.Nlink = st.Nlink
	a.Owner = fuse.Owner{Uid: st.Uid, Gid: st.Gid}
	a.Rdev = uint32(unix.Mkdev(st.Rdev_major, st.Rdev_minor))
	a.Blksize = st.Blksize
}

func attrFromStat(a *fuse.Attr, st *unix.Stat_t) {
	a.Ino = st.Ino
	a.Size = uint64(st.Size)
	a.Blocks = uint64(st.Blocks)
	a.Atime, a.Atimensec = uint64(st.Atim.Sec), uint32(st.Atim.Nsec)
	a.Mtime, a.Mtimensec = uint64(st.Mtim.Sec), uint32(st.Mtim.Nsec)
	a.Ctime, a.Ctimensec = uint64(st.Ctim.Sec), uint32(st.Ctim.Nsec)
	a.Mode = st.Mode
	a.Nlink = uint32(st.Nlink)
	a.Owner = fuse.Owner{Uid: st.Uid, Gid: st.Gid}
	a.Rdev = uint32(st.Rdev)
	a.Blksize = uint32(st.Blksize)
}

var _ = (fs.NodeLookuper)((*node)(nil))

// Lookup answers from the directory's index; only the attributes of the entry
// found are read from its layer.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if len(name) > nameMax {
		return nil, syscall.ENAMETOOLONG
	}
	idx, err := n.index()
	if err != nil {
		return nil, toErrno(err)
	}
	n.mu.Lock()
	e, ok := idx.names[name]
	var ec entry
	if ok {
		ec = *e
		e.bare = false
	}
	n.mu.Unlock()
	if ec.bare {
		n.u.plus.lookedUpBare()
	}
	if !ok {
		if n.u.tracer != nil {
			n.u.traceMissing(n, idx, name)
		}
		return nil, syscall.ENOENT
	}
	var st unix.Statx_t
	if err := n.u.statx(ec.layer, beneath.Join(n.rel(), name), &st); err != nil {
		return nil, toErrno(err)
	}
	if n.u.tracer != nil {
		n.u.traceFound(n.rel(), name, &ec)
	}
	return n.newChild(ctx, name, &ec, &st, out, false), 0
}

var _ = (fs.NodeGetattrer)((*node)(nil))

func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if fh, ok := asFile(f); ok {
		// A handle of the lower file opened before a copy-up and not yet
		// moved to the copy would tell the old attributes: ask the layer.
		if errno := n.fstat(fh, n.where() == upperLayer, out); errno != syscall.ESTALE {
			return errno
		}
	}
	if n.isOrphan() {
		// Unlinked but open: only a descriptor still reaches the file.
		if fh := n.anyFile(); fh != nil {
			return n.fstat(fh, false, out)
		}
		return syscall.ESTALE
	}
	var st unix.Statx_t
	l, rel := n.where(), n.rel()
	if err := n.u.statx(l, rel, &st); err != nil {
		return toErrno(err)
	}
	attrFromStatx(&out.Attr, &st)
	if l == upperLayer {
		n.metaBlocks(&out.Attr)
	}
	n.u.overrideAt(&out.Attr, l, rel)
	n.fixAttr(&out.Attr)
	return 0
}

// fstat fills out from the handle's descriptor; ESTALE if notLower is set and
// the descriptor is still the lower file's.
func (n *node) fstat(fh *file, notLower bool, out *fuse.AttrOut) syscall.Errno {
	var st unix.Stat_t
	var o statOverride
	var overridden bool
	errno := fh.use(func(fd int, lower bool) syscall.Errno {
		if lower && notLower {
			return syscall.ESTALE
		}
		if err := unix.Fstat(fd, &st); err != nil {
			return toErrno(err)
		}
		if n.u.overridable(st.Mode) {
			o, overridden = n.u.readOverrideFd(fd)
		}
		return 0
	})
	if errno != 0 {
		return errno
	}
	attrFromStat(&out.Attr, &st)
	if overridden {
		o.apply(&out.Attr)
	}
	n.fixAttr(&out.Attr)
	return 0
}

// isOrphan reports whether the node has lost every name in the tree.
func (n *node) isOrphan() bool {
	if n.isRoot() {
		return false
	}
	_, p := n.Parent()
	return p == nil
}

// anyFile returns one open handle of the node, or nil.
func (n *node) anyFile() *file {
	n.mu.Lock()
	defer n.mu.Unlock()
	for f := range n.fds {
		return f
	}
	return nil
}

var _ = (fs.NodeReadlinker)((*node)(nil))

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	rel := n.rel()
	dir, name := beneath.Split(rel)
	fd, err := beneath.OpenDir(n.u.layers[n.where()].root, dir)
	if err != nil {
		return nil, toErrno(err)
	}
	defer unix.Close(fd)
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		k, err := unix.Readlinkat(fd, name, buf)
		if err != nil {
			return nil, toErrno(err)
		}
		if k < size {
			return buf[:k], 0
		}
	}
}

var _ = (fs.NodeStatfser)((*node)(nil))

// Statfs reports the upper's filesystem, where new data goes; a read-only union
// reports its top layer's.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	l := n.u.layers[upperLayer]
	if l == nil {
		l = n.u.layers[1]
	}
	var st syscall.Statfs_t
	if err := syscall.Fstatfs(l.root, &st); err != nil {
		return toErrno(err)
	}
	out.FromStatfsT(&st)
	return 0
}

// nameMax is NAME_MAX: longer names are refused before they reach a layer.
const nameMax = 255

// toErrno turns an error into the errno the kernel gets, exactly once at the FUSE
// edge. go-fuse's own ToErrno does not look through %w wrapping.
func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}
