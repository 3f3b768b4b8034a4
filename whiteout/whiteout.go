// Package whiteout holds the rules by which a layer says "this name is gone" and
// "nothing below this directory shows through". It is pure: it reads names, modes
// and xattr values handed to it and answers with decisions and descriptions of
// on-disk objects; it never touches a disk. Package cow writes what it describes,
// package unionfs and package layers read layers with it.
//
// Two formats exist in the wild, and every layer may hold either:
//
//   - OCI (also aufs, docker save, OCI image layers): a whiteout for NAME is an
//     empty regular file ".wh.NAME" beside it; an opaque directory holds an empty
//     file ".wh..wh..opq". Any other name starting ".wh..wh." is aufs metadata
//     (".wh..wh.plnk", ".wh..wh.aufs") and is never shown.
//   - Overlay (the Linux kernel's overlayfs): a whiteout for NAME is a character
//     device NAME with device number 0/0; an opaque directory carries the xattr
//     "trusted.overlay.opaque" = "y" ("user.overlay.opaque" when the layer was made
//     without privilege, the kernel's userxattr mode).
//
// A whiteout hides entries of lower layers only: an entry in the same layer as its
// whiteout stays visible (OCI image spec, "Whiteouts"). strata relies on this to
// replace a whiteout without a window in which neither exists: it creates the new
// entry first and removes the whiteout after.
package whiteout

import (
	"errors"
	"fmt"
	"strings"
)

// Names and xattrs of the two formats.
const (
	// Prefix starts the name of an OCI whiteout: ".wh.NAME" hides NAME.
	Prefix = ".wh."
	// MetaPrefix starts aufs/OCI metadata names; strata shows none of them.
	MetaPrefix = Prefix + Prefix
	// OpaqueMarker is the OCI entry that makes its directory opaque.
	OpaqueMarker = MetaPrefix + ".opq"

	// TrustedOpaqueXattr marks an opaque directory in the overlay format.
	TrustedOpaqueXattr = "trusted.overlay.opaque"
	// UserOpaqueXattr is the same mark written without privilege.
	UserOpaqueXattr = "user.overlay.opaque"
	// OpaqueValue is the value of an opaque xattr that means "opaque".
	OpaqueValue = "y"

	// NameMax is the longest name a directory entry may have (NAME_MAX).
	NameMax = 255

	trustedOverlayPrefix = "trusted.overlay."
	userOverlayPrefix    = "user.overlay."
)

// File type bits of st_mode, repeated here so that this package needs no syscall
// import. They are the same on every Linux architecture.
const (
	modeType = 0o170000
	modeChar = 0o020000
	modeDir  = 0o040000
	modeReg  = 0o100000
)

// ErrInvalidName is returned for a name that no layer may hold or create: empty,
// ".", "..", containing "/" or NUL, or a name that is itself a whiteout.
var ErrInvalidName = errors.New("invalid name")

// Format is one of the two on-disk whiteout formats. The set is closed: the only
// values are OCI and Overlay.
type Format interface {
	// String is the format's name on the command line: "oci" or "overlay".
	String() string
	format()
}

type ociFormat struct{}
type overlayFormat struct{}

func (ociFormat) String() string     { return "oci" }
func (overlayFormat) String() string { return "overlay" }
func (ociFormat) format()            {}
func (overlayFormat) format()        {}

// The two formats.
var (
	OCI     Format = ociFormat{}
	Overlay Format = overlayFormat{}
)

// ParseFormat reads a format name as the command line spells it. "aufs" is an
// alias of "oci": both write ".wh." files.
func ParseFormat(s string) (Format, error) {
	switch s {
	case "oci", "aufs":
		return OCI, nil
	case "overlay", "kernel":
		return Overlay, nil
	}
	return nil, fmt.Errorf("whiteout format %q: want oci or overlay", s)
}

// Kind is what a directory entry of a layer means to the union above it.
type Kind int

const (
	// Plain is an ordinary entry: it shows under its own name.
	Plain Kind = iota
	// Whiteout hides the entry of the same target name in every lower layer.
	Whiteout
	// OpaqueMark makes its directory opaque; it names no entry.
	OpaqueMark
	// Meta is format metadata (aufs ".wh..wh.*"); it names no entry.
	Meta
)

func (k Kind) String() string {
	switch k {
	case Plain:
		return "plain"
	case Whiteout:
		return "whiteout"
	case OpaqueMark:
		return "opaque"
	case Meta:
		return "meta"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Classify tells what the entry name, of file type mode (st_mode; only the S_IFMT
// bits matter) and device number rdev, means in a layer. target is the name the
// entry speaks for: the name itself for Plain and for an overlay whiteout, the
// hidden name for an OCI whiteout, "" for OpaqueMark and Meta.
//
// Both formats are recognised in every layer, whatever format the union writes.
// An OCI whiteout whose target is not a valid name (".wh.", ".wh..", ".wh.a/b")
// is Meta: it can hide nothing, least of all the directory itself.
func Classify(name string, mode uint32, rdev uint64) (k Kind, target string) {
	if strings.HasPrefix(name, Prefix) {
		switch {
		case name == OpaqueMarker:
			return OpaqueMark, ""
		case strings.HasPrefix(name, MetaPrefix):
			return Meta, ""
		}
		t := name[len(Prefix):]
		if ValidName(t) != nil {
			return Meta, ""
		}
		return Whiteout, t
	}
	if IsOverlayWhiteout(mode, rdev) {
		return Whiteout, name
	}
	return Plain, name
}

// IsOverlayWhiteout reports whether an entry of type mode and device rdev is a
// kernel-overlay whiteout: a character device numbered 0/0.
func IsOverlayWhiteout(mode uint32, rdev uint64) bool {
	return mode&modeType == modeChar && rdev == 0
}

// MayHideEntries reports whether an entry of type mode could be a whiteout or an
// opaque marker, judging by type alone. A union uses it to skip the device-number
// look-up for the many entries whose directory listing type already settles it.
func MayHideEntries(name string, mode uint32) bool {
	return strings.HasPrefix(name, Prefix) || mode&modeType == modeChar
}

// IsOpaqueXattr reports whether the xattr name=value marks a directory opaque in
// the overlay format. Both the trusted and the user namespace count.
func IsOpaqueXattr(name string, value []byte) bool {
	return (name == TrustedOpaqueXattr || name == UserOpaqueXattr) && string(value) == OpaqueValue
}

// IsPrivateXattr reports whether an xattr belongs to the union's own bookkeeping
// (overlay's "trusted.overlay.*" and "user.overlay.*"). Such xattrs are never
// listed, read or written through the merged tree, as in kernel overlayfs.
func IsPrivateXattr(name string) bool {
	return strings.HasPrefix(name, trustedOverlayPrefix) || strings.HasPrefix(name, userOverlayPrefix) ||
		name == TrustedMetacopyXattr || name == UserMetacopyXattr
}

// ValidName checks that name can be an entry of a directory in a layer and in the
// merged tree: not empty, not "." or "..", without "/" or NUL, and not a name
// reserved by the OCI format (anything starting ".wh."), which a user may not
// create through the union because it would read back as a whiteout.
func ValidName(name string) error {
	switch {
	case name == "", name == ".", name == "..":
	case strings.ContainsAny(name, "/\x00"):
	case strings.HasPrefix(name, Prefix):
	default:
		return nil
	}
	return fmt.Errorf("%q: %w", name, ErrInvalidName)
}

// Object describes an entry that a format writes to make a whiteout.
type Object struct {
	// Name is the entry's name in the directory.
	Name string
	// Mode is its st_mode: file type and permission bits.
	Mode uint32
	// Rdev is its device number (0 for all of them today).
	Rdev uint64
}

// WhiteoutFor describes the entry that hides name in format f: an empty file
// ".wh.name" with mode 0 (OCI; 0644 is what docker writes, mode does not matter on
// read) or a character device name 0/0 (Overlay).
//
// A name within 4 bytes of NameMax leaves no room for ".wh.": it gets the
// overlay whiteout in either format, which every reader takes for one too, so
// that such a name can still be deleted. (A tar layer has no such limit: it
// writes ".wh.name" as a long PAX name.)
func WhiteoutFor(f Format, name string) Object {
	switch f.(type) {
	case overlayFormat:
		return Object{Name: name, Mode: modeChar}
	default:
		if len(Prefix)+len(name) > NameMax {
			return Object{Name: name, Mode: modeChar}
		}
		return Object{Name: Prefix + name, Mode: modeReg | 0o644}
	}
}

// Opaque describes how format f marks a directory opaque: either an entry inside
// it (OCI: Entry is set) or an xattr on it (Overlay: XattrName and XattrValue).
type Opaque struct {
	Entry      *Object
	XattrName  string
	XattrValue []byte
}

// OpaqueFor tells how f marks a directory opaque. privileged chooses the xattr
// namespace of the overlay format: "trusted." needs CAP_SYS_ADMIN, "user." is what
// an unprivileged overlay (userxattr) reads.
func OpaqueFor(f Format, privileged bool) Opaque {
	switch f.(type) {
	case overlayFormat:
		name := UserOpaqueXattr
		if privileged {
			name = TrustedOpaqueXattr
		}
		return Opaque{XattrName: name, XattrValue: []byte(OpaqueValue)}
	default:
		return Opaque{Entry: &Object{Name: OpaqueMarker, Mode: modeReg | 0o644}}
	}
}

// IsDirMode reports whether mode (st_mode) is a directory.
func IsDirMode(mode uint32) bool { return mode&modeType == modeDir }

// IsOwnXattr reports whether a union that writes xattrs with privilege
// (privileged) keeps the xattr name to itself. As in kernel overlayfs,
// "trusted.overlay.*" always is the union's; "user.overlay.*" is only in the
// unprivileged (userxattr) mode, and is an ordinary user xattr otherwise.
func IsOwnXattr(name string, privileged bool) bool {
	if strings.HasPrefix(name, trustedOverlayPrefix) || name == TrustedMetacopyXattr {
		return true
	}
	return !privileged && (strings.HasPrefix(name, userOverlayPrefix) || name == UserMetacopyXattr)
}

// The xattrs that mark a metadata-only copy (strata's metacopy): an upper
// regular file whose attributes are the file's, whose size is the file's but
// whose data is still in a lower layer, at the path the value names ("/a/b",
// from the layers' root; the topmost lower layer holding an entry there). The
// trusted.* name is written with privilege, the user.* one without. strata's
// own names, not overlayfs's "trusted.overlay.metacopy": the kernel reads its
// own marker only with metacopy=on and finds the data through origin file
// handles strata does not write, so a look-alike would show a kernel mount
// the stub's zeros instead of the data.
const (
	TrustedMetacopyXattr = "trusted.strata.metacopy"
	UserMetacopyXattr    = "user.strata.metacopy"
)

// MetacopyXattr is the marker name a union writes with or without privilege.
func MetacopyXattr(privileged bool) string {
	if privileged {
		return TrustedMetacopyXattr
	}
	return UserMetacopyXattr
}
