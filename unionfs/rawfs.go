package unionfs

import (
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// capNoOpendirSupport is FUSE_NO_OPENDIR_SUPPORT (Linux 5.1): the kernel
// accepts ENOSYS to OPENDIR as "never ask again", opens directories without a
// round trip, caches their listings (FOPEN_KEEP_CACHE|FOPEN_CACHE_DIR) and sends
// no RELEASEDIR. go-fuse does not name it.
const capNoOpendirSupport = 1 << 24

// rawFS stands between the kernel and go-fuse's node bridge to spare the two
// round trips of every opendir(3).
//
// A warm `find` does nothing but open and close directories whose listings the
// kernel already caches: without this, each one costs an OPENDIR and a
// RELEASEDIR through the daemon. With zero-message opendir the kernel sends
// READDIR with no handle (Fh 0); rawFS then opens a handle inside the daemon
// for that one request. That is sound because a handle's offsets are the
// index's cookies, fixed for the life of the directory's index: a READDIR at
// offset k on a fresh handle resumes exactly where an old one would.
type rawFS struct {
	fuse.RawFileSystem
	kernel    kernelCalls
	splicer   *splicer    // nil: big reads are copied (splice.go)
	noOpendir atomic.Bool // the kernel takes ENOSYS for OPENDIR
	killpriv  atomic.Bool // strata drops set-ID bits (killpriv.go)
}

// negotiated takes note of the capabilities the kernel offered at INIT; those
// strata asks for beyond go-fuse's (serveLoop.init) it got if offered.
func (r *rawFS) negotiated(kernelFlags uint64) {
	r.noOpendir.Store(kernelFlags&capNoOpendirSupport != 0)
	r.killpriv.Store(kernelFlags&capHandleKillprivV2 != 0)
}

func (r *rawFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if r.noOpendir.Load() {
		return fuse.ENOSYS
	}
	return r.RawFileSystem.OpenDir(cancel, in, out)
}

func (r *rawFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return r.withHandle(cancel, in, out, r.RawFileSystem.ReadDir)
}

func (r *rawFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	return r.withHandle(cancel, in, out, r.RawFileSystem.ReadDirPlus)
}

// withHandle calls read with in's handle, or, when the kernel sent none, with
// one opened for this request alone.
func (r *rawFS) withHandle(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList,
	read func(<-chan struct{}, *fuse.ReadIn, *fuse.DirEntryList) fuse.Status) fuse.Status {
	if in.Fh != 0 {
		return read(cancel, in, out)
	}
	var opened fuse.OpenOut
	if st := r.RawFileSystem.OpenDir(cancel, &fuse.OpenIn{InHeader: in.InHeader}, &opened); !st.Ok() {
		return st
	}
	own := *in
	own.Fh = opened.Fh
	st := read(cancel, &own, out)
	r.ReleaseDir(&fuse.ReleaseIn{InHeader: in.InHeader, Fh: opened.Fh})
	return st
}

// Read tags a big read of a file served through strata with its request, so
// that it can be spliced (fileRead.Readv).
func (r *rawFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	res, st := r.RawFileSystem.Read(cancel, in, buf)
	if fr, ok := res.(*fileRead); ok && r.splicer != nil {
		fr.sp, fr.unique = r.splicer, in.Unique
	}
	return res, st
}
