package layers

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/beneath"
	"github.com/strata-fs/strata/internal/xattr"
	"github.com/strata-fs/strata/whiteout"
)

// ErrRefused matches every refusal of a layer entry (errors.Is): an entry that
// would write outside the layer, or that the layer may not hold.
var ErrRefused = errors.New("refused layer entry")

// RefusedError is the refusal of one tar entry of a layer, by its name as the
// tar spells it.
type RefusedError struct {
	Entry  string
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("entry %q: refused: %s", e.Entry, e.Reason)
}

// Is makes every RefusedError match ErrRefused.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

func refuse(entry, format string, args ...any) error {
	return &RefusedError{Entry: entry, Reason: fmt.Sprintf(format, args...)}
}

// UnpackOptions tune Unpack.
type UnpackOptions struct {
	// Privileged applies owners and creates device nodes, which needs root.
	// Without it, owners and trusted.*/security.* xattrs are skipped, a
	// device node is refused, and set-user-ID and set-group-ID bits are
	// dropped: the files belong to whoever unpacks, and the bits would lend
	// that user's identity, not the owner the layer names.
	Privileged bool
	// MaxSize bounds the data of the layer: the sum of its entries' sizes,
	// sparse files at their full size. An entry that crosses it is refused;
	// it stops a decompression bomb (gigabytes of zeros compress to almost
	// nothing) early. 0 means DefaultMaxSize; a negative value, no bound.
	MaxSize int64
}

// DefaultMaxSize is the bound on a layer's data when UnpackOptions.MaxSize is
// 0: far above any real image layer, far below a disk's worth of zeros.
const DefaultMaxSize = 256 << 30

// Unpack applies the layer tar read from r to the directory dir, which should
// be empty: it becomes the layer's directory, as strata mounts it.
//
// Whiteouts are kept in the OCI format: an entry ".wh.NAME" becomes an empty
// file ".wh.NAME", ".wh..wh..opq" an empty ".wh..wh..opq" file. The other
// spellings a layer may carry are translated to these: a character device 0/0
// (overlay whiteout), and an xattr trusted.overlay.opaque=y (or user.) on a
// directory. Other overlay xattrs are dropped: they are a union's bookkeeping,
// and a layer that brings its own could steer one. aufs metadata
// (".wh..wh.plnk" and the like) is skipped.
//
// Modes, owners (when privileged), times, xattrs (PAX SCHILY.xattr.*), hard
// links, symlinks, devices (when privileged), fifos, long names and sparse
// files are kept; runs of zero bytes, the holes of a sparse entry among them,
// are written as holes.
//
// Every path is resolved inside dir through descriptors (package beneath: no
// "..", no symlink), never by joining strings. An entry is refused with a
// *RefusedError naming it when its name is absolute or holds "..", when a
// parent on its path is a symlink, when a hard link points outside the layer,
// when it is a device node and Privileged is not set, when it is a whiteout of
// no name (".wh..", ".wh..."), when it collides with a whiteout of the same
// layer (an entry and a whiteout of the same name, or an entry below a
// whited-out name), and when the layer's data passes MaxSize.
//
// On error the state of dir is undefined: the caller unpacks into a staging
// directory and removes it.
func Unpack(dir string, r io.Reader, opts UnpackOptions) (err error) {
	root, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	u := &unpacker{
		root:      root,
		priv:      opts.Privileged,
		whiteouts: map[string]bool{},
		entries:   map[string]bool{},
		opaque:    map[string]bool{},
		lastFd:    -1,
		buf:       make([]byte, 1<<20),
	}
	defer func() {
		u.closeLast()
		_ = unix.Close(root) // an O_PATH descriptor: nothing to flush
	}()
	maxSize := opts.MaxSize
	if maxSize == 0 {
		maxSize = DefaultMaxSize
	}
	var total int64 // the data of the entries so far
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		// Every entry counts, the ones whose data is skipped (whiteouts,
		// hard links) too: the tar reader reads through it all the same.
		if total += hdr.Size; maxSize > 0 && (hdr.Size > maxSize || total > maxSize) {
			return refuse(hdr.Name, "the layer's data passes %d bytes, the most a layer may hold (UnpackOptions.MaxSize)", maxSize)
		}
		if err := u.entry(hdr, tr); err != nil {
			return err
		}
	}
	return u.finishDirs()
}

type unpacker struct {
	root int // O_PATH descriptor of the layer directory
	priv bool
	// whiteouts are the paths a whiteout of this layer hides; entries are the
	// paths this layer holds. They must not meet.
	whiteouts map[string]bool
	entries   map[string]bool
	// opaque are the directories already marked opaque.
	opaque map[string]bool
	// dirs get their metadata last: adding entries changes a directory's times.
	dirs []*tar.Header
	// lastDir/lastFd cache the parent directory of the previous entry: a tar
	// lists a directory's entries together.
	lastDir string
	lastFd  int
	buf     []byte
}

// cleanName turns a tar entry name into a path relative to the layer, "" for
// the layer's root. It refuses absolute names and any "..".
func cleanName(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", refuse(name, "absolute path")
	}
	var parts []string
	for _, p := range strings.Split(name, "/") {
		switch p {
		case "", ".":
			continue
		case "..":
			return "", refuse(name, "path holds \"..\"")
		}
		if strings.IndexByte(p, 0) >= 0 {
			return "", refuse(name, "NUL in name")
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "/"), nil
}

// stMode is the st_mode a tar entry describes.
func stMode(hdr *tar.Header) uint32 {
	perm := uint32(hdr.Mode) & 0o7777
	switch hdr.Typeflag {
	case tar.TypeDir:
		return unix.S_IFDIR | perm
	case tar.TypeSymlink:
		return unix.S_IFLNK | perm
	case tar.TypeChar:
		return unix.S_IFCHR | perm
	case tar.TypeBlock:
		return unix.S_IFBLK | perm
	case tar.TypeFifo:
		return unix.S_IFIFO | perm
	}
	return unix.S_IFREG | perm
}

// hiddenBy reports the whited-out path that hides rel or one of its parents.
func (u *unpacker) hiddenBy(rel string) (string, bool) {
	for p := rel; p != ""; p, _ = beneath.Split(p) {
		if u.whiteouts[p] {
			return p, true
		}
	}
	return "", false
}

func (u *unpacker) entry(hdr *tar.Header, r io.Reader) error {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil // PAX global header: no entry
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeDir, tar.TypeSymlink,
		tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
	default:
		return refuse(hdr.Name, "unsupported entry type %q", hdr.Typeflag)
	}
	rel, err := cleanName(hdr.Name)
	if err != nil {
		return err
	}
	if rel == "" {
		if hdr.Typeflag != tar.TypeDir {
			return refuse(hdr.Name, "the layer's root must be a directory")
		}
		u.dirs = append(u.dirs, hdr)
		return nil
	}
	dir, name := beneath.Split(rel)
	kind, target := whiteout.Classify(name, stMode(hdr), uint64(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor))))
	switch kind {
	case whiteout.Meta:
		if !strings.HasPrefix(name, whiteout.MetaPrefix) {
			// ".wh.", ".wh..", ".wh...": a whiteout of no name a layer
			// can hold (the directory itself, its parent). A union would
			// ignore it; an image that carries one is broken or hostile.
			return refuse(hdr.Name, "whiteout of %q, which is not a name", strings.TrimPrefix(name, whiteout.Prefix))
		}
		return nil
	case whiteout.OpaqueMark:
		if p, ok := u.hiddenBy(dir); ok {
			return refuse(hdr.Name, "inside %q, which a whiteout of this layer hides", p)
		}
		return u.markOpaque(hdr.Name, dir)
	case whiteout.Whiteout:
		hidden := beneath.Join(dir, target)
		if u.entries[hidden] {
			return refuse(hdr.Name, "whiteout of %q, which this layer holds", hidden)
		}
		if p, ok := u.hiddenBy(dir); ok {
			return refuse(hdr.Name, "inside %q, which a whiteout of this layer hides", p)
		}
		u.whiteouts[hidden] = true
		return u.writeWhiteout(hdr.Name, dir, target)
	}
	if p, ok := u.hiddenBy(rel); ok {
		return refuse(hdr.Name, "collides with the whiteout of %q in this layer", p)
	}
	// The entry and its parents are in this layer: no whiteout may hide them.
	for p := rel; p != "" && !u.entries[p]; p, _ = beneath.Split(p) {
		u.entries[p] = true
	}
	pfd, err := u.parent(hdr.Name, dir)
	if err != nil {
		return err
	}
	if err := u.clear(hdr.Name, pfd, name, hdr.Typeflag == tar.TypeDir); err != nil {
		return err
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		if err := mkdirat(pfd, name, 0o700); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("unpack entry: %s: %w", hdr.Name, err)
		}
		u.dirs = append(u.dirs, hdr)
		return nil
	case tar.TypeReg, tar.TypeGNUSparse:
		return u.regular(hdr, pfd, name, r)
	case tar.TypeSymlink:
		if err := unix.Symlinkat(hdr.Linkname, pfd, name); err != nil {
			return fmt.Errorf("unpack entry: %s: %w", hdr.Name, &os.PathError{Op: "symlinkat", Path: rel, Err: err})
		}
	case tar.TypeLink:
		if err := u.link(hdr, pfd, name); err != nil {
			return err
		}
		// A hard link shares its target's inode and metadata: set nothing.
		return nil
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		if hdr.Typeflag != tar.TypeFifo && !u.priv {
			return refuse(hdr.Name, "device node, and not running as root")
		}
		dev := int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
		if err := unix.Mknodat(pfd, name, stMode(hdr), dev); err != nil {
			return fmt.Errorf("unpack entry: %s: %w", hdr.Name, &os.PathError{Op: "mknodat", Path: rel, Err: err})
		}
	}
	return u.metadata(hdr, pfd, name)
}

// parent returns a descriptor of the directory dir (relative to the root),
// creating missing directories (mode 0755, as other unpackers do) on the way.
// The descriptor belongs to the cache: do not close it.
func (u *unpacker) parent(entry, dir string) (int, error) {
	if dir == u.lastDir && u.lastFd >= 0 {
		return u.lastFd, nil
	}
	u.closeLast()
	fd, err := beneath.OpenDir(u.root, dir)
	if err != nil {
		fd, err = u.mkdirAll(entry, dir)
	}
	if err != nil {
		return -1, err
	}
	u.lastDir, u.lastFd = dir, fd
	return fd, nil
}

func (u *unpacker) closeLast() {
	if u.lastFd >= 0 {
		_ = unix.Close(u.lastFd) // an O_PATH descriptor: nothing to flush
		u.lastFd = -1
	}
}

// mkdirAll opens dir one component at a time, creating what is missing.
func (u *unpacker) mkdirAll(entry, dir string) (int, error) {
	cur := -1
	at := func() int {
		if cur < 0 {
			return u.root
		}
		return cur
	}
	walked := ""
	for _, comp := range strings.Split(dir, "/") {
		walked = beneath.Join(walked, comp)
		fd, err := beneath.OpenDir(at(), comp)
		if errors.Is(err, unix.ENOENT) {
			if err = mkdirat(at(), comp, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				fd, err = beneath.OpenDir(at(), comp)
			}
		}
		if cur >= 0 {
			_ = unix.Close(cur) // an O_PATH descriptor: nothing to flush
		}
		switch {
		case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
			return -1, refuse(entry, "parent %q is a symlink", walked)
		case errors.Is(err, unix.ENOTDIR):
			return -1, refuse(entry, "parent %q is not a directory", walked)
		case err != nil:
			return -1, fmt.Errorf("unpack entry: %s: %w", entry, err)
		}
		cur = fd
	}
	return cur, nil
}

func mkdirat(dirfd int, name string, mode uint32) error {
	if err := unix.Mkdirat(dirfd, name, mode); err != nil {
		return &os.PathError{Op: "mkdirat", Path: name, Err: err}
	}
	return nil
}

// clear makes room for an entry name in pfd: a later entry of a tar replaces an
// earlier one of the same name, except that a directory stays a directory
// when the new entry is one too.
func (u *unpacker) clear(entry string, pfd int, name string, isDir bool) error {
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("unpack entry: %s: %w", entry, &os.PathError{Op: "fstatat", Path: name, Err: err})
	}
	wasDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
	if wasDir && isDir {
		return nil
	}
	flags := 0
	if wasDir {
		flags = unix.AT_REMOVEDIR // a non-empty one fails: the tar replaces a tree by a file
	}
	if err := unix.Unlinkat(pfd, name, flags); err != nil {
		return fmt.Errorf("unpack entry: %s: replace: %w", entry, &os.PathError{Op: "unlinkat", Path: name, Err: err})
	}
	return nil
}

// writeWhiteout writes the OCI whiteout of target in dir.
func (u *unpacker) writeWhiteout(entry, dir, target string) error {
	pfd, err := u.parent(entry, dir)
	if err != nil {
		return err
	}
	obj := whiteout.WhiteoutFor(whiteout.OCI, target)
	return u.emptyFile(entry, pfd, obj)
}

// markOpaque writes the OCI opaque marker into dir, once.
func (u *unpacker) markOpaque(entry, dir string) error {
	if u.opaque[dir] {
		return nil
	}
	u.opaque[dir] = true
	pfd, err := u.parent(entry, dir)
	if err != nil {
		return err
	}
	return u.emptyFile(entry, pfd, *whiteout.OpaqueFor(whiteout.OCI, u.priv).Entry)
}

func (u *unpacker) emptyFile(entry string, pfd int, obj whiteout.Object) error {
	if err := u.clear(entry, pfd, obj.Name, false); err != nil {
		return err
	}
	fd, err := unix.Openat(pfd, obj.Name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, obj.Mode&0o7777)
	if err != nil {
		return fmt.Errorf("unpack entry: %s: %w", entry, &os.PathError{Op: "openat", Path: obj.Name, Err: err})
	}
	return unix.Close(fd)
}

// regular writes a file's data, leaving holes where the data is zeros.
func (u *unpacker) regular(hdr *tar.Header, pfd int, name string, r io.Reader) (err error) {
	fd, err := unix.Openat(pfd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("unpack entry: %s: %w", hdr.Name, &os.PathError{Op: "openat", Path: name, Err: err})
	}
	defer func() {
		if cerr := unix.Close(fd); cerr != nil && err == nil {
			err = fmt.Errorf("unpack entry: %s: close: %w", hdr.Name, cerr)
		}
	}()
	n, err := u.writeSparse(fd, r)
	if err != nil {
		return fmt.Errorf("unpack entry: %s: %w", hdr.Name, err)
	}
	if n != hdr.Size {
		// The tar reader says io.ErrUnexpectedEOF for a stream cut short,
		// the same error io.ReadFull gives at an entry's end.
		return fmt.Errorf("unpack entry: %s: data ends after %d of %d bytes: %w", hdr.Name, n, hdr.Size, io.ErrUnexpectedEOF)
	}
	if hdr.Size >= 1<<20 {
		// Start the writeback now, without waiting for it: the syncfs(2)
		// that publishes the layer then finds most of it on disk already.
		// A hint only: it changes no data, and an error here would show
		// again at the syncfs.
		_ = unix.SyncFileRange(fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	}
	return u.fmetadata(hdr, fd, pfd, name)
}

const block = 4096

// writeSparse copies r to fd, seeking over every all-zero block, and sets the
// size at the end so that a trailing hole counts. It returns the size.
func (u *unpacker) writeSparse(fd int, r io.Reader) (int64, error) {
	var off int64
	for {
		n, rerr := io.ReadFull(r, u.buf)
		b := u.buf[:n]
		for len(b) > 0 {
			// Find the next run of data blocks and write it in one call.
			i := 0
			for i < len(b) && isZero(b[i:min(i+block, len(b))]) {
				i += block
			}
			i = min(i, len(b))
			off += int64(i)
			b = b[i:]
			j := 0
			for j < len(b) && !isZero(b[j:min(j+block, len(b))]) {
				j += block
			}
			j = min(j, len(b))
			if j > 0 {
				if err := pwriteAll(fd, b[:j], off); err != nil {
					return off, err
				}
				off += int64(j)
				b = b[j:]
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return off, rerr
		}
	}
	if err := unix.Ftruncate(fd, off); err != nil {
		return off, &os.PathError{Op: "ftruncate", Err: err}
	}
	return off, nil
}

func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "pwrite", Err: err}
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// link makes name in pfd a hard link to the entry hdr.Linkname of this layer.
func (u *unpacker) link(hdr *tar.Header, pfd int, name string) error {
	target, err := cleanName(hdr.Linkname)
	if err != nil || target == "" {
		return refuse(hdr.Name, "hard link to %q, outside the layer", hdr.Linkname)
	}
	if p, ok := u.hiddenBy(target); ok {
		return refuse(hdr.Name, "hard link to %q, which a whiteout of this layer hides", p)
	}
	tdir, tname := beneath.Split(target)
	tfd, err := beneath.OpenDir(u.root, tdir)
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
		return refuse(hdr.Name, "hard link to %q, through a symlink", hdr.Linkname)
	}
	if err != nil {
		return fmt.Errorf("unpack entry: %s: link target %s: %w", hdr.Name, hdr.Linkname, err)
	}
	defer func() { _ = unix.Close(tfd) }() // an O_PATH descriptor: nothing to flush
	var st unix.Stat_t
	if err := unix.Fstatat(tfd, tname, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("unpack entry: %s: link target %s: %w", hdr.Name, hdr.Linkname, &os.PathError{Op: "fstatat", Path: target, Err: err})
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return refuse(hdr.Name, "hard link to the directory %q", hdr.Linkname)
	}
	// No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
	if err := unix.Linkat(tfd, tname, pfd, name, 0); err != nil {
		return fmt.Errorf("unpack entry: %s: %w", hdr.Name, &os.PathError{Op: "linkat", Path: target, Err: err})
	}
	return nil
}

// paxXattrs are the xattrs of an entry, from its PAX records, without the
// overlay ones; opaque reports an opaque xattr among them.
func paxXattrs(hdr *tar.Header) (names []string, values map[string]string, opaque bool) {
	const prefix = "SCHILY.xattr."
	values = map[string]string{}
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		if whiteout.IsOpaqueXattr(name, []byte(v)) {
			opaque = true
		}
		if whiteout.IsPrivateXattr(name) {
			continue
		}
		names = append(names, name)
		values[name] = v
	}
	slices.Sort(names)
	return names, values, opaque
}

// skipXattr reports whether an unprivileged unpack may drop an xattr it
// cannot write.
func (u *unpacker) skipXattr(name string, err error) bool {
	return !u.priv && !strings.HasPrefix(name, "user.") && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP))
}

// mode is the permission bits to give the entry: without privilege, no
// set-ID bits (see UnpackOptions.Privileged). A directory keeps its set-group-ID
// bit, which only makes new entries inherit the directory's group.
func (u *unpacker) mode(hdr *tar.Header) uint32 {
	m := uint32(hdr.Mode) & 0o7777
	if !u.priv && hdr.Typeflag != tar.TypeDir {
		m &^= unix.S_ISUID | unix.S_ISGID
	}
	return m
}

// fmetadata sets owner, mode, xattrs and times of an open regular file.
func (u *unpacker) fmetadata(hdr *tar.Header, fd, pfd int, name string) error {
	if u.priv {
		if err := unix.Fchown(fd, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("unpack entry: %s: %w", hdr.Name, &os.PathError{Op: "fchown", Path: name, Err: err})
		}
	}
	if err := unix.Fchmod(fd, u.mode(hdr)); err != nil {
		return fmt.Errorf("unpack entry: %s: %w", hdr.Name, &os.PathError{Op: "fchmod", Path: name, Err: err})
	}
	names, values, _ := paxXattrs(hdr)
	for _, n := range names {
		if err := unix.Fsetxattr(fd, n, []byte(values[n]), 0); err != nil && !u.skipXattr(n, err) {
			return fmt.Errorf("unpack entry: %s: %w", hdr.Name, &os.PathError{Op: "fsetxattr " + n, Path: name, Err: err})
		}
	}
	return u.times(hdr, pfd, name)
}

// metadata sets owner, mode, xattrs and times of name in pfd, without
// following a symlink.
func (u *unpacker) metadata(hdr *tar.Header, pfd int, name string) error {
	isLink := hdr.Typeflag == tar.TypeSymlink
	if u.priv {
		if err := unix.Fchownat(pfd, name, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("unpack entry: %s: %w", hdr.Name, &os.PathError{Op: "fchownat", Path: name, Err: err})
		}
	}
	if !isLink { // a symlink has no mode of its own
		if err := unix.Fchmodat(pfd, name, u.mode(hdr), 0); err != nil {
			return fmt.Errorf("unpack entry: %s: %w", hdr.Name, &os.PathError{Op: "fchmodat", Path: name, Err: err})
		}
	}
	names, values, _ := paxXattrs(hdr)
	for _, n := range names {
		if err := xattr.Set(pfd, name, n, []byte(values[n]), 0); err != nil && !u.skipXattr(n, err) {
			return fmt.Errorf("unpack entry: %s: xattr %s: %w", hdr.Name, n, err)
		}
	}
	return u.times(hdr, pfd, name)
}

func (u *unpacker) times(hdr *tar.Header, pfd int, name string) error {
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = hdr.ModTime
	}
	ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(hdr.ModTime.UnixNano())}
	if err := unix.UtimesNanoAt(pfd, name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("unpack entry: %s: %w", hdr.Name, &os.PathError{Op: "utimensat", Path: name, Err: err})
	}
	return nil
}

// finishDirs sets the metadata of the directories, deepest first, once their
// entries are all written, and turns opaque xattrs into opaque markers.
func (u *unpacker) finishDirs() error {
	u.closeLast()
	for i := len(u.dirs) - 1; i >= 0; i-- {
		hdr := u.dirs[i]
		rel, _ := cleanName(hdr.Name) // checked when the entry was read
		if _, _, opaque := paxXattrs(hdr); opaque {
			if err := u.markOpaque(hdr.Name, rel); err != nil {
				return err
			}
			u.closeLast()
		}
		if rel == "" {
			// The root itself: reached as "." from the root.
			if err := u.metadata(hdr, u.root, "."); err != nil {
				return err
			}
			continue
		}
		dir, name := beneath.Split(rel)
		pfd, err := beneath.OpenDir(u.root, dir)
		if err != nil {
			return fmt.Errorf("unpack entry: %s: %w", hdr.Name, err)
		}
		// A later entry of the same name may have replaced the directory
		// (by a symlink, say): its metadata is no longer this entry's to
		// set, and fchmodat(2) would follow a symlink.
		var st unix.Stat_t
		err = unix.Fstatat(pfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		switch {
		case err != nil:
			err = fmt.Errorf("unpack entry: %s: %w", hdr.Name, &os.PathError{Op: "fstatat", Path: rel, Err: err})
		case st.Mode&unix.S_IFMT == unix.S_IFDIR:
			err = u.metadata(hdr, pfd, name)
		}
		_ = unix.Close(pfd) // an O_PATH descriptor: nothing to flush
		if err != nil {
			return err
		}
	}
	return nil
}
