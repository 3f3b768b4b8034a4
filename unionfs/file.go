package unionfs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/beneath"
)

// file is an open regular file: a descriptor of the layer file that holds the
// node's data. With passthrough the kernel reads and writes that descriptor's
// file itself and these methods only see what it does not take over.
type file struct {
	node        *node
	fd          int  // -1 until a deferred open (below) happens
	lower       bool // fd is a lower layer's file, opened read-only
	passthrough bool

	// A reader of a lower file served from the page cache opens it at its
	// first need, not at OPEN: most opens of a small file find its pages
	// cached and read nothing, and then cost no system call at all (tar of
	// a tree read before, a build reading its sources). layer, rel and flags
	// say which file; lower layers do not change while mounted, so the
	// later open finds the file an open at OPEN would have found.
	layer int
	rel   string
	flags int

	// mu guards fd against its swap by reopenUpper and its close. Lock
	// order: the node's mu, then this.
	mu     sync.RWMutex
	closed bool
}

// passthroughFile is a file whose descriptor the kernel may use as the backing
// file. It is a type of its own because go-fuse attaches a node's registered
// backing file to every open whose handle implements FilePassthroughFder,
// without asking the handle, as long as an earlier open keeps that backing
// registered: a handle that must not use the backing file must not have the
// method at all.
type passthroughFile struct{ *file }

var (
	_ = (fs.FilePassthroughFder)((*passthroughFile)(nil))
	_ = (fs.FileReader)((*file)(nil))
	_ = (fs.FileWriter)((*file)(nil))
	_ = (fs.FileFsyncer)((*file)(nil))
	_ = (fs.FileFlusher)((*file)(nil))
	_ = (fs.FileReleaser)((*file)(nil))
	_ = (fs.FileLseeker)((*file)(nil))
	_ = (fs.FileAllocater)((*file)(nil))
)

// PassthroughFd offers the descriptor as the kernel's backing file.
func (f *passthroughFile) PassthroughFd() (int, bool) {
	return f.fd, true
}

// handle is what the kernel gets for the file: with or without passthrough.
func (f *file) handle() fs.FileHandle {
	if f.passthrough {
		return &passthroughFile{f}
	}
	return f
}

func (f *file) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if len(dest) >= spliceMin {
		return &fileRead{f: f, off: off, size: len(dest)}, 0 // splice.go
	}
	n, errno := f.pread(dest, off)
	if errno != 0 {
		return nil, errno
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// pread reads the handle's file at off into buf.
func (f *file) pread(buf []byte, off int64) (int, syscall.Errno) {
	var n int
	errno := f.use(func(fd int, _ bool) syscall.Errno {
		var err error
		n, err = unix.Pread(fd, buf, off)
		return toErrno(err)
	})
	return n, errno
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	var n int
	errno := f.use(func(fd int, lower bool) syscall.Errno {
		if lower {
			return syscall.EBADF // never reached: writers open the upper copy
		}
		var err error
		n, err = unix.Pwrite(fd, data, off)
		return toErrno(err)
	})
	return uint32(n), errno
}

func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return f.use(func(fd int, _ bool) syscall.Errno {
		const fdatasync = 1 // FUSE_FSYNC_FDATASYNC
		if flags&fdatasync != 0 {
			return toErrno(unix.Fdatasync(fd))
		}
		return toErrno(unix.Fsync(fd))
	})
}

// Flush is close(2) of one descriptor of the file, on kernels that send it
// despite FOPEN_NOFLUSH; the data is already with the layer's filesystem, which
// reports its own errors at fsync.
func (f *file) Flush(ctx context.Context) syscall.Errno { return 0 }

func (f *file) Release(ctx context.Context) syscall.Errno {
	n := f.node
	n.mu.Lock()
	if _, ok := n.fds[f]; !ok {
		n.mu.Unlock()
		return 0
	}
	delete(n.fds, f)
	if f.passthrough {
		n.passedThrough--
		if f.lower {
			n.lowerBacking--
		}
	} else {
		n.cached--
	}
	n.mu.Unlock()
	n.u.open.remove(f)
	return toErrno(f.close())
}

// close closes the handle's descriptor, if it has one, for good.
func (f *file) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	if f.fd < 0 {
		return nil // never opened
	}
	return unix.Close(f.fd)
}

// openFiles is the set of handles not yet released.
type openFiles struct {
	mu    sync.Mutex
	files map[*file]struct{}
}

func (o *openFiles) add(f *file) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.files == nil {
		o.files = map[*file]struct{}{}
	}
	o.files[f] = struct{}{}
}

func (o *openFiles) remove(f *file) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.files, f)
}

// closeAll closes every handle left, once the kernel can send no more
// requests.
func (o *openFiles) closeAll() {
	o.mu.Lock()
	files := o.files
	o.files = nil
	o.mu.Unlock()
	for f := range files {
		_ = f.close() // after unmount: nobody to tell
	}
}

func (f *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	var n int64
	errno := f.use(func(fd int, _ bool) syscall.Errno {
		var err error
		n, err = unix.Seek(fd, int64(off), int(whence))
		return toErrno(err)
	})
	return uint64(n), errno
}

func (f *file) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	return f.use(func(fd int, lower bool) syscall.Errno {
		if lower {
			return syscall.EBADF
		}
		return toErrno(unix.Fallocate(fd, mode, int64(off), int64(size)))
	})
}

// openFlags are the FOPEN flags of every open file. FOPEN_KEEP_CACHE: the
// kernel keeps a file's pages across opens, since only this daemon changes the
// layers. FOPEN_NOFLUSH: close(2) sends no FLUSH, one round trip less per
// file; strata has nothing to do then (writes reach the layer as they come,
// and the kernel keeps POSIX locks itself).
const openFlags = fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH

var _ = (fs.NodeOpener)((*node)(nil))

// Open opens the node's file in its layer; a write, or O_TRUNC, copies the node
// up first (without data when O_TRUNC makes it moot).
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	write := flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0
	if write {
		size := int64(-1)
		if flags&syscall.O_TRUNC != 0 {
			size = 0
		}
		if err := n.copyUpData(size); err != nil {
			return nil, 0, toErrno(err)
		}
	}
	f, err := n.openFile(int(flags))
	if err != nil {
		return nil, 0, toErrno(err)
	}
	return f.handle(), openFlags, 0
}

// keptOpenFlags are the flags of an OPEN that mean something for the daemon's
// own descriptor of the layer file. The kernel also sends its internal ones,
// __FMODE_EXEC for an execve(2) among them, which openat2 refuses with EINVAL
// (it refuses every flag it does not know). O_DIRECT stays with the kernel's
// side of the file: with passthrough the kernel opens the backing file with the
// caller's own flags, and without it the daemon's reads need not be aligned.
const keptOpenFlags = syscall.O_ACCMODE | syscall.O_APPEND | syscall.O_TRUNC | syscall.O_NONBLOCK |
	syscall.O_DSYNC | syscall.O_SYNC | syscall.O_NOATIME | syscall.O_LARGEFILE

// openFile opens the node's file in its current layer with open(2) flags and
// registers the handle with the node.
//
// It holds the node's copy-up lock from the choice of layer to the handle's
// registration. Otherwise a reader could open the lower file, a writer copy it
// up and open the copy for passthrough, and only then the reader register its
// handle, as cached: the kernel, which allows one I/O mode per inode, would
// fail one of the two opens with EIO. With the lock, a copy-up finds every
// earlier handle registered (and moves it to the copy), and every later open
// finds the copy.
func (n *node) openFile(flags int) (*file, error) {
	n.copyMu.Lock()
	defer n.copyMu.Unlock()
	flags &= keptOpenFlags
	l, rel := n.where(), n.rel()
	if l == upperLayer {
		// A metacopy is read from below; a writer copied its data first.
		dl, drel, ok, err := n.metacopyLocked()
		if err != nil {
			return nil, err
		}
		if ok {
			l, rel = dl, drel
		}
	}
	if l != upperLayer {
		// Lower layers are read-only, whatever the caller asked.
		flags = flags&^(syscall.O_ACCMODE|syscall.O_TRUNC|syscall.O_APPEND) | syscall.O_RDONLY
		if !n.u.lowerMayPassThrough() {
			return n.addLazy(l, rel, flags|syscall.O_NOFOLLOW), nil
		}
	}
	fd, err := beneath.Open(n.u.layers[l].files, rel, flags|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	f, err := n.addFile(fd, l != upperLayer, n.u.killpriv && writes(uint32(flags)) && hasSetID(fd))
	if err != nil {
		_ = unix.Close(fd) // never handed out
		return nil, err
	}
	return f, nil
}

// addFile registers an open descriptor of the node's file and chooses its I/O
// mode. The kernel keeps one mode per inode while it is open: either every open
// passes through, all to one backing file, or none does and all share the page
// cache (it fails an open that breaks the rule with EIO, FOPEN_DIRECT_IO
// included: fuse_file_io_open in fs/fuse/iomode.c). Every file passes through
// when the kernel offers it and no cached handle is open.
//
// A lower file is a backing file only for readers: the kernel opens the
// backing file anew for each open of the inode, with that opener's flags
// (backing_file_open in fs/fuse/passthrough.c), so a writer's open of the same
// inode would write to the lower layer. Writers always open the upper copy
// (Open copies up first), and an upper file cannot join an inode whose backing
// file is a lower one: that open gets ESTALE, after which the kernel walks the
// path again and asks this daemon to look every name up anew (do_filp_open's
// LOOKUP_REVAL retry), and the name now leads to another node, the copy's
// (copyID). The inode of the lower file stays with its readers. That is why
// lower files of a writable union pass through only with
// Config.LowerPassthrough: by default they are cached, so that a copy-up can
// move their handles to the copy (reopenUpper), as overlayfs does.
//
// viaStrata asks for the page-cache mode, whose writes come through strata:
// a writer's handle of a file with set-ID bits to drop (killpriv.go). It is
// granted unless another handle passes through already.
func (n *node) addFile(fd int, lower, viaStrata bool) (*file, error) {
	f := &file{node: n, fd: fd, lower: lower}
	pass := n.u.passthrough.Load()
	if pass && lower && !n.u.readOnly() {
		pass = n.u.lowerPassthrough && passesThrough(fd)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if !lower && n.lowerBacking > 0 {
		return nil, syscall.ESTALE
	}
	if viaStrata && n.passedThrough == 0 {
		pass = false
	}
	f.passthrough = pass && n.cached == 0
	if f.passthrough {
		n.passedThrough++
		if lower {
			n.lowerBacking++
		}
	} else {
		n.cached++
	}
	n.registerLocked(f)
	return f, nil
}

// lowerMayPassThrough reports whether an open of a lower file may pass
// through (addFile), which needs its descriptor at once.
func (u *union) lowerMayPassThrough() bool {
	return u.passthrough.Load() && (u.readOnly() || u.lowerPassthrough)
}

// addLazy registers a cached handle of the lower file rel of layer l that
// opens it at its first need (file.use).
func (n *node) addLazy(l int, rel string, flags int) *file {
	f := &file{node: n, fd: -1, lower: true, layer: l, rel: rel, flags: flags}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.cached++
	n.registerLocked(f)
	return f
}

// registerLocked records a new handle of the node, and of the union (for
// an unmount to close); the caller holds the node's lock.
func (n *node) registerLocked(f *file) {
	if n.fds == nil {
		n.fds = map[*file]struct{}{}
	}
	n.fds[f] = struct{}{}
	n.u.open.add(f)
}

// writes reports whether open(2) flags open for writing.
func writes(flags uint32) bool { return flags&syscall.O_ACCMODE != syscall.O_RDONLY }

// hasSetID reports whether the file fd has set-ID bits a write drops.
func hasSetID(fd int) bool {
	var st unix.Stat_t
	return unix.Fstat(fd, &st) == nil && hasSetIDBits(st.Mode)
}

// lowerPassthroughMin is the size from which a lower file of a writable union
// is passed through. Smaller files, lock and pid files among them, stay in the
// page cache: there a copy-up keeps one kernel inode, so that locks taken on
// the lower file still hold against a writer (the kernel keeps them per inode,
// and a copy-up under passthrough readers gives the copy another one), and
// readers see the writes. Passthrough pays for bigger files, and small ones
// too (2000 warm 8 KiB files read in 0.3 s against 0.75 s cached, go test
// -bench ReadSmallFiles), so the line is one page: lock and pid files.
const lowerPassthroughMin = 4 << 10

// passesThrough reports whether the lower file fd is big enough to pass through.
func passesThrough(fd int) bool {
	var st unix.Stat_t
	return unix.Fstat(fd, &st) == nil && st.Size >= lowerPassthroughMin
}

// use calls fn with the handle's descriptor and whether it is a lower file's,
// held against a swap by reopenUpper and a close by Release for the call,
// opening a deferred one first. fn must not take the node's lock (the lock
// order is node, then file).
func (f *file) use(fn func(fd int, lower bool) syscall.Errno) syscall.Errno {
	f.mu.RLock()
	if f.fd < 0 && !f.closed {
		f.mu.RUnlock()
		if errno := f.open(); errno != 0 {
			return errno
		}
		f.mu.RLock()
	}
	defer f.mu.RUnlock()
	if f.closed {
		return syscall.EBADF
	}
	return fn(f.fd, f.lower)
}

// open opens a deferred handle's file (addLazy).
func (f *file) open() syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fd >= 0 || f.closed {
		return 0 // opened, or moved to the copy, meanwhile
	}
	fd, err := beneath.Open(f.node.u.layers[f.layer].files, f.rel, f.flags, 0)
	if err != nil {
		return toErrno(err)
	}
	f.fd = fd
	return 0
}

// dupUpper returns a descriptor of the caller's own for the handle's file, ESTALE
// when that is still the lower file. The handle's may be closed any time.
func (f *file) dupUpper() (int, syscall.Errno) {
	dup := -1
	errno := f.use(func(fd int, lower bool) syscall.Errno {
		if lower {
			return syscall.ESTALE
		}
		var err error
		dup, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		return toErrno(err)
	})
	return dup, errno
}

// asFile returns the file behind a handle the kernel passed back.
func asFile(h fs.FileHandle) (*file, bool) {
	switch f := h.(type) {
	case *file:
		return f, true
	case *passthroughFile:
		return f.file, true
	}
	return nil, false
}

// reopenUpper points a cached handle of the lower file at the upper copy rel,
// after a copy-up; the caller holds the node's lock. On failure the handle keeps
// reading the lower file, which holds the data as it was before the copy-up. A
// handle passed through keeps its lower file: the kernel reads the backing file
// itself, and the daemon's descriptor must stay the file the kernel reads.
func (f *file) reopenUpper(rel string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed || !f.lower || f.passthrough {
		return
	}
	fd, err := beneath.Open(f.node.u.layers[upperLayer].root, rel, unix.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return
	}
	if f.fd >= 0 {
		_ = unix.Close(f.fd) // read-only: nothing to flush
	}
	f.fd = fd
	f.lower = false
}
