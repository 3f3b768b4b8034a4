package unionfs

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Who drops set-ID bits: FUSE_HANDLE_KILLPRIV_V2.
//
// A write(2), truncate or fallocate by a caller without CAP_FSETID drops the
// file's set-user-ID bit, and its set-group-ID bit if group execute is set or
// the caller is not in the file's group; a chown drops them whoever makes it
// (root keeps set-group-ID without group execute); any write drops the file's
// capability (security.capability). Before each write
// the kernel asks whether there is anything to drop. Without
// FUSE_HANDLE_KILLPRIV_V2 it cannot remember the answer for a FUSE inode, so
// every write(2), passed through or not, cost a GETXATTR round trip: a 1 GiB
// file written in 1 MiB blocks made 1,024 of them, a third of the time the
// write took over overlayfs's.
//
// With the flag the kernel remembers, per inode, that nothing is to be
// dropped (S_NOSEC, until the next attribute change), asks once, and leaves
// the set-ID bits to the file system. It says so on each request: a WRITE
// carries FUSE_WRITE_KILL_SUIDGID and a truncating SETATTR FATTR_KILL_SUIDGID
// when the caller lacks CAP_FSETID, a chown's SETATTR always. A FALLOCATE
// carries nothing; strata counts every caller but root as lacking it. Capabilities
// the kernel still drops itself, with a REMOVEXATTR.
//
// A write passed through to the upper file never reaches strata, and strata
// writes as root, which keeps the bits. So a writer's open of a file that has
// bits to drop is served in the page-cache mode (openFile), where its WRITEs
// come here. One case is left: a file opened for writing, passed through,
// then given a set-ID bit by chmod while still open, keeps the bit through
// that handle's writes (ext4 would drop it).

// capHandleKillprivV2 is FUSE_HANDLE_KILLPRIV_V2 (Linux 5.11), which go-fuse
// does not negotiate: strata adds it to the INIT answer (serveLoop.init).
const capHandleKillprivV2 = 1 << 28

// killedMode is mode after a write, truncate or chown by a caller without
// CAP_FSETID: without set-user-ID, and without set-group-ID when group
// execute is set or the caller is not in the file's group (inGroup), as
// setattr_should_drop_sgid in fs/attr.c decides. (Without group execute, the
// bit marks mandatory locking, not a privilege.)
func killedMode(mode uint32, inGroup func() bool) uint32 {
	mode &^= syscall.S_ISUID
	if mode&syscall.S_ISGID != 0 && (mode&syscall.S_IXGRP != 0 || !inGroup()) {
		mode &^= syscall.S_ISGID
	}
	return mode
}

// hasSetIDBits reports whether a write by some caller without CAP_FSETID
// drops bits of mode.
func hasSetIDBits(mode uint32) bool {
	return killedMode(mode&07777, func() bool { return false }) != mode&07777
}

// callerInGroup reports whether the caller of a request is in group gid: its
// own group, or one of its supplementary groups, which FUSE does not send and
// /proc tells (as libfuse's fuse_getgroups reads them). A caller gone by then
// counts as out of the group.
func callerInGroup(c *fuse.Caller, gid uint32) bool {
	if c.Gid == gid {
		return true
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.Pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(status), "\n") {
		if groups, ok := strings.CutPrefix(line, "Groups:"); ok {
			for _, g := range strings.Fields(groups) {
				if g == strconv.FormatUint(uint64(gid), 10) {
					return true
				}
			}
			return false
		}
	}
	return false
}

func (r *rawFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if st := r.killForWrite(cancel, in); !st.Ok() {
		return 0, st
	}
	return r.RawFileSystem.Write(cancel, in, data)
}

func (r *rawFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	if st := r.killForWrite(cancel, in); !st.Ok() {
		return 0, st
	}
	return r.RawFileSystem.Writev(cancel, in, data)
}

// killForWrite drops the set-ID bits before a WRITE the kernel marked.
func (r *rawFS) killForWrite(cancel <-chan struct{}, in *fuse.WriteIn) fuse.Status {
	if !r.killpriv.Load() || in.WriteFlags&fuse.WRITE_KILL_SUIDGID == 0 {
		return fuse.OK
	}
	return r.kill(cancel, &in.InHeader, in.Fh)
}

func (r *rawFS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	if caller := &in.Caller; r.killpriv.Load() && caller.Uid != 0 {
		if st := r.kill(cancel, &in.InHeader, in.Fh); !st.Ok() {
			return st
		}
	}
	return r.RawFileSystem.Fallocate(cancel, in)
}

func (r *rawFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if r.killpriv.Load() && in.Valid&fuse.FATTR_KILL_SUIDGID != 0 && in.Valid&fuse.FATTR_MODE == 0 {
		// The answer carries the new mode: no notification needed.
		var a fuse.AttrOut
		if st := r.GetAttr(cancel, &fuse.GetAttrIn{InHeader: in.InHeader}, &a); !st.Ok() {
			return st
		}
		if a.Mode&syscall.S_IFMT == syscall.S_IFREG {
			// A chown carries the flag whoever makes it; root keeps a
			// set-group-ID bit without group execute (in_group_or_capable).
			caller := &in.Caller // not in.Uid: a SETATTR's own Uid is the new owner
			inGroup := func() bool { return caller.Uid == 0 || callerInGroup(caller, a.Gid) }
			if m := killedMode(a.Mode&07777, inGroup); m != a.Mode&07777 {
				own := *in
				own.Valid |= fuse.FATTR_MODE
				own.Mode = m
				in = &own
			}
		}
	}
	return r.RawFileSystem.SetAttr(cancel, in, out)
}

// kill drops the set-ID bits of the regular file hdr names, through its open
// handle fh when there is one, before a write or fallocate that the kernel
// leaves it to drop, and tells the kernel, whose cached mode still has them.
func (r *rawFS) kill(cancel <-chan struct{}, hdr *fuse.InHeader, fh uint64) fuse.Status {
	var a fuse.AttrOut
	in := &fuse.GetAttrIn{InHeader: *hdr, Fh_: fh}
	if fh != 0 {
		in.Flags_ = fuse.FUSE_GETATTR_FH
	}
	if st := r.GetAttr(cancel, in, &a); !st.Ok() {
		return st
	}
	m := killedMode(a.Mode&07777, func() bool { return callerInGroup(&hdr.Caller, a.Gid) })
	if a.Mode&syscall.S_IFMT != syscall.S_IFREG || m == a.Mode&07777 {
		return fuse.OK
	}
	set := &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: *hdr, Valid: fuse.FATTR_MODE, Mode: m}}
	if fh != 0 {
		set.Valid |= fuse.FATTR_FH
		set.Fh = fh
	}
	if st := r.RawFileSystem.SetAttr(cancel, set, &a); !st.Ok() {
		return st
	}
	// Attributes only (offset -1): the kernel holds the file's pages for
	// the request under way.
	r.kernel.InodeNotify(hdr.NodeId, -1, 0)
	return fuse.OK
}
