package unionfs

import (
	"context"
	"errors"
	"os"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/beneath"
	"github.com/strata-fs/strata/whiteout"
)

// prepareCreate checks that name may be created in n and brings n into the upper.
func (n *node) prepareCreate(name string) (*dirIndex, error) {
	if len(name) > nameMax {
		return nil, syscall.ENAMETOOLONG
	}
	if whiteout.ValidName(name) != nil {
		// ".wh.*" would read back as a whiteout.
		return nil, syscall.EINVAL
	}
	if n.u.readOnly() {
		return nil, errReadOnly
	}
	idx, err := n.index()
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	_, exists := idx.names[name]
	n.mu.Unlock()
	if exists {
		return nil, syscall.EEXIST
	}
	if err := n.copyUp(-1); err != nil {
		return nil, err
	}
	return idx, nil
}

// owner is who a new entry in n belongs to: the caller, with the directory's group
// when the directory is set-group-ID (and then a new directory inherits the bit).
func (n *node) owner(ctx context.Context) (uid, gid int, setgid bool, err error) {
	uid, gid = 0, 0
	if c, ok := fuse.FromContext(ctx); ok {
		uid, gid = int(c.Uid), int(c.Gid)
	}
	g, err := n.dirGroup()
	if err != nil {
		return 0, 0, false, err
	}
	if uid, gid, err = n.u.storedOwner(uid, gid); err != nil {
		return 0, 0, false, err
	}
	if g.setgid {
		gid = int(g.gid) // stored already
	}
	return uid, gid, g.setgid, nil
}

// dirGroup is what a new entry needs of its directory's attributes: the
// set-group-ID bit and the group. They change only by a SETATTR or an xattr
// change (an ACL may clear the bit) through the union, which forget them; and
// the kernel holds the directory locked for a create in it, as for those.
type dirGroup struct {
	gid    uint32
	setgid bool
	known  bool
}

// dirGroup returns n's dirGroup, from memory once read from its upper directory.
func (n *node) dirGroup() (dirGroup, error) {
	n.mu.Lock()
	g := n.group
	n.mu.Unlock()
	if g.known {
		return g, nil
	}
	var st unix.Statx_t
	if err := n.u.statx(upperLayer, n.rel(), &st); err != nil {
		return g, err
	}
	if n.u.overridable(uint32(st.Mode)) {
		// The directory's mode and group are the ones it shows.
		if o, ok := n.u.readOverrideAt(upperLayer, n.rel()); ok {
			st.Mode = st.Mode&syscall.S_IFMT | uint16(o.mode)
			st.Gid = o.gid
		}
	}
	g = dirGroup{gid: st.Gid, setgid: st.Mode&syscall.S_ISGID != 0, known: true}
	n.mu.Lock()
	n.group = g
	n.mu.Unlock()
	return g, nil
}

// forgetGroup drops what dirGroup knows, after a change of n's attributes.
func (n *node) forgetGroup() {
	n.mu.Lock()
	n.group = dirGroup{}
	n.mu.Unlock()
}

// make creates name in n with create (see cow.Upper.Make) and returns its node.
// mode is the new entry's st_mode: its type, and its permission bits for the
// stat override.
func (n *node) make(ctx context.Context, name string, mode uint32, out *fuse.EntryOut, create func(dirfd int, name string) error) (*node, error) {
	return n.makeFile(ctx, name, mode, out, func(dirfd int, name string, _ *fileOwner) error {
		return create(dirfd, name)
	}, nil)
}

// fileOwner is who a new regular file belongs to, when its create function
// gives it away itself: fchown(2) of the descriptor it opened is one system
// call, where Make's chown of a name is three (stat, chown, chmod).
type fileOwner struct{ uid, gid int }

// makeFile is make for a create function that opens the new entry and takes
// its attributes there: stat returns them, instead of a walk of its path,
// unless the entry changed after create (a stat override was written, or it
// was made aside and renamed over a whiteout). create gives the entry to the
// owner it is passed (nil: the stat override keeps the owner). When there is
// nothing to replace or override, create is handed the upper's root and the
// entry's whole path, which it must open with beneath: one system call, where
// Make opens the directory, then the entry in it, then closes the directory.
func (n *node) makeFile(ctx context.Context, name string, mode uint32, out *fuse.EntryOut, create func(dirfd int, rel string, o *fileOwner) error, stat func(*unix.Statx_t) error) (*node, error) {
	idx, err := n.prepareCreate(name)
	if err != nil {
		return nil, err
	}
	uid, gid, setgid, err := n.owner(ctx)
	if err != nil {
		return nil, err
	}
	var o *fileOwner
	mk := func(dirfd int, name string) error { return create(dirfd, name, o) }
	switch {
	case n.u.statOverride != "":
		if setgid && mode&syscall.S_IFMT == syscall.S_IFDIR {
			mode |= syscall.S_ISGID // a new directory inherits the bit
		}
		mk = n.u.overrideCreate(mk, mode, uid, gid)
		uid, gid = -1, -1
	case stat != nil:
		o = &fileOwner{uid: uid, gid: gid}
		uid, gid = -1, -1
	}
	n.mu.Lock()
	replaces := idx.whiteouts[name]
	n.mu.Unlock()
	if o != nil && !replaces {
		rel := beneath.Join(n.rel(), name)
		if err := create(n.u.upper.Root, rel, o); err != nil {
			return nil, &os.PathError{Op: "create", Path: rel, Err: err}
		}
		return n.added(ctx, name, false, out, stat, true)
	}
	opaque := replaces && mode&syscall.S_IFMT == syscall.S_IFDIR
	if err := n.u.upper.Make(n.rel(), name, uid, gid, opaque, replaces, mk); err != nil {
		return nil, err
	}
	if opaque && n.u.tracer != nil {
		n.u.tracer.Trace(Event{Op: OpOpaque, Path: tracePath(beneath.Join(n.rel(), name)), Format: n.u.opaqueFormat()})
	}
	if replaces || n.u.statOverride != "" {
		stat = nil // its ctime moved since
	}
	return n.added(ctx, name, replaces, out, stat, true)
}

// added registers the new upper entry name of n in the index and the tree.
// below says whether lower layers hold the name (it replaced a whiteout).
// stat, if not nil, reads the entry's attributes (from a descriptor). made
// says that the entry is a new object, not a new name of one (a link).
func (n *node) added(ctx context.Context, name string, below bool, out *fuse.EntryOut, stat func(*unix.Statx_t) error, made bool) (*node, error) {
	var st unix.Statx_t
	if stat != nil {
		if err := stat(&st); err != nil {
			return nil, &fsError{op: "statx", layer: upperLayer, rel: beneath.Join(n.rel(), name), err: err}
		}
	} else if err := n.u.statx(upperLayer, beneath.Join(n.rel(), name), &st); err != nil {
		return nil, err
	}
	id := n.u.ids.of(upperLayer, &st, n.StableAttr().Ino, name)
	e := &entry{layer: upperLayer, mode: id.Mode, ino: id.Ino, below: below}
	if id.Mode == syscall.S_IFDIR {
		e.layers = []int{upperLayer}
	}
	n.mu.Lock()
	n.idx.set(name, e)
	delete(n.idx.whiteouts, name)
	n.mu.Unlock()
	n.listingChanged()
	ch := n.newChild(ctx, name, e, &st, out, made)
	return ch.Operations().(*node), nil
}

var _ = (fs.NodeCreater)((*node)(nil))

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	fd := -1
	onDisk := n.u.backingMode(mode & 07777)
	var st unix.Statx_t
	statFd := func() error {
		return unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &st)
	}
	create := func(dirfd int, rel string, o *fileOwner) error {
		var err error
		fd, err = beneath.Open(dirfd, rel, int(flags&keptOpenFlags)|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, onDisk)
		if err != nil {
			return err
		}
		// Owner and mode are most often right already (the daemon's
		// umask, a default ACL or a set-group-ID directory can make them
		// differ): a stat costs one system call, where fixing both
		// blindly costs two, and the stat is needed anyway.
		err = statFd()
		chowned := false
		if err == nil && o != nil && (int(st.Uid) != o.uid || int(st.Gid) != o.gid) {
			err = unix.Fchown(fd, o.uid, o.gid)
			chowned = true
		}
		if err == nil && (chowned || uint32(st.Mode)&07777 != onDisk) {
			// After the chown, which clears set-user-ID; and the daemon's
			// umask must not touch the mode the kernel computed.
			err = unix.Fchmod(fd, onDisk)
			if err == nil {
				err = statFd()
			}
		}
		if err != nil {
			unlinkBeneath(dirfd, rel) // made here, and half done
		}
		return err
	}
	stat := func(out *unix.Statx_t) error {
		*out = st // taken by create, after the last change
		return nil
	}
	child, err := n.makeFile(ctx, name, syscall.S_IFREG|mode&07777, out, create, stat)
	if err != nil {
		if fd >= 0 {
			_ = unix.Close(fd) // the entry was not made; nothing to keep
		}
		return nil, nil, 0, toErrno(err)
	}
	// A new node: no lower backing file.
	f, err := child.addFile(fd, false, n.u.killpriv && writes(flags) && hasSetIDBits(uint32(st.Mode)))
	if err != nil {
		_ = unix.Close(fd)
		return nil, nil, 0, toErrno(err)
	}
	return child.EmbeddedInode(), f.handle(), openFlags, 0
}

// unlinkBeneath removes the file rel beneath dirfd, if it can.
func unlinkBeneath(dirfd int, rel string) {
	dir, name := beneath.Split(rel)
	dfd, err := beneath.OpenDir(dirfd, dir)
	if err != nil {
		return
	}
	defer unix.Close(dfd)
	_ = unix.Unlinkat(dfd, name, 0)
}

var _ = (fs.NodeMkdirer)((*node)(nil))

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	onDisk := n.u.backingMode(mode & 07777)
	child, err := n.make(ctx, name, syscall.S_IFDIR|mode&07777, out, func(dirfd int, nm string) error {
		if err := unix.Mkdirat(dirfd, nm, onDisk); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, nm, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		// Keep a set-group-ID bit the filesystem inherited from the parent.
		return unix.Fchmodat(dirfd, nm, onDisk|st.Mode&syscall.S_ISGID, 0)
	})
	if err != nil {
		return nil, toErrno(err)
	}
	return child.EmbeddedInode(), 0
}

var _ = (fs.NodeMknoder)((*node)(nil))

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if whiteout.IsOverlayWhiteout(mode, uint64(dev)) {
		// A 0/0 character device is a whiteout on disk: it would vanish.
		return nil, syscall.EPERM
	}
	child, err := n.make(ctx, name, mode, out, func(dirfd int, nm string) error {
		if err := unix.Mknodat(dirfd, nm, mode, int(dev)); err != nil {
			return err
		}
		return unix.Fchmodat(dirfd, nm, mode&07777, 0)
	})
	if err != nil {
		return nil, toErrno(err)
	}
	return child.EmbeddedInode(), 0
}

var _ = (fs.NodeSymlinker)((*node)(nil))

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	child, err := n.make(ctx, name, syscall.S_IFLNK, out, func(dirfd int, nm string) error {
		return unix.Symlinkat(target, dirfd, nm)
	})
	if err != nil {
		return nil, toErrno(err)
	}
	return child.EmbeddedInode(), 0
}

var _ = (fs.NodeLinker)((*node)(nil))

// Link copies the target up (a hard link cannot span layers) and links it there.
func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t, ok := target.(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	if n.u.readOnly() {
		return nil, errReadOnly
	}
	if err := t.copyUp(-1); err != nil {
		return nil, toErrno(err)
	}
	idx, err := n.prepareCreate(name)
	if err != nil {
		return nil, toErrno(err)
	}
	// The source: its upper name, or for a file without one (O_TMPFILE, or
	// unlinked while open) its open descriptor.
	tdfd := -1
	tname, tflags := "", unix.AT_EMPTY_PATH
	if fh := t.anyFile(); t.isOrphan() && fh != nil {
		if fd, errno := fh.dupUpper(); errno == 0 {
			tdfd = fd
			defer unix.Close(fd)
		}
	}
	if tdfd < 0 {
		var tdir string
		tdir, tname = beneath.Split(t.rel())
		tflags = 0
		tdfd, err = beneath.OpenDir(n.u.layers[upperLayer].root, tdir)
		if err != nil {
			return nil, toErrno(err)
		}
		defer unix.Close(tdfd)
	}
	n.mu.Lock()
	replaces := idx.whiteouts[name]
	n.mu.Unlock()
	err = n.u.upper.Make(n.rel(), name, -1, -1, false, replaces, func(dirfd int, nm string) error {
		return unix.Linkat(tdfd, tname, dirfd, nm, tflags)
	})
	if err != nil {
		return nil, toErrno(err)
	}
	child, err := n.added(ctx, name, replaces, out, nil, false)
	if err != nil {
		return nil, toErrno(err)
	}
	return child.EmbeddedInode(), 0
}

// lookupEntry returns a copy of the index entry for name in n.
func (n *node) lookupEntry(name string) (entry, *dirIndex, error) {
	idx, err := n.index()
	if err != nil {
		return entry{}, nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	e, ok := idx.names[name]
	if !ok {
		return entry{}, nil, syscall.ENOENT
	}
	return *e, idx, nil
}

// child returns the node of name in n if the kernel knows it, else nil.
func (n *node) child(name string) *node {
	if ch := n.GetChild(name); ch != nil {
		return ch.Operations().(*node)
	}
	return nil
}

var _ = (fs.NodeUnlinker)((*node)(nil))

// Unlink removes name; a name that a lower layer holds is replaced by a whiteout.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	e, _, err := n.lookupEntry(name)
	if err != nil {
		return toErrno(err)
	}
	if e.mode == syscall.S_IFDIR {
		return syscall.EISDIR
	}
	return toErrno(n.remove(name, &e, false))
}

var _ = (fs.NodeRmdirer)((*node)(nil))

// Rmdir removes a directory that is empty in the merged view; what the upper holds
// of it (whiteouts, markers) goes with it.
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	e, _, err := n.lookupEntry(name)
	if err != nil {
		return toErrno(err)
	}
	if e.mode != syscall.S_IFDIR {
		return syscall.ENOTDIR
	}
	empty, err := n.emptyDir(name, &e)
	if err != nil {
		return toErrno(err)
	}
	if !empty {
		return syscall.ENOTEMPTY
	}
	return toErrno(n.remove(name, &e, true))
}

// emptyDir reports whether the directory entry e, named name in n, shows no
// entries in the merged view.
func (n *node) emptyDir(name string, e *entry) (bool, error) {
	var idx *dirIndex
	var err error
	if ch := n.child(name); ch != nil {
		idx, err = ch.index()
		if err == nil {
			ch.mu.Lock()
			defer ch.mu.Unlock()
		}
	} else {
		idx, err = n.u.buildIndex(beneath.Join(n.rel(), name), e.layers)
	}
	if err != nil {
		return false, err
	}
	return len(idx.names) == 0, nil
}

// remove takes name (entry e) out of n: a whiteout when a lower layer holds it,
// else a plain removal from the upper.
func (n *node) remove(name string, e *entry, dir bool) (rerr error) {
	if n.u.readOnly() {
		return errReadOnly
	}
	needWhiteout := e.layer != upperLayer || e.below
	if err := n.copyUp(-1); err != nil {
		return err
	}
	rel := n.rel()
	crel := beneath.Join(rel, name)
	var gone *unix.Statx_t // the upper inode that loses its last name
	if e.layer == upperLayer {
		var st unix.Statx_t
		if err := n.u.statx(upperLayer, crel, &st); err != nil {
			return err
		}
		if st.Nlink <= 1 || dir {
			gone = &st
		}
	}
	if gone != nil {
		dev := unix.Mkdev(gone.Dev_major, gone.Dev_minor)
		if id, ok := n.u.ids.forget(dev, gone.Ino); ok {
			defer func() {
				if rerr != nil {
					n.u.ids.remember(dev, gone.Ino, id) // still there after all
				}
			}()
		}
	}
	var err error
	switch {
	case needWhiteout:
		err = n.u.upper.Whiteout(rel, name)
	case dir:
		err = n.u.unlinkUpper(rel, name, unix.AT_REMOVEDIR)
		if errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST) {
			// Only whiteouts and markers are left in it.
			err = n.u.upper.RemoveAll(crel)
		}
	default:
		err = n.u.unlinkUpper(rel, name, 0)
	}
	if err != nil {
		return err
	}
	if n.u.tracer != nil {
		if needWhiteout {
			n.u.tracer.Trace(Event{Op: OpWhiteout, Path: tracePath(crel), Format: n.u.whiteoutFormat(name)})
		} else {
			n.u.tracer.Trace(Event{Op: OpRemove, Path: tracePath(crel)})
		}
	}
	n.mu.Lock()
	n.idx.remove(name)
	if needWhiteout {
		n.idx.whiteouts[name] = true
	}
	n.mu.Unlock()
	n.listingChanged()
	if ch := n.child(name); ch != nil && e.layer != upperLayer {
		ch.mu.Lock()
		ch.unlinked = true
		ch.mu.Unlock()
	}
	return nil
}

func (u *union) unlinkUpper(dirRel, name string, flags int) error {
	dfd, err := beneath.OpenDir(u.layers[upperLayer].root, dirRel)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	if err := unix.Unlinkat(dfd, name, flags); err != nil {
		return &fsError{op: "unlinkat", layer: upperLayer, rel: beneath.Join(dirRel, name), err: err}
	}
	return nil
}

var _ = (fs.NodeFsyncer)((*node)(nil))

// Fsync of a directory reaches the upper's copy of it, so that a rename or create
// made durable by the caller is durable in the upper.
func (n *node) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	if fh, ok := asFile(f); ok {
		return fh.Fsync(ctx, flags)
	}
	if n.u.readOnly() || n.where() != upperLayer {
		return 0
	}
	fd, err := beneath.Open(n.u.layers[upperLayer].root, n.rel(), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return toErrno(err)
	}
	defer unix.Close(fd)
	return toErrno(unix.Fsync(fd))
}

var _ = (fs.NodeTmpfiler)((*node)(nil))

// Tmpfile makes an unnamed file (O_TMPFILE) in the upper's copy of the directory.
// It gets a name only if the caller links it in, which Link does from its
// descriptor.
func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if n.u.readOnly() {
		return nil, nil, 0, errReadOnly
	}
	if err := n.copyUp(-1); err != nil {
		return nil, nil, 0, toErrno(err)
	}
	uid, gid, _, err := n.owner(ctx)
	if err != nil {
		return nil, nil, 0, toErrno(err)
	}
	onDisk := n.u.backingMode(mode & 07777)
	fd, err := beneath.Open(n.u.layers[upperLayer].root, n.rel(), int(flags&keptOpenFlags)|unix.O_TMPFILE, onDisk)
	if err != nil {
		return nil, nil, 0, toErrno(err)
	}
	if n.u.statOverride != "" {
		o := statOverride{uid: uint32(uid), gid: uint32(gid), mode: mode & 07777}
		err = unix.Fsetxattr(fd, n.u.statOverride, o.value(), 0)
	} else {
		err = unix.Fchown(fd, uid, gid)
	}
	if err == nil {
		err = unix.Fchmod(fd, onDisk)
	}
	var st unix.Statx_t
	if err == nil {
		err = unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &st)
	}
	if err != nil {
		_ = unix.Close(fd) // the file has no name; closing frees it
		return nil, nil, 0, toErrno(err)
	}
	id := n.u.ids.of(upperLayer, &st, 0, "")
	child := &node{u: n.u, layer: upperLayer}
	ch := n.NewInode(ctx, child, id)
	attrFromStatx(&out.Attr, &st)
	if n.u.overridable(uint32(st.Mode)) {
		if o, ok := n.u.readOverrideFd(fd); ok {
			o.apply(&out.Attr)
		}
	}
	child.fixAttr(&out.Attr)
	// A new node: no lower backing file.
	f, err := child.addFile(fd, false, n.u.killpriv && writes(flags) && hasSetIDBits(uint32(st.Mode)))
	if err != nil {
		_ = unix.Close(fd)
		return nil, nil, 0, toErrno(err)
	}
	return ch, f.handle(), openFlags, 0
}
