package layers

import (
	"fmt"
	"strconv"
	"strings"
)

// FuseOverlay is a mount described by fuse-overlayfs's -o options: the command
// line that podman, buildah and CRI-O (containers/storage) give their
// mount_program.
type FuseOverlay struct {
	Stack
	// UIDMap and GIDMap map the ids the merged tree shows to the ids stored
	// in the layers (uidmapping=, gidmapping=); empty maps nothing.
	UIDMap, GIDMap []IDMap
	// SquashToRoot shows every file as owned by root (squash_to_root);
	// SquashUID and SquashGID, when not -1, show every file as owned by that
	// id (squash_to_uid=, squash_to_gid=).
	SquashToRoot         bool
	SquashUID, SquashGID int
	// XattrPermissions is how fuse-overlayfs stores the permissions it cannot
	// set on disk (xattr_permissions=): 0 none, 1 in a privileged xattr, 2 in
	// a user xattr.
	XattrPermissions int
	// Context is an SELinux context label for every file (context=).
	Context string
	// Options are FUSE mount options to pass on.
	Options []string
}

// IDMap maps Count ids from Stored (as the layers store them) to Shown (as the
// merged tree shows them): one STORED:SHOWN:COUNT triple of fuse-overlayfs's
// uidmapping= and gidmapping=, where an id no triple maps shows as 65534.
// (as the layers store them), one line of uid_map(5) in fuse-overlayfs's order.
type IDMap struct {
	Stored, Shown, Count uint32
}

// harmless are the options fuse-overlayfs accepts that change nothing strata
// does: they are taken and dropped.
var harmless = map[string]bool{
	"noatime": true, "nodev": true, "nosuid": true, "static_nlink": true,
	"noacl": true, "fsync=0": true, "fsync=1": true, "threaded=0": true, "threaded=1": true,
	"dev": true, "suid": true, "exec": true, "noexec": true, "rw": true,
	// What mount(8) may pass on from an fstab line.
	"defaults": true, "auto": true, "noauto": true, "nofail": true, "_netdev": true,
	"async": true, "relatime": true, "lazytime": true,
}

// passed are FUSE options fuse-overlayfs hands to the kernel mount, as strata
// does.
var passed = map[string]bool{"ro": true, "allow_other": true, "allow_root": true, "default_permissions": true}

// ParseFuseOverlay reads fuse-overlayfs's -o options, several -o joined with
// commas: the overlay options ParseOverlayOptions reads (lowerdir top first,
// upperdir, workdir, volatile, "\" escapes), fuse-overlayfs's own, and the
// harmless ones it accepts. Any other option is refused, named, with
// ErrBadOption. The stack is not checked: call Resolve.
func ParseFuseOverlay(opts string) (FuseOverlay, error) {
	fo := FuseOverlay{SquashUID: -1, SquashGID: -1}
	s, extra, err := ParseOverlayOptions(opts)
	if err != nil {
		return FuseOverlay{}, err
	}
	fo.Stack = s
	for _, opt := range extra {
		key, val, hasVal := strings.Cut(opt, "=")
		bad := func(why string, args ...any) error {
			return fmt.Errorf("option %q: %w: %s", opt, ErrBadOption, fmt.Sprintf(why, args...))
		}
		switch {
		case harmless[opt]:
		case passed[opt]:
			fo.Options = append(fo.Options, opt)
		case key == "uidmapping" || key == "gidmapping":
			m, err := parseIDMaps(val)
			if err != nil {
				return FuseOverlay{}, bad("%v", err)
			}
			if key == "uidmapping" {
				fo.UIDMap = m
			} else {
				fo.GIDMap = m
			}
		case opt == "squash_to_root":
			fo.SquashToRoot = true
		case key == "squash_to_uid" || key == "squash_to_gid":
			id, err := strconv.ParseUint(val, 10, 32)
			if err != nil || !hasVal {
				return FuseOverlay{}, bad("want a numeric id")
			}
			if key == "squash_to_uid" {
				fo.SquashUID = int(id)
			} else {
				fo.SquashGID = int(id)
			}
		case key == "xattr_permissions":
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 || n > 2 {
				return FuseOverlay{}, bad("want 0, 1 or 2")
			}
			fo.XattrPermissions = n
		case key == "context":
			fo.Context = strings.Trim(val, `"`)
		default:
			return FuseOverlay{}, bad("not an option fuse-overlayfs or strata knows")
		}
	}
	return fo, nil
}

// parseIDMaps reads "STORED:SHOWN:COUNT[:STORED:SHOWN:COUNT...]", with
// an optional leading colon, as fuse-overlayfs does.
func parseIDMaps(s string) ([]IDMap, error) {
	s = strings.TrimPrefix(s, ":")
	if s == "" {
		return nil, fmt.Errorf("empty mapping")
	}
	f := strings.Split(s, ":")
	if len(f)%3 != 0 {
		return nil, fmt.Errorf("%d numbers, want triples STORED:SHOWN:COUNT", len(f))
	}
	var maps []IDMap
	for i := 0; i < len(f); i += 3 {
		var n [3]uint32
		for j := range n {
			v, err := strconv.ParseUint(f[i+j], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("%q is not an id", f[i+j])
			}
			n[j] = uint32(v)
		}
		m := IDMap{Stored: n[0], Shown: n[1], Count: n[2]}
		if m.Count == 0 || uint64(m.Shown)+uint64(m.Count) > 1<<32 || uint64(m.Stored)+uint64(m.Count) > 1<<32 {
			return nil, fmt.Errorf("range %d:%d:%d is empty or past 2^32", m.Stored, m.Shown, m.Count)
		}
		for _, o := range maps {
			if overlaps(o.Shown, o.Count, m.Shown, m.Count) || overlaps(o.Stored, o.Count, m.Stored, m.Count) {
				return nil, fmt.Errorf("ranges %d:%d:%d and %d:%d:%d overlap", o.Stored, o.Shown, o.Count, m.Stored, m.Shown, m.Count)
			}
		}
		maps = append(maps, m)
	}
	return maps, nil
}

func overlaps(a, an, b, bn uint32) bool {
	return uint64(a) < uint64(b)+uint64(bn) && uint64(b) < uint64(a)+uint64(an)
}

// ToStored maps an id the merged tree shows to the one stored; ok is false
// for an id no range maps. No map maps every id to itself.
func ToStored(maps []IDMap, id uint32) (uint32, bool) {
	if len(maps) == 0 {
		return id, true
	}
	for _, m := range maps {
		if id >= m.Shown && uint64(id) < uint64(m.Shown)+uint64(m.Count) {
			return m.Stored + (id - m.Shown), true
		}
	}
	return 0, false
}

// ToShown maps a stored id to the one the merged tree shows; ok is false for
// an id no range maps (fuse-overlayfs then shows the overflow id, 65534).
func ToShown(maps []IDMap, id uint32) (uint32, bool) {
	if len(maps) == 0 {
		return id, true
	}
	for _, m := range maps {
		if id >= m.Stored && uint64(id) < uint64(m.Stored)+uint64(m.Count) {
			return m.Shown + (id - m.Stored), true
		}
	}
	return 0, false
}
