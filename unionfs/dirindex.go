package unionfs

import (
	"cmp"
	"encoding/binary"
	"errors"
	"slices"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/beneath"
	"github.com/strata-fs/strata/whiteout"
)

// entry is one visible name of a merged directory.
type entry struct {
	layer int    // topmost layer holding the name
	mode  uint32 // file type (S_IFMT bits)
	ino   uint64 // the union's inode number for readdir
	// layers are, for a directory, the layers whose directory of this name
	// merge into it, top first (opaque markers inside them not yet applied).
	layers []int
	// below is set when a layer under the top one would show this name if the
	// top one lost it: removing it then needs a whiteout.
	below bool
	// bare is set when a READDIRPLUS handed the name out without its
	// attributes, until it is looked up (plusPolicy).
	bare bool
	// cookie orders the name in readdir and is its offset there (plus the
	// two of "." and ".."). Set once when the name joins the index, it never
	// moves: a reader resuming at an offset neither skips nor repeats a name
	// that stayed, however the directory changed meanwhile (POSIX readdir).
	cookie uint64
}

// dirIndex is the merged listing of one directory.
type dirIndex struct {
	names map[string]*entry
	// whiteouts are the names that the upper layer hides in this directory.
	whiteouts map[string]bool
	// layers are the layers that make up the directory itself, top first, cut
	// after the first opaque one.
	layers []int
	sorted []string // names in order; nil after a change
	// dirents is what readdir hands out, in cookie order; nil after a change.
	// Never modified once built: open directory handles share it.
	dirents []fuse.DirEntry
	// cookies is the next cookie to hand out.
	cookies uint64
}

// dotEntries is how many entries come before the names: "." and "..".
const dotEntries = 2

func (d *dirIndex) list() []string {
	if d.sorted == nil {
		d.sorted = make([]string, 0, len(d.names))
		for name := range d.names {
			d.sorted = append(d.sorted, name)
		}
		slices.Sort(d.sorted)
	}
	return d.sorted
}

// entries returns the listing as readdir hands it out, in cookie order, each
// entry carrying the offset just after it. It is built on first use after a
// change; callers must not modify it.
func (d *dirIndex) entries() []fuse.DirEntry {
	if d.dirents == nil {
		d.dirents = make([]fuse.DirEntry, 0, len(d.names))
		for name, e := range d.names {
			d.dirents = append(d.dirents, fuse.DirEntry{Name: name, Mode: e.mode, Ino: e.ino, Off: dotEntries + e.cookie})
		}
		slices.SortFunc(d.dirents, func(a, b fuse.DirEntry) int { return cmp.Compare(a.Off, b.Off) })
	}
	return d.dirents
}

// numberNames gives every name its cookie in name order, once the index is
// built: the first listing reads sorted, like a small ext4 directory would.
func (d *dirIndex) numberNames() {
	for _, name := range d.list() {
		d.cookies++
		d.names[name].cookie = d.cookies
	}
}

// keepCookies gives the names that old also had their cookies there, and the
// others new ones after them, so that a rebuilt index keeps readers' offsets.
func (d *dirIndex) keepCookies(old *dirIndex) {
	d.cookies = old.cookies
	for _, name := range d.list() {
		if o, ok := old.names[name]; ok {
			d.names[name].cookie = o.cookie
		} else {
			d.cookies++
			d.names[name].cookie = d.cookies
		}
	}
	d.dirents = nil
}

// set records name as e. A name already there keeps its place in readdir; a
// new one goes last. Replacing an entry may change its type or number, so the
// listing is rebuilt either way.
func (d *dirIndex) set(name string, e *entry) {
	if old, ok := d.names[name]; ok {
		e.cookie = old.cookie
	} else {
		d.sorted = nil
		d.cookies++
		e.cookie = d.cookies
	}
	d.names[name] = e
	d.dirents = nil
}

func (d *dirIndex) remove(name string) {
	if _, ok := d.names[name]; ok {
		delete(d.names, name)
		d.sorted = nil
		d.dirents = nil
	}
}

// buildIndex reads the directory rel in each of layers (top first) and folds
// them into one listing: the first layer holding a name wins; directories of the
// same name below it merge until a non-directory or a whiteout for it; a whiteout
// hides the name in the layers below its own; an opaque directory ends the walk.
func (u *union) buildIndex(rel string, layers []int) (*dirIndex, error) {
	d := &dirIndex{names: map[string]*entry{}, whiteouts: map[string]bool{}}
	hidden := map[string]bool{} // names whited out by the layers read so far
	closed := map[string]bool{} // names that merge no further down
	for _, l := range layers {
		var layerWhiteouts []string
		opaque, err := u.readLayerDir(l, rel, func(name string, typ uint32, ino uint64, wh bool) {
			switch e, seen := d.names[name]; {
			case wh:
				layerWhiteouts = append(layerWhiteouts, name)
			case hidden[name]:
			case seen:
				if e.layer == upperLayer {
					e.below = true
				}
				if !closed[name] && e.mode == syscall.S_IFDIR && typ == syscall.S_IFDIR {
					e.layers = append(e.layers, l)
				} else {
					closed[name] = true
				}
			default:
				e := &entry{layer: l, mode: typ, ino: u.ids.direntIno(l, u.layers[l].dev, ino)}
				if typ == syscall.S_IFDIR {
					e.layers = []int{l}
				}
				d.names[name] = e
			}
		})
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				// Not a directory in this layer after all: nothing to merge.
				continue
			}
			return nil, err
		}
		d.layers = append(d.layers, l)
		// A whiteout hides the layers below its own, never an entry beside it.
		for _, name := range layerWhiteouts {
			hidden[name] = true
			if l == upperLayer {
				d.whiteouts[name] = true
			}
		}
		if opaque {
			break
		}
	}
	d.numberNames()
	return d, nil
}

// readLayerDir lists the directory rel of layer l, calling fn for every name with
// its file type, inode number and whether it is a whiteout (name is then the
// hidden name). It reports whether the directory is opaque in that layer.
func (u *union) readLayerDir(l int, rel string, fn func(name string, typ uint32, ino uint64, whiteout bool)) (opaque bool, err error) {
	fd, err := beneath.Open(u.layers[l].root, rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	opaque = isOpaqueDir(fd)
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, &fsError{op: "getdents", layer: l, rel: rel, err: err}
		}
		if n <= 0 {
			return opaque, nil
		}
		for off := 0; off < n; {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
			rec := buf[off:]
			ino := binary.NativeEndian.Uint64(rec[0:8])
			reclen := int(binary.NativeEndian.Uint16(rec[16:18]))
			dtype := rec[18]
			nameb := rec[19:reclen]
			if i := slices.Index(nameb, 0); i >= 0 {
				nameb = nameb[:i]
			}
			off += reclen
			name := string(nameb)
			if name == "." || name == ".." {
				continue
			}
			typ := dtypeMode(dtype)
			var rdev uint64
			if typ == 0 || typ == syscall.S_IFCHR {
				// DT_UNKNOWN needs a stat for the type; a character device
				// needs one to tell a whiteout (0/0) from a real device.
				var st unix.Stat_t
				if err := unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
					if errors.Is(err, unix.ENOENT) {
						continue
					}
					return false, &fsError{op: "fstatat", layer: l, rel: beneath.Join(rel, name), err: err}
				}
				typ = st.Mode & syscall.S_IFMT
				rdev = st.Rdev
			}
			kind, target := whiteout.Classify(name, typ, rdev)
			switch kind {
			case whiteout.Plain:
				fn(name, typ, ino, false)
			case whiteout.Whiteout:
				fn(target, typ, ino, true)
			case whiteout.OpaqueMark:
				opaque = true
			}
		}
	}
}

// isOpaqueDir reports whether the open directory fd carries an overlay opaque
// xattr, in the trusted or the user namespace.
func isOpaqueDir(fd int) bool {
	var buf [4]byte
	for _, name := range []string{whiteout.TrustedOpaqueXattr, whiteout.UserOpaqueXattr} {
		n, err := unix.Fgetxattr(fd, name, buf[:])
		if err == nil && whiteout.IsOpaqueXattr(name, buf[:n]) {
			return true
		}
	}
	return false
}

func dtypeMode(t uint8) uint32 {
	switch t {
	case unix.DT_REG:
		return syscall.S_IFREG
	case unix.DT_DIR:
		return syscall.S_IFDIR
	case unix.DT_LNK:
		return syscall.S_IFLNK
	case unix.DT_CHR:
		return syscall.S_IFCHR
	case unix.DT_BLK:
		return syscall.S_IFBLK
	case unix.DT_FIFO:
		return syscall.S_IFIFO
	case unix.DT_SOCK:
		return syscall.S_IFSOCK
	}
	return 0
}
