package unionfs

// IDMapper translates owners between the layers and the merged tree, as
// fuse-overlayfs's uidmapping=, gidmapping= and squash_* options do: one store
// of layers shared by user namespaces that map ids differently, without a
// chown of every file. uid tells a user id from a group id.
type IDMapper interface {
	// Shown is the id the merged tree shows for the stored id.
	Shown(stored uint32, uid bool) uint32
	// Stored is the id to store for the id the merged tree shows (a caller
	// creating a file, a chown); ok is false when no stored id maps to it.
	Stored(shown uint32, uid bool) (id uint32, ok bool)
}

// shownOwner maps stored owner ids to the merged tree's.
func (u *union) shownOwner(uid, gid uint32) (uint32, uint32) {
	if u.ids.mapper == nil {
		return uid, gid
	}
	return u.ids.mapper.Shown(uid, true), u.ids.mapper.Shown(gid, false)
}

// overflowID is stored for an id of the merged tree that no stored id maps
// to, as fuse-overlayfs does: the kernel's overflow id, "nobody".
const overflowID = 65534

// storedOwner maps a chown(2) pair of the merged tree, -1 keeping an id, to the
// ids to store.
func (u *union) storedOwner(uid, gid int) (int, int, error) {
	m := u.ids.mapper
	if m == nil {
		return uid, gid, nil
	}
	for _, p := range []struct {
		id    *int
		isUID bool
	}{{&uid, true}, {&gid, false}} {
		if *p.id < 0 {
			continue
		}
		s, ok := m.Stored(uint32(*p.id), p.isUID)
		if !ok {
			s = overflowID
		}
		*p.id = int(s)
	}
	return uid, gid, nil
}
