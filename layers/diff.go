package layers

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/whiteout"
)

// ChangeKind is what happened to a path, in docker diff's letters.
type ChangeKind int

// The kinds of change.
const (
	// Added: the path shows in the union and in no lower layer.
	Added ChangeKind = iota
	// Changed: the upper holds its own copy of a path the lowers show (a
	// copy-up or a replacement), or a directory the lowers show whose
	// attributes or entries changed.
	Changed
	// Deleted: the path the lowers show is hidden by a whiteout. A directory
	// made opaque over a lower one is Deleted too: its hidden entries
	// collapse into the one line, and what the upper holds in it is Added.
	Deleted
)

func (k ChangeKind) String() string {
	switch k {
	case Added:
		return "A"
	case Changed:
		return "C"
	case Deleted:
		return "D"
	}
	return fmt.Sprintf("ChangeKind(%d)", int(k))
}

// MarshalText writes the kind as its letter.
func (k ChangeKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// Change is one line of a diff: a kind and an absolute path in the union.
type Change struct {
	Kind ChangeKind `json:"kind"`
	Path string     `json:"path"`
}

func (c Change) String() string { return c.Kind.String() + " " + c.Path }

// Diff tells what the upper directory changes against the lower layers below
// it (top first), as `docker diff` does: A for an added path, C for a changed
// one, D for a deleted one, sorted by path. Everything below an added or
// deleted directory is listed for an addition (each entry is new) and left out
// for a deletion (the directory's line says it all).
//
// It reads the upper with the union's rules (package whiteout): whiteouts and
// opaque marks of either format, and an upper entry beside its own whiteout
// showing. A whiteout that hides nothing the lowers show is no change. Only the
// lower directories that the upper has entries in are read. Everything is read
// by path without following symlinks; the layers must not change meanwhile (a
// live mount's upper can, which gives a diff of some moment during the walk).
func Diff(upper string, lowers []string) ([]Change, error) {
	d := &differ{upper: upper, lowers: lowers}
	all := make([]int, len(lowers))
	for i := range all {
		all[i] = i
	}
	if _, err := d.dir("", all); err != nil {
		return nil, fmt.Errorf("diff %s: %w", upper, err)
	}
	slices.SortFunc(d.changes, func(a, b Change) int { return strings.Compare(a.Path, b.Path) })
	return d.changes, nil
}

type differ struct {
	upper   string
	lowers  []string
	changes []Change
}

func (d *differ) add(k ChangeKind, rel string) {
	d.changes = append(d.changes, Change{Kind: k, Path: "/" + rel})
}

// lowerEntry is a name the lowers show in a directory.
type lowerEntry struct {
	st unix.Stat_t // of the topmost layer holding it
	// dirs are, for a directory, the lowers whose directories of this name
	// merge into it, top first (their own opaque marks not yet applied).
	dirs []int
}

// layerEntry is one entry of a directory of one layer, classified.
type layerEntry struct {
	name string // the name it shows as, or hides for a whiteout
	kind whiteout.Kind
	st   unix.Stat_t
}

// readLayerDir lists the directory dir of a layer and reports whether it is
// opaque there (either format).
func readLayerDir(dir string) ([]layerEntry, bool, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, false, err
	}
	opaque, err := opaqueXattr(dir)
	if err != nil {
		return nil, false, err
	}
	out := make([]layerEntry, 0, len(ents))
	for _, e := range ents {
		var st unix.Stat_t
		p := filepath.Join(dir, e.Name())
		if err := unix.Lstat(p, &st); err != nil {
			return nil, false, &os.PathError{Op: "lstat", Path: p, Err: err}
		}
		kind, target := whiteout.Classify(e.Name(), st.Mode, st.Rdev)
		switch kind {
		case whiteout.OpaqueMark:
			opaque = true
		case whiteout.Plain, whiteout.Whiteout:
			out = append(out, layerEntry{name: target, kind: kind, st: st})
		}
	}
	return out, opaque, nil
}

// opaqueXattr reports whether the directory dir carries an overlay opaque
// xattr, in either namespace.
func opaqueXattr(dir string) (bool, error) {
	var buf [8]byte
	for _, name := range []string{whiteout.TrustedOpaqueXattr, whiteout.UserOpaqueXattr} {
		n, err := unix.Lgetxattr(dir, name, buf[:])
		switch {
		case err == nil && whiteout.IsOpaqueXattr(name, buf[:n]):
			return true, nil
		case err == nil, errors.Is(err, unix.ENODATA), errors.Is(err, unix.EOPNOTSUPP),
			errors.Is(err, unix.EPERM), errors.Is(err, unix.ERANGE):
			// Not set, not readable without privilege, or too long to be "y".
		default:
			return false, &os.PathError{Op: "getxattr", Path: dir, Err: err}
		}
	}
	return false, nil
}

// lowerListing merges the directory rel of the lowers in layers (top first)
// as the union would without an upper: the first layer holding a name wins,
// directories merge down to a non-directory or a whiteout, a whiteout hides
// the layers below its own, an opaque directory ends the walk.
func (d *differ) lowerListing(rel string, layers []int) (map[string]*lowerEntry, error) {
	names := map[string]*lowerEntry{}
	hidden := map[string]bool{}
	closed := map[string]bool{}
	for _, l := range layers {
		ents, opaque, err := readLayerDir(filepath.Join(d.lowers[l], rel))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var whiteouts []string
		for _, e := range ents {
			if e.kind == whiteout.Whiteout {
				whiteouts = append(whiteouts, e.name)
				continue
			}
			if hidden[e.name] {
				continue
			}
			isDir := e.st.Mode&unix.S_IFMT == unix.S_IFDIR
			if have, ok := names[e.name]; ok {
				if !closed[e.name] && have.dirs != nil && isDir {
					have.dirs = append(have.dirs, l)
				} else {
					closed[e.name] = true
				}
				continue
			}
			le := &lowerEntry{st: e.st}
			if isDir {
				le.dirs = []int{l}
			}
			names[e.name] = le
		}
		for _, w := range whiteouts {
			hidden[w] = true
		}
		if opaque {
			break
		}
	}
	return names, nil
}

// dir diffs the upper directory rel, whose lower counterpart merges the lowers
// in layers (none: nothing below). It reports whether it wrote a Deleted line
// for rel itself (an opaque directory over a lower one).
func (d *differ) dir(rel string, layers []int) (deleted bool, err error) {
	below := map[string]*lowerEntry{}
	if len(layers) > 0 {
		if below, err = d.lowerListing(rel, layers); err != nil {
			return false, err
		}
	}
	ents, opaque, err := readLayerDir(filepath.Join(d.upper, rel))
	if err != nil {
		return false, err
	}
	plain := map[string]bool{}
	for _, e := range ents {
		if e.kind == whiteout.Plain {
			plain[e.name] = true
		}
	}
	rootOpaque := false
	if opaque && len(below) > 0 {
		if rel == "" {
			// The root cannot go: each hidden entry does, below.
			rootOpaque = true
			for name := range below {
				if !plain[name] {
					d.add(Deleted, name)
				}
			}
		} else {
			d.add(Deleted, rel)
			deleted = true
			below = map[string]*lowerEntry{}
		}
	}
	for _, e := range ents {
		crel := filepath.Join(rel, e.name)
		b, shown := below[e.name]
		if e.kind == whiteout.Whiteout {
			// A whiteout hides nothing of its own layer, nor a name the
			// lowers do not show.
			if shown && !plain[e.name] {
				d.add(Deleted, crel)
			}
			continue
		}
		isDir := e.st.Mode&unix.S_IFMT == unix.S_IFDIR
		switch {
		case rootOpaque && shown && isDir && b.dirs != nil:
			// A directory of an opaque root hides all the lowers held
			// under its name, as if it were opaque itself.
			d.add(Deleted, crel)
			if _, err := d.dir(crel, nil); err != nil {
				return false, err
			}
		case !shown:
			d.add(Added, crel)
			if isDir {
				if _, err := d.dir(crel, nil); err != nil {
					return false, err
				}
			}
		case isDir && b.dirs != nil:
			// The directory merges with the lowers': changed if its own
			// attributes are, or anything in it.
			n := len(d.changes)
			gone, err := d.dir(crel, b.dirs)
			if err != nil {
				return false, err
			}
			if !gone && (len(d.changes) > n || dirAttrsDiffer(&e.st, &b.st)) {
				d.add(Changed, crel)
			}
		default:
			// Replaced: a copy-up, or a new entry of another type.
			d.add(Changed, crel)
			if isDir {
				if _, err := d.dir(crel, nil); err != nil {
					return false, err
				}
			}
		}
	}
	return deleted, nil
}

// dirAttrsDiffer reports whether an upper directory's own attributes differ
// from the lower one's: what docker diff looks at (its size aside, which
// depends on the file system).
func dirAttrsDiffer(a, b *unix.Stat_t) bool {
	return a.Mode != b.Mode || a.Uid != b.Uid || a.Gid != b.Gid || a.Mtim != b.Mtim
}

// Usage is what an upper directory holds.
type Usage struct {
	// Bytes are the bytes allocated on disk (st_blocks), as du counts.
	Bytes int64 `json:"bytes"`
	// Entries counts every entry below the upper's root, whiteouts and
	// opaque markers included.
	Entries int `json:"entries"`
	// Whiteouts counts the whiteouts of either format.
	Whiteouts int `json:"whiteouts"`
	// Opaque counts the opaque directories.
	Opaque int `json:"opaque_dirs"`
}

// UpperUsage walks the upper directory and sums what it holds. Hard links are
// counted once for bytes.
func UpperUsage(upper string) (Usage, error) {
	var u Usage
	seen := map[[2]uint64]bool{}
	err := filepath.WalkDir(upper, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return &os.PathError{Op: "lstat", Path: p, Err: err}
		}
		if k := [2]uint64{st.Dev, st.Ino}; !seen[k] {
			seen[k] = true
			u.Bytes += st.Blocks * 512
		}
		if p == upper {
			return nil
		}
		u.Entries++
		kind, _ := whiteout.Classify(e.Name(), st.Mode, st.Rdev)
		switch {
		case kind == whiteout.Whiteout:
			u.Whiteouts++
		case kind == whiteout.Plain && e.IsDir():
			var mst unix.Stat_t
			opaque := unix.Lstat(filepath.Join(p, whiteout.OpaqueMarker), &mst) == nil
			if !opaque {
				if opaque, err = opaqueXattr(p); err != nil {
					return err
				}
			}
			if opaque {
				u.Opaque++
			}
		}
		return nil
	})
	if err != nil {
		return Usage{}, fmt.Errorf("usage of %s: %w", upper, err)
	}
	return u, nil
}
