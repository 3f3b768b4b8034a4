package unionfs

import (
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
	"github.com/strata-fs/strata/internal/beneath"
)

// errReadOnly is the answer of a read-only union to every change.
var errReadOnly = syscall.EROFS

// copyUp brings the node into the upper layer, its parents first; size limits the
// data copied (see cow.Options). It is a no-op for a node already there.
//
// A node already in the upper stays as it is, a metacopy too: copyUpData is
// for callers about to change the data.
func (n *node) copyUp(size int64) error {
	return n.copyUpOpt(size, false)
}

// copyUpData brings the node's data into the upper, for a write or a
// truncation to size: a copy-up, or the data of a metacopy.
func (n *node) copyUpData(size int64) error {
	if err := n.copyUpOpt(size, false); err != nil {
		return err
	}
	if n.StableAttr().Mode != syscall.S_IFREG {
		return nil
	}
	return n.copyData(size)
}

// copyUpMeta brings the node into the upper for a change of its attributes
// only: a metacopy of a lower regular file when the union makes them, else a
// whole copy-up.
func (n *node) copyUpMeta() error {
	meta := n.u.metacopy && n.StableAttr().Mode == syscall.S_IFREG
	return n.copyUpOpt(-1, meta)
}

func (n *node) copyUpOpt(size int64, meta bool) error {
	if n.u.readOnly() {
		return errReadOnly
	}
	if n.where() == upperLayer {
		return nil
	}
	p, name := n.parent()
	if p == nil {
		// Unlinked while open: there is no name to copy it to.
		return syscall.ESTALE
	}
	if err := p.copyUp(-1); err != nil {
		return err
	}

	n.copyMu.Lock()
	defer n.copyMu.Unlock()
	n.mu.Lock()
	from := n.layer
	n.mu.Unlock()
	if from == upperLayer {
		return nil // another writer copied it while we waited
	}
	rel := n.rel()
	var start time.Time
	if n.u.tracer != nil {
		start = time.Now()
	}
	res, err := n.u.upper.CopyUp(cow.Source{Root: n.u.layers[from].root, Rel: rel}, rel, cow.Options{Size: size, MetaOnly: meta})
	if err != nil {
		return err
	}
	if n.u.tracer != nil {
		n.u.traceCopyUp(rel, from, &res, start)
	}
	id := n.StableAttr()
	if res.Method != cow.Metacopy {
		id = n.copyID() // the data moves, and readers of the lower file stay
	}
	n.u.ids.copiedUp(&res.Stat_t, id)

	n.mu.Lock()
	n.layer = upperLayer
	if res.Method == cow.Metacopy {
		// The data stays where it is, and so do the handles reading it.
		n.meta, n.dataLayer, n.dataRel = isMetacopy, from, rel
	} else {
		n.meta = notMetacopy
	}
	if n.dirLayers != nil {
		n.dirLayers = append([]int{upperLayer}, n.dirLayers...)
		if n.idx != nil {
			n.idx.layers = append([]int{upperLayer}, n.idx.layers...)
		}
	}
	// Cached handles opened on the lower file read the upper copy from now
	// on, so that every reader sees what writers write (the kernel shares one
	// page cache between them). Handles passed through keep the lower file.
	if n.meta != isMetacopy {
		for f := range n.fds {
			f.reopenUpper(rel)
		}
	}
	n.mu.Unlock()

	p.mu.Lock()
	if p.idx != nil {
		if e, ok := p.idx.names[name]; ok {
			e.layer = upperLayer
			e.below = true
			if e.layers != nil {
				e.layers = append([]int{upperLayer}, e.layers...)
			}
		}
	}
	p.mu.Unlock()
	return nil
}

// copyID is the identity the node's upper copy stands for: the node's own,
// unless the kernel reads the node's lower file for open handles, as their
// backing file. Then the copy gets a generation of its own, so that the next
// lookup of the name makes another node, and the kernel another inode, whose
// backing file can be the copy (see addFile). The old inode stays with the
// readers of the lower file, as an overlayfs file opened before a copy-up
// stays with the lower file.
func (n *node) copyID() fs.StableAttr {
	id := n.StableAttr()
	n.mu.Lock()
	busy := n.lowerBacking > 0
	n.mu.Unlock()
	if busy {
		id.Gen = n.u.ids.newGen()
	}
	return id
}

// copyUpTree copies the whole merged directory n, every entry below it, into the
// upper, so that the upper alone holds what the union shows there. A rename of a
// lower directory needs it: the directory's lower parts cannot move.
func (n *node) copyUpTree() error {
	if err := n.copyUp(-1); err != nil {
		return err
	}
	return n.u.copyTreeBelow(n.rel(), n, nil, map[devIno]string{})
}

// copyTreeBelow copies up every entry of the merged directory rel, recursively.
// dir is the directory's node when there is one, so that its listing and its
// children's nodes learn where their entries live now; without a node, layers
// are the directory's layers. links maps each multiply-linked lower file copied
// so far to its upper path, so that its other names in the tree are linked to
// that copy, as cp -a would, rather than copied again.
func (u *union) copyTreeBelow(rel string, dir *node, layers []int, links map[devIno]string) error {
	var idx *dirIndex
	var err error
	if dir != nil {
		idx, err = dir.index()
	} else {
		idx, err = u.buildIndex(rel, layers)
	}
	if err != nil {
		return err
	}
	if dir != nil {
		dir.mu.Lock()
	}
	type todo struct {
		name string
		e    entry
	}
	var list []todo
	for _, name := range idx.list() {
		list = append(list, todo{name, *idx.names[name]})
	}
	if dir != nil {
		dir.mu.Unlock()
	}
	for _, t := range list {
		crel := beneath.Join(rel, t.name)
		var child *node
		if dir != nil {
			if ch := dir.GetChild(t.name); ch != nil {
				child = ch.Operations().(*node)
			}
		}
		if t.e.layer != upperLayer && t.e.mode != syscall.S_IFDIR {
			linked, err := u.linkInTree(dir, rel, t.name, &t.e, child, links)
			if err != nil {
				return err
			}
			if linked {
				continue
			}
		}
		if child != nil {
			if err := child.copyUpMeta(); err != nil {
				return err
			}
		} else if t.e.layer != upperLayer {
			if err := u.copyUpEntry(dir, rel, t.name, &t.e); err != nil {
				return err
			}
		}
		if t.e.mode == syscall.S_IFDIR {
			layers := t.e.layers
			if t.e.layer != upperLayer {
				layers = append([]int{upperLayer}, layers...)
			}
			if err := u.copyTreeBelow(crel, child, layers, links); err != nil {
				return err
			}
		}
	}
	return nil
}

// copyUpEntry copies up one entry that has no node, recording the identity it had
// so that a later lookup finds the same inode number.
func (u *union) copyUpEntry(dir *node, dirRel, name string, e *entry) error {
	rel := beneath.Join(dirRel, name)
	var before unix.Statx_t
	if err := u.statx(e.layer, rel, &before); err != nil {
		return err
	}
	var parentIno uint64
	if dir != nil {
		parentIno = dir.StableAttr().Ino
	}
	id := u.ids.of(e.layer, &before, parentIno, name)
	var start time.Time
	if u.tracer != nil {
		start = time.Now()
	}
	// A move needs no data: a regular file goes up as a metacopy when the
	// union makes them (its node, made later, learns so from the marker).
	meta := u.metacopy && e.mode == syscall.S_IFREG
	res, err := u.upper.CopyUp(cow.Source{Root: u.layers[e.layer].root, Rel: rel}, rel, cow.Options{Size: -1, MetaOnly: meta})
	if err != nil {
		return err
	}
	if u.tracer != nil {
		u.traceCopyUp(rel, e.layer, &res, start)
	}
	u.ids.copiedUp(&res.Stat_t, id)
	if dir != nil {
		dir.mu.Lock()
		if de, ok := dir.idx.names[name]; ok {
			de.layer = upperLayer
			de.below = true
			if de.layers != nil {
				de.layers = append([]int{upperLayer}, de.layers...)
			}
		}
		dir.mu.Unlock()
	}
	return nil
}

func (u *union) allLayers() []int {
	var ls []int
	for i, l := range u.layers {
		if l != nil {
			ls = append(ls, i)
		}
	}
	return ls
}

// linkInTree makes the upper entry for a lower file with several names a hard
// link to the copy of an earlier name, if one was copied in this tree; else it
// notes this name as the copy to link to. It reports whether it linked.
func (u *union) linkInTree(dir *node, dirRel, name string, e *entry, child *node, links map[devIno]string) (bool, error) {
	rel := beneath.Join(dirRel, name)
	var st unix.Statx_t
	if err := u.statx(e.layer, rel, &st); err != nil {
		return false, err
	}
	if st.Nlink < 2 {
		return false, nil
	}
	key := devIno{unix.Mkdev(st.Dev_major, st.Dev_minor), st.Ino}
	first, ok := links[key]
	if !ok {
		links[key] = rel
		return false, nil
	}
	root := u.layers[upperLayer].root
	fdir, fname := beneath.Split(first)
	ffd, err := beneath.OpenDir(root, fdir)
	if err != nil {
		return false, err
	}
	defer unix.Close(ffd)
	tfd, err := beneath.OpenDir(root, dirRel)
	if err != nil {
		return false, err
	}
	defer unix.Close(tfd)
	var pst unix.Stat_t
	parentTimes := unix.Fstat(tfd, &pst) == nil
	if err := unix.Linkat(ffd, fname, tfd, name, 0); err != nil {
		return false, &fsError{op: "linkat", layer: upperLayer, rel: rel, err: err}
	}
	if u.tracer != nil {
		u.tracer.Trace(Event{Op: OpCopyUp, Path: tracePath(rel), Layer: u.layerRef(e.layer), Type: typeName(e.mode), LinkTo: tracePath(first)})
	}
	if parentTimes {
		// Like a copy-up, linking in a copy changes nothing the union shows.
		ts := []unix.Timespec{unix.NsecToTimespec(pst.Atim.Nano()), unix.NsecToTimespec(pst.Mtim.Nano())}
		_ = unix.UtimesNanoAt(tfd, ".", ts, 0) // cosmetic; the link is made
	}
	if child != nil {
		child.mu.Lock()
		child.layer = upperLayer
		child.mu.Unlock()
	}
	if dir != nil {
		dir.mu.Lock()
		if de, ok := dir.idx.names[name]; ok {
			de.layer = upperLayer
			de.below = true
		}
		dir.mu.Unlock()
	}
	return true, nil
}
