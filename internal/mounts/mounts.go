// Package mounts reads this process's mount table (/proc/self/mountinfo) and
// takes FUSE mounts off it. It knows nothing of layers or unions: package layers
// asks it whether a directory is already a mount point, and `strata umount` asks
// it to remove a mount.
//
// The table is read once per question and may be stale by the time the answer is
// used: another process can mount or unmount in between. The callers use it to
// refuse bad input early, with a clear message, not as a lock.
package mounts

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/fusedev"
)

// Mount is one line of /proc/self/mountinfo (proc(5)).
type Mount struct {
	ID, Parent int
	// Root is the directory of the file system mounted at Mountpoint.
	Root string
	// Mountpoint is the mount's path, relative to this process's root.
	Mountpoint string
	// Options are the per-mount options ("rw,nosuid,relatime").
	Options string
	// FSType is the type, "fuse.strata" for a strata union.
	FSType string
	// Source is the mount source ("strata", "/dev/sda1", "tmpfs").
	Source string
	// SuperOptions are the file system's own options ("rw,memory" names the
	// controllers of a cgroup v1 hierarchy).
	SuperOptions string
}

// ErrNotMounted is returned for a path where nothing is mounted.
var ErrNotMounted = errors.New("not a mount point")

// ErrForeign is returned by Unmount for a mount that is not of the type asked
// for: strata unmounts strata's mounts only.
var ErrForeign = errors.New("foreign mount")

// Parse reads a table in the format of /proc/self/mountinfo.
func Parse(r io.Reader) ([]Mount, error) {
	var ms []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		m, err := parseLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		ms = append(ms, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return ms, nil
}

// parseLine reads
//
//	36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// where any number of optional fields ("master:1") end with "-".
func parseLine(line string) (Mount, error) {
	f := strings.Fields(line)
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if len(f) < 10 || sep < 0 || len(f) < sep+3 {
		return Mount{}, fmt.Errorf("malformed: %q", line)
	}
	id, err := strconv.Atoi(f[0])
	if err != nil {
		return Mount{}, fmt.Errorf("mount id %q: %w", f[0], err)
	}
	parent, err := strconv.Atoi(f[1])
	if err != nil {
		return Mount{}, fmt.Errorf("parent id %q: %w", f[1], err)
	}
	m := Mount{
		ID:         id,
		Parent:     parent,
		Root:       unescape(f[3]),
		Mountpoint: unescape(f[4]),
		Options:    f[5],
		FSType:     unescape(f[sep+1]),
		Source:     unescape(f[sep+2]),
	}
	if len(f) > sep+3 {
		m.SuperOptions = f[sep+3]
	}
	return m, nil
}

// unescape undoes the kernel's octal escapes (\040 for a space, \011, \012,
// \134) in a mountinfo field.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return '0' <= c && c <= '7' }

// Self reads this process's mount table.
func Self() ([]Mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer func() { _ = f.Close() }() // read-only; everything was read
	return Parse(f)
}

// Find returns the topmost mount whose mount point is exactly path, which must
// be absolute and clean, with symlinks resolved. A later line of the table is a
// later mount, so with mounts stacked on one path the last one is on top.
func Find(ms []Mount, path string) (Mount, bool) {
	for i := len(ms) - 1; i >= 0; i-- {
		if ms[i].Mountpoint == path {
			return ms[i], true
		}
	}
	return Mount{}, false
}

// Lookup reads the table and finds the mount at path as Find does.
func Lookup(path string) (Mount, bool, error) {
	ms, err := Self()
	if err != nil {
		return Mount{}, false, err
	}
	m, ok := Find(ms, path)
	return m, ok, nil
}

// unmount is umount2(2), retried on EINTR.
func unmount(path string, flags int) error {
	return fusedev.Unmount(path, flags)
}

// Result tells how Unmount removed a mount.
type Result int

const (
	// Unmounted is a plain unmount: the file system is gone from the tree and
	// its server has been told.
	Unmounted Result = iota
	// Detached is a lazy unmount (MNT_DETACH) of a FUSE mount whose server had
	// died: stat on it failed with ENOTCONN, and nothing else would remove it.
	Detached
)

// Unmount unmounts the file system of type fstype ("fuse.strata") mounted at
// path, an absolute, clean path. A mount of another type is refused with
// ErrForeign, a path where nothing is mounted with ErrNotMounted, both wrapped
// with the path. A mount in use fails with EBUSY (in an *os.PathError) and stays
// as it was.
//
// Before unmounting, Unmount asks the server for the root's attributes. A FUSE
// mount whose server is gone answers with ENOTCONN; it is detached
// (MNT_DETACH), so that processes still inside it keep their references and it
// vanishes from the tree at once, and the result is Detached. A server that
// does not answer within 5s fails with ErrNoAnswer, and the mount is left.
func Unmount(path, fstype string) (Result, error) {
	m, ok, err := Lookup(path)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("umount %s: %w", path, ErrNotMounted)
	}
	if m.FSType != fstype {
		return 0, fmt.Errorf("umount %s: %w: type %s, not %s", path, ErrForeign, m.FSType, fstype)
	}
	switch probe(path) {
	case gone:
		return Detached, unmount(path, unix.MNT_DETACH)
	case silent:
		return 0, &os.PathError{Op: "umount", Path: path, Err: ErrNoAnswer}
	}
	return Unmounted, unmount(path, 0)
}

// DetachDead detaches the FUSE mount of type fstype at path, an absolute, clean
// path, if its server has died (it answers ENOTCONN), and reports whether it
// did. Anything else there (nothing, a live mount, a silent one, a mount of
// another type) is left as it is, with false: the caller's own checks refuse
// it. A mount whose server died is of no use to anyone, and nothing but an
// unmount removes it, so the next mount on that point may clear it.
func DetachDead(path, fstype string) (bool, error) {
	m, ok, err := Lookup(path)
	if err != nil || !ok || m.FSType != fstype {
		return false, err
	}
	if probe(path) != gone {
		return false, nil
	}
	if err := unmount(path, unix.MNT_DETACH); err != nil {
		return false, err
	}
	return true, nil
}

// ErrNoAnswer is returned by Unmount for a FUSE mount whose server is alive
// but does not answer: unmounting it would leave requests hanging. umount -l
// detaches it all the same.
var ErrNoAnswer = errors.New("file system server does not answer (umount -l detaches it anyway)")

type state int

const (
	alive  state = iota
	gone         // the server died: ENOTCONN
	silent       // no answer within probeTimeout
)

// probeTimeout bounds the wait for a server's answer to probe.
const probeTimeout = 5 * time.Second

// probe asks the server of the mount at path for the attributes of its root.
// AT_STATX_FORCE_SYNC makes the kernel ask even when it has them cached: a plain
// stat(2) would answer from the cache for as long as the mount's attribute
// timeout, dead server or not. A server that does not answer leaves the
// request, and this goroutine, pending until the process exits.
func probe(path string) state {
	res := make(chan error, 1)
	go func() {
		var stx unix.Statx_t
		res <- unix.Statx(unix.AT_FDCWD, path, unix.AT_STATX_FORCE_SYNC, unix.STATX_TYPE, &stx)
	}()
	select {
	case err := <-res:
		if errors.Is(err, unix.ENOTCONN) {
			return gone
		}
		return alive
	case <-time.After(probeTimeout):
		return silent
	}
}

// Detach unmounts path lazily (MNT_DETACH): it leaves the tree at once, and
// the file system goes when its last user does.
func Detach(path string) error { return unmount(path, unix.MNT_DETACH) }
