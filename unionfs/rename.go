package unionfs

import (
	"context"
	"errors"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/beneath"
	"github.com/strata-fs/strata/whiteout"
)

var _ = (fs.NodeRenamer)((*node)(nil))

// Rename moves name in n to newName in newParent. Both ends are brought into the
// upper first; a directory with lower parts is copied up whole, since the lower
// parts cannot move, and becomes opaque where it lands if lower layers hold
// something of that name. The old name gets a whiteout when a lower layer holds it.
// No EXDEV reaches the caller.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return syscall.EINVAL // RENAME_WHITEOUT is the union's own business
	}
	if len(newName) > nameMax {
		return syscall.ENAMETOOLONG
	}
	if whiteout.ValidName(newName) != nil {
		return syscall.EINVAL
	}
	if n.u.readOnly() {
		return errReadOnly
	}
	return toErrno(n.rename(name, np, newName, flags))
}

func (n *node) rename(name string, np *node, newName string, flags uint32) (rerr error) {
	se, sidx, err := n.lookupEntry(name)
	if err != nil {
		return err
	}
	didx, err := np.index()
	if err != nil {
		return err
	}
	np.mu.Lock()
	dp, dexists := didx.names[newName]
	var de entry
	if dexists {
		de = *dp
	}
	destWhiteout := didx.whiteouts[newName]
	np.mu.Unlock()
	exchange := flags&unix.RENAME_EXCHANGE != 0
	switch {
	case flags&unix.RENAME_NOREPLACE != 0 && dexists:
		return syscall.EEXIST
	case exchange && !dexists:
		return syscall.ENOENT
	case dexists && !exchange && de.mode == syscall.S_IFDIR:
		if se.mode != syscall.S_IFDIR {
			return syscall.EISDIR
		}
		empty, err := np.emptyDir(newName, &de)
		if err != nil {
			return err
		}
		if !empty {
			return syscall.ENOTEMPTY
		}
	case dexists && !exchange && se.mode == syscall.S_IFDIR:
		return syscall.ENOTDIR
	}
	if n == np && name == newName {
		return nil
	}

	if err := n.copyUp(-1); err != nil {
		return err
	}
	if err := np.copyUp(-1); err != nil {
		return err
	}
	srcMoved, err := n.wholeInUpper(name, &se)
	if err != nil {
		return err
	}
	dstMoved := false
	if exchange {
		if dstMoved, err = np.wholeInUpper(newName, &de); err != nil {
			return err
		}
	}

	srcRel, dstRel := beneath.Join(n.rel(), name), beneath.Join(np.rel(), newName)
	srcBelow := se.layer != upperLayer || se.below
	dstBelow := destWhiteout || (dexists && (de.layer != upperLayer || de.below))
	// A directory arriving where lower layers hold the name must hide them.
	if se.mode == syscall.S_IFDIR && dstBelow {
		if err := n.u.upper.SetOpaque(srcRel); err != nil {
			return err
		}
	}
	if exchange && de.mode == syscall.S_IFDIR && srcBelow {
		if err := n.u.upper.SetOpaque(dstRel); err != nil {
			return err
		}
	}

	var replaced *unix.Statx_t
	if dexists && !exchange && de.layer == upperLayer {
		var st unix.Statx_t
		if err := n.u.statx(upperLayer, dstRel, &st); err == nil && (st.Nlink <= 1 || de.mode == syscall.S_IFDIR) {
			replaced = &st
		}
	}
	renamed := false // the upper rename is done: the replaced inode is gone
	if replaced != nil {
		// Before the rename frees it: see identities.forget.
		dev := unix.Mkdev(replaced.Dev_major, replaced.Dev_minor)
		if id, ok := n.u.ids.forget(dev, replaced.Ino); ok {
			defer func() {
				if rerr != nil && !renamed {
					n.u.ids.remember(dev, replaced.Ino, id) // still there after all
				}
			}()
		}
	}
	if destWhiteout && !dexists && se.mode == syscall.S_IFDIR {
		// rename(2) cannot put a directory over the whiteout's device node.
		if err := n.u.upper.RemoveWhiteout(np.rel(), newName); err != nil {
			return err
		}
	}
	// RENAME_NOREPLACE was checked against the merged view above; in the upper
	// the target may still be a whiteout, which the entry must replace.
	flags &^= unix.RENAME_NOREPLACE
	if !exchange && srcBelow {
		// The old name's whiteout must exist the moment the entry leaves
		// it: written after the rename, a crash in between would show the
		// lower entry again beside the moved one.
		wflags, err := n.u.upper.WhiteoutFirst(n.rel(), name)
		if err != nil {
			return err
		}
		flags |= uint32(wflags)
	}
	err = n.u.renameUpper(n.rel(), name, np.rel(), newName, flags)
	renamed = err == nil
	if err != nil {
		if !(errors.Is(err, unix.ENOTEMPTY) || errors.Is(err, unix.EEXIST)) || !dexists || de.mode != syscall.S_IFDIR {
			return err
		}
		// The target directory is empty in the union but holds whiteouts in
		// the upper, so rename(2) refuses to replace it. Swap the two in one
		// step instead: the target name never shows anything but one of
		// them, even after a crash. The old target, made opaque first so
		// that nothing below the source name shows through it, then goes:
		// replaced by the source's whiteout below, or removed here.
		if err := n.u.upper.SetOpaque(dstRel); err != nil {
			return err
		}
		if err := n.u.renameUpper(n.rel(), name, np.rel(), newName, unix.RENAME_EXCHANGE); err != nil {
			return err
		}
		renamed = true
		if !srcBelow {
			if err := n.u.upper.RemoveAll(srcRel); err != nil {
				return err
			}
		}
	}
	if !exchange && srcBelow {
		if err := n.u.upper.Whiteout(n.rel(), name); err != nil {
			return err
		}
	}
	if destWhiteout && !dexists && se.mode != syscall.S_IFDIR {
		// An OCI whiteout beside the new entry hides nothing; tidy it away.
		if err := n.u.upper.RemoveWhiteout(np.rel(), newName); err != nil {
			return err
		}
	}
	if n.u.tracer != nil {
		n.u.traceRename(srcRel, dstRel, &se, srcMoved, exchange, srcBelow, dstBelow)
	}

	// The indexes: both names now live in the upper.
	moved := func(e entry, below bool) *entry {
		ne := &entry{layer: upperLayer, mode: e.mode, ino: e.ino, below: below}
		if e.mode == syscall.S_IFDIR {
			ne.layers = []int{upperLayer}
		}
		return ne
	}
	// One lock at a time: the kernel serialises renames, but not lookups.
	n.mu.Lock()
	if exchange {
		sidx.set(name, moved(de, srcBelow))
	} else {
		sidx.remove(name)
		if srcBelow {
			sidx.whiteouts[name] = true
		}
	}
	n.mu.Unlock()
	np.mu.Lock()
	didx.set(newName, moved(se, dstBelow))
	delete(didx.whiteouts, newName)
	np.mu.Unlock()
	n.listingChanged()
	np.listingChanged()

	if ch := n.child(name); ch != nil {
		ch.settleInUpper(srcMoved)
	}
	if exchange {
		if ch := np.child(newName); ch != nil {
			ch.settleInUpper(dstMoved)
		}
	} else if ch := np.child(newName); ch != nil && de.layer != upperLayer {
		ch.mu.Lock()
		ch.unlinked = true
		ch.mu.Unlock()
	}
	return nil
}

// wholeInUpper copies the entry name of n up, all of it for a directory with
// lower parts. It reports whether a directory tree was copied.
func (n *node) wholeInUpper(name string, e *entry) (bool, error) {
	ch := n.child(name)
	if e.mode == syscall.S_IFDIR && (e.layer != upperLayer || len(e.layers) > 1) {
		if ch != nil {
			return true, ch.copyUpTree()
		}
		if err := n.u.copyUpEntry(n, n.rel(), name, e); err != nil {
			return false, err
		}
		layers := e.layers
		if e.layer != upperLayer {
			layers = append([]int{upperLayer}, layers...)
		}
		return true, n.u.copyTreeBelow(beneath.Join(n.rel(), name), nil, layers, map[devIno]string{})
	}
	if e.layer == upperLayer {
		return false, nil
	}
	if ch != nil {
		return false, ch.copyUpMeta() // a move needs no data
	}
	return false, n.u.copyUpEntry(n, n.rel(), name, e)
}

// settleInUpper records that the node, and for a moved tree everything known
// below it, now lives only in the upper.
func (n *node) settleInUpper(tree bool) {
	n.mu.Lock()
	n.layer = upperLayer
	if n.dirLayers != nil {
		n.dirLayers = []int{upperLayer}
		if tree && n.idx != nil {
			// Rebuilt from the upper alone, keeping readers' offsets.
			n.replaced, n.idx = n.idx, nil
		} else if n.idx != nil {
			n.idx.layers = []int{upperLayer}
		}
	}
	n.mu.Unlock()
	if !tree {
		return
	}
	for _, ch := range n.Children() {
		ch.Operations().(*node).settleInUpper(true)
	}
}

func (u *union) renameUpper(oldDir, oldName, newDir, newName string, flags uint32) error {
	root := u.layers[upperLayer].root
	ofd, err := beneath.OpenDir(root, oldDir)
	if err != nil {
		return err
	}
	defer unix.Close(ofd)
	nfd, err := beneath.OpenDir(root, newDir)
	if err != nil {
		return err
	}
	defer unix.Close(nfd)
	err = unix.Renameat2(ofd, oldName, nfd, newName, uint(flags))
	if (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EPERM)) && flags&unix.RENAME_WHITEOUT != 0 {
		// A filesystem without RENAME_WHITEOUT, or no CAP_MKNOD on an old
		// kernel: the whiteout comes after the rename (cow.Upper.Whiteout),
		// a moment later.
		err = unix.Renameat2(ofd, oldName, nfd, newName, uint(flags&^unix.RENAME_WHITEOUT))
	}
	if err != nil {
		return &fsError{op: "renameat2", layer: upperLayer, rel: beneath.Join(oldDir, oldName), err: err}
	}
	return nil
}
