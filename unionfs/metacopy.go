package unionfs

import (
	"errors"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
)

// metaState is what the union knows of an upper regular file's metacopy
// marker (cow/metacopy.go).
type metaState uint8

const (
	metaUnknown metaState = iota // not looked at yet: read the marker
	notMetacopy                  // the upper file holds its data
	isMetacopy                   // the data is at dataLayer/dataRel
)

// metacopyLocked reports whether the node is an upper metacopy file, and where
// its data is: the topmost lower layer with an entry at the path the marker
// names (the entry the union showed when the metacopy was made; lowers never
// change). The caller holds copyMu. The marker is read once per node: a file
// made or copied up by this mount is known already.
func (n *node) metacopyLocked() (layer int, rel string, ok bool, err error) {
	return n.metacopyAt("")
}

// metacopyAt is metacopyLocked for a node whose path is rel when not yet
// in the tree ("": the node's own).
func (n *node) metacopyAt(path string) (layer int, rel string, ok bool, err error) {
	if n.StableAttr().Mode != syscall.S_IFREG {
		return 0, "", false, nil
	}
	n.mu.Lock()
	l, st, dl, dr := n.layer, n.meta, n.dataLayer, n.dataRel
	n.mu.Unlock()
	if l != upperLayer || st == notMetacopy {
		return 0, "", false, nil
	}
	if st == isMetacopy {
		return dl, dr, true, nil
	}
	if path == "" {
		path = n.rel()
	}
	src, ok, err := cow.MetacopyAt(n.u.layers[upperLayer].root, path)
	if err != nil {
		return 0, "", false, err
	}
	if !ok {
		n.mu.Lock()
		n.meta = notMetacopy
		n.mu.Unlock()
		return 0, "", false, nil
	}
	dl, err = n.u.dataLayer(src)
	if err != nil {
		return 0, "", false, err
	}
	n.mu.Lock()
	n.meta, n.dataLayer, n.dataRel = isMetacopy, dl, src
	n.mu.Unlock()
	return dl, src, true, nil
}

// dataLayer finds the lower layer holding a metacopy's data at rel.
func (u *union) dataLayer(rel string) (int, error) {
	for l := 1; l < len(u.layers); l++ {
		var st unix.Statx_t
		err := u.statx(l, rel, &st)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			break
		}
		return l, nil
	}
	// The layers under this upper are not the ones it was made on.
	return 0, &fsError{op: "find metacopy data", layer: upperLayer, rel: rel, err: syscall.EIO}
}

// copyData copies the data of a metacopy node into its upper file (for a write
// or a truncation to size, as cow.Options), so that the upper holds the
// file whole. Handles reading the lower data move to the upper file.
func (n *node) copyData(size int64) error {
	n.copyMu.Lock()
	defer n.copyMu.Unlock()
	dl, drel, ok, err := n.metacopyLocked()
	if err != nil || !ok {
		return err
	}
	if n.isOrphan() {
		return syscall.ESTALE // unlinked while open: no name to copy to
	}
	rel := n.rel()
	var start time.Time
	if n.u.tracer != nil {
		start = time.Now()
	}
	res, err := n.u.upper.CopyData(cow.Source{Root: n.u.layers[dl].root, Rel: drel}, rel, size)
	if err != nil {
		return err
	}
	if n.u.tracer != nil {
		n.u.traceCopyUp(rel, dl, &res, start)
	}
	// Readers passed through to the lower data keep it; the writer gets
	// another inode (copyID, addFile).
	n.u.ids.copiedUp(&res.Stat_t, n.copyID())
	n.mu.Lock()
	n.meta = notMetacopy
	for f := range n.fds {
		f.reopenUpper(rel)
	}
	n.mu.Unlock()
	return nil
}

// learnMetacopy reads the marker of the node at rel now, unless a copy-up of
// it is under way (then the next open learns it). A lookup calls it before
// the kernel links the node into the tree.
func (n *node) learnMetacopy(rel string) {
	if !n.copyMu.TryLock() {
		return
	}
	defer n.copyMu.Unlock()
	_, _, _, _ = n.metacopyAt(rel) // an error shows again at open
}

// metaBlocks gives a known metacopy's attributes the blocks of its data: the
// stub holds none, and du counts the data's, as with overlayfs.
func (n *node) metaBlocks(a *fuse.Attr) {
	n.mu.Lock()
	meta, dl, drel := n.meta, n.dataLayer, n.dataRel
	n.mu.Unlock()
	if meta != isMetacopy {
		return
	}
	var st unix.Statx_t
	if n.u.statx(dl, drel, &st) == nil {
		a.Blocks = st.Blocks
	}
}
