// Package cow writes the upper layer of a union: it copies lower entries up, makes
// whiteouts and opaque directories, and creates new entries so that each change
// appears at once or not at all.
//
// Every multi-step change is staged in the work directory, which must sit on the
// same filesystem as the upper, and renamed into place: a crash leaves either the
// old state or the new one, plus debris in the work directory that Open removes at
// the next mount.
package cow

import (
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/whiteout"
)

// Upper is the writable layer of a union and the work directory beside it.
type Upper struct {
	// Root is an O_PATH descriptor of the upper directory.
	Root int
	// Format is the whiteout format written (both are always read).
	Format whiteout.Format
	// Privileged chooses trusted.overlay.* over user.overlay.* xattrs.
	Privileged bool
	// Sync fsyncs a copied-up file before it is renamed into place, as kernel
	// overlayfs does; false is overlayfs's "volatile".
	Sync bool

	work int // O_PATH descriptor of <workdir>/work, where changes are staged
}

// Open opens upperDir and workDir (creating workDir/work), and removes whatever an
// interrupted change left in workDir/work.
func Open(upperDir, workDir string, f whiteout.Format, sync bool) (*Upper, error) { panic("TODO") }

// Close releases the descriptors.
func (u *Upper) Close() error { panic("TODO") }

// Source is an entry of a lower layer.
type Source struct {
	Root int    // descriptor of the layer's root directory
	Rel  string // the entry's path below Root, "/"-separated, "" for the root
}

// Options tune one copy-up.
type Options struct {
	// Size is how many bytes of a regular file's data to copy: -1 for all of it;
	// 0 for a copy-up that will be truncated anyway (open with O_TRUNC); N when
	// the file is about to be truncated to N.
	Size int64
}

// CopyUp copies src to rel in the upper: data (holes kept, copy_file_range or a
// reflink), mode, owner, atime/mtime and xattrs. A directory is copied without its
// entries. The parent of rel must exist in the upper already; an existing entry at
// rel is an error (EEXIST). It returns the stat of the new upper entry.
func (u *Upper) CopyUp(src Source, rel string, opt Options) (unix.Stat_t, error) { panic("TODO") }

// Make creates a new entry name in the upper directory dirRel. create makes the
// entry at (dirfd, name) it is given, which may be in the work directory. The new
// entry is owned by uid:gid; it is opaque if opaque is set (a directory replacing a
// whiteout). A whiteout for name in dirRel, in either format, is replaced. It
// returns the stat of the entry.
func (u *Upper) Make(dirRel, name string, uid, gid int, opaque bool, create func(dirfd int, name string) error) (unix.Stat_t, error) {
	panic("TODO")
}

// Whiteout hides name in the upper directory dirRel from the layers below, writing
// u.Format's whiteout. An upper entry name, file or directory tree, is replaced.
func (u *Upper) Whiteout(dirRel, name string) error { panic("TODO") }

// RemoveWhiteout removes a whiteout for name from dirRel, in either format; none
// is not an error.
func (u *Upper) RemoveWhiteout(dirRel, name string) error { panic("TODO") }

// SetOpaque marks the upper directory dirRel opaque in u.Format.
func (u *Upper) SetOpaque(dirRel string) error { panic("TODO") }

// RemoveAll removes rel from the upper with everything below it (whiteouts and
// markers included): renamed into the work directory first, so the name goes at
// once, then deleted.
func (u *Upper) RemoveAll(rel string) error { panic("TODO") }
