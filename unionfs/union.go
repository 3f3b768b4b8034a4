package unionfs

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
	"github.com/strata-fs/strata/internal/beneath"
	"github.com/strata-fs/strata/whiteout"
)

// upperLayer is the index of the upper layer in union.layers.
const upperLayer = 0

// layer is one directory of the stack, opened once for the life of the mount.
type layer struct {
	path string // as given, for messages
	root int    // O_PATH descriptor of the layer's root directory
	// files is the root that regular files are opened from to be read: for
	// a lower layer of a writable union, on a read-only mount of its own
	// (readOnlyView); else root.
	files int
	dev   uint64 // device of the root
}

// union is the state shared by every node of one mount.
type union struct {
	// layers[0] is the upper, nil in a read-only union; layers[1:] are the
	// lowers, top first.
	layers []*layer
	upper  *cow.Upper // nil in a read-only union

	ids identities

	// open holds every file handle not yet released, so that an unmount
	// closes those whose RELEASE the kernel never sent (it drops them with
	// the connection): a server in a process that lives on would leak them.
	open openFiles

	// selinux is set when the host runs SELinux (selinuxfs is mounted):
	// only then does a file without a label differ from one that cannot
	// have one.
	selinux bool

	// statOverride names the xattr that holds the owner and mode files show
	// (Config.StatOverride, statoverride.go); "" turns that off.
	statOverride string

	// tracer receives the union's decisions (trace.go); nil traces nothing.
	tracer Tracer
	// names label the layers in traces, by index (Config.Names).
	names []string
	// stack is the value of StackXattr on the root (stack.go).
	stack []byte

	// lowerPassthrough lets lower files of a writable union pass through
	// (Config.LowerPassthrough).
	lowerPassthrough bool
	// killpriv says that strata, not the kernel, drops set-ID bits on
	// writes (killpriv.go). Set before the mount serves.
	killpriv bool

	// passthrough is false when the kernel refused a backing file, so that no
	// handle offers one (go-fuse would turn it off for the whole mount anyway).
	// It is learnt once the mount serves, hence atomic.
	passthrough atomic.Bool

	// metacopy makes chmod, chown, utimes and xattr changes of lower regular
	// files metadata-only copy-ups (Config.Metacopy, metacopy.go). Metacopy
	// files in the upper are read whatever it says.
	metacopy bool
	// plus decides which entries of a READDIRPLUS carry attributes (plus.go).
	plus plusPolicy
}

func (u *union) readOnly() bool { return u.upper == nil }

// ownXattr reports whether the xattr name is the union's bookkeeping, hidden
// from the merged tree.
func (u *union) ownXattr(name string) bool {
	privileged := u.upper == nil || u.upper.Privileged
	return name == StackXattr || whiteout.IsOwnXattr(name, privileged) ||
		(u.statOverride != "" && name == u.statOverride)
}

// statx reads the attributes of rel in layer l without following a final
// symlink. Every directory on the way is a directory in that layer (the indexes
// that led here say so), so the path crosses no symlink.
func (u *union) statx(l int, rel string, st *unix.Statx_t) error {
	if rel == "" {
		rel = "."
	}
	const mask = unix.STATX_BASIC_STATS | unix.STATX_BTIME
	if len(rel) < unix.PathMax {
		err := unix.Statx(u.layers[l].root, rel, unix.AT_SYMLINK_NOFOLLOW|unix.AT_EMPTY_PATH, mask, st)
		if err != nil {
			return &fsError{op: "statx", layer: l, rel: rel, err: err}
		}
		return nil
	}
	dir, name := beneath.Split(rel)
	fd, err := beneath.OpenDir(u.layers[l].root, dir)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Statx(fd, name, unix.AT_SYMLINK_NOFOLLOW, mask, st); err != nil {
		return &fsError{op: "statx", layer: l, rel: rel, err: err}
	}
	return nil
}

// fsError is a failed syscall on a layer: which call, which layer, which path.
type fsError struct {
	op    string
	layer int
	rel   string
	err   error
}

func (e *fsError) Error() string {
	return fmt.Sprintf("%s layer %d %q: %v", e.op, e.layer, e.rel, e.err)
}
func (e *fsError) Unwrap() error { return e.err }

// identities hands out the inode numbers the union reports.
//
// An entry's number is its inode number in the layer where it was first found,
// prefixed with the index of that layer's device when layers span devices, so
// that numbers from different filesystems never collide. Two tables keep numbers
// stable where the disk would not: copied maps an upper inode to the identity its
// lower original had, and linked gives each name of a multiply-linked lower file
// a node of its own (by its generation) under the shared number.
type identities struct {
	mu      sync.Mutex
	devs    map[uint64]uint64 // device -> index, in the order first seen
	copied  map[devIno]fs.StableAttr
	linked  map[linkKey]uint64 // generation of each name of a linked lower file
	nextGen uint64
	nextIno uint64 // for inode numbers too large to prefix
	big     map[devIno]uint64
	// mapper translates owners; nil shows them as stored. Set at mount.
	mapper IDMapper
}

type devIno struct{ dev, ino uint64 }

type linkKey struct {
	parent uint64
	name   string
}

const (
	devShift  = 48
	inoMask   = 1<<devShift - 1
	synthBase = 1 << 63 // synthetic numbers live above every prefixed one
)

func (t *identities) init(devs []uint64) {
	t.devs = map[uint64]uint64{}
	t.copied = map[devIno]fs.StableAttr{}
	t.linked = map[linkKey]uint64{}
	t.big = map[devIno]uint64{}
	t.nextIno = synthBase
	t.nextGen = synthBase // above any birth time in nanoseconds until 2262
	for _, d := range devs {
		if _, ok := t.devs[d]; !ok {
			t.devs[d] = uint64(len(t.devs))
		}
	}
}

// number maps (dev, ino) of a layer entry to the union's inode number, not
// counting copy-ups.
func (t *identities) number(dev, ino uint64) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.numberLocked(dev, ino)
}

func (t *identities) numberLocked(dev, ino uint64) uint64 {
	idx, ok := t.devs[dev]
	if !ok {
		// A filesystem mounted inside a layer.
		idx = uint64(len(t.devs))
		t.devs[dev] = idx
	}
	if ino&^inoMask != 0 || idx >= 1<<(63-devShift) {
		k := devIno{dev, ino}
		n, ok := t.big[k]
		if !ok {
			n = t.nextIno
			t.nextIno++
			t.big[k] = n
		}
		return n
	}
	return idx<<devShift | ino
}

// direntIno is the number readdir reports for an entry of layer l with d_ino
// ino, so that it matches what lookup will say.
func (t *identities) direntIno(l int, dev, ino uint64) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if l == upperLayer {
		if id, ok := t.copied[devIno{dev, ino}]; ok {
			return id.Ino
		}
	}
	return t.numberLocked(dev, ino)
}

// of returns the identity of an entry of layer l found as name in the directory
// whose number is parent.
func (t *identities) of(l int, st *unix.Statx_t, parent uint64, name string) fs.StableAttr {
	dev := unix.Mkdev(st.Dev_major, st.Dev_minor)
	mode := uint32(st.Mode) & syscall.S_IFMT
	t.mu.Lock()
	defer t.mu.Unlock()
	if l == upperLayer {
		if id, ok := t.copied[devIno{dev, st.Ino}]; ok {
			return id
		}
	}
	gen := uint64(st.Btime.Sec)*1e9 + uint64(st.Btime.Nsec)
	if gen == 0 {
		gen = 1
	}
	if l != upperLayer && mode != syscall.S_IFDIR && st.Nlink > 1 {
		// One node per name, told apart by the generation, while st_ino
		// stays the lower file's, shared by its names as in overlayfs.
		k := linkKey{parent, name}
		g, ok := t.linked[k]
		if !ok {
			g = t.nextGen
			t.nextGen++
			t.linked[k] = g
		}
		gen = g
	}
	return fs.StableAttr{Mode: mode, Ino: t.numberLocked(dev, st.Ino), Gen: gen}
}

// newGen returns a generation no node has had.
func (t *identities) newGen() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.nextGen
	t.nextGen++
	return g
}

// copiedUp records that the upper entry st now stands for the node id.
func (t *identities) copiedUp(st *unix.Stat_t, id fs.StableAttr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.copied[devIno{st.Dev, st.Ino}] = id
}

// forget drops the copy-up record of an upper inode about to go, so that a new
// file reusing its number is not taken for the old node. Call it before the
// inode goes: the filesystem may hand its number to an entry another request
// makes the moment it is freed, and that entry must not get the old identity
// (a directory made with a file's identity fails with EIO in the kernel). It
// returns the record, for remember to put back if the removal fails.
func (t *identities) forget(dev, ino uint64) (fs.StableAttr, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := devIno{dev, ino}
	id, ok := t.copied[k]
	delete(t.copied, k)
	return id, ok
}

// remember puts back a record that forget dropped.
func (t *identities) remember(dev, ino uint64, id fs.StableAttr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.copied[devIno{dev, ino}] = id
}
