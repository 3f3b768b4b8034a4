package unionfs

import (
	"encoding/binary"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/fusedev"
)

// Big reads of files served through strata (lower files of a writable union,
// which a copy-up must be able to move) are spliced: the layer's pages go into
// a pipe by reference, and from the pipe into the kernel's answer, copied
// once. A pread into the daemon's buffer and a write from it copy each byte
// twice, and the write pins the buffer's pages first: for a cold 1 GiB read
// that was 1.15 s of the daemon's system time against fuse-overlayfs's 0.3 s,
// which splices (libfuse's fuse_reply_data).
//
// The answer must reach /dev/fuse whole, header first, in one splice(2). The
// header is written into the pipe before the data, so it must say the data's
// length before the data is read: the length asked for. A read that comes
// back short (the end of the file) is taken out of the pipe again and answered
// from the daemon's buffer, which costs a few system calls more on the last
// request of a file.

// spliceMin is the smallest read worth three system calls instead of two: a
// pread and a write of 64 KiB copy about as long as the splices take.
const spliceMin = 64 << 10

// splicer holds the pipes of spliced answers and the answers waiting to be
// sent: a READ's data goes into a pipe while go-fuse builds its answer
// (fileRead.Readv, inside ProtocolServer.HandleRequest), and the serving loop
// sends the pipe in its place (serveLoop.answer).
type splicer struct {
	max     int      // the biggest read a pipe holds with its header
	pending sync.Map // request id → *pipe holding its whole answer

	// free are the empty pipes, one per reader at most in use at a time. A
	// free list of its own, not a sync.Pool: a pool drops what it holds at a
	// garbage collection, and a dropped pipe is two descriptors leaked.
	mu   sync.Mutex
	free []*pipe
}

// pipe is a pipe sized for one answer.
type pipe struct{ r, w int }

// newSplicer returns a splicer whose pipes hold answers of up to maxRead
// bytes, or a smaller one when the system allows no pipe that big (an
// unprivileged daemon gets /proc/sys/fs/pipe-max-size), or nil when it cannot
// splice at all.
func newSplicer(maxRead int) *splicer {
	s := &splicer{}
	p, size, err := newPipe(maxRead + 2*pageSize) // the header takes a slot of its own
	if err != nil || size-2*pageSize < spliceMin {
		if err == nil {
			p.close()
		}
		return nil
	}
	s.max = size - 2*pageSize // a data slot spare, for reads not on a page boundary
	s.free = append(s.free, p)
	return s
}

const pageSize = 4096

// newPipe makes a pipe of at least size bytes if it may, and says how big it got.
func newPipe(size int) (*pipe, int, error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, 0, err
	}
	p := &pipe{r: fds[0], w: fds[1]}
	got, err := unix.FcntlInt(uintptr(p.w), unix.F_SETPIPE_SZ, size)
	if err != nil {
		// Without CAP_SYS_RESOURCE, pipe-max-size (1 MiB by default) is the most.
		_, _ = unix.FcntlInt(uintptr(p.w), unix.F_SETPIPE_SZ, 1<<20)
		if got, err = unix.FcntlInt(uintptr(p.w), unix.F_GETPIPE_SZ, 0); err != nil {
			p.close()
			return nil, 0, err
		}
	}
	return p, got, nil
}

func (p *pipe) close() {
	_ = unix.Close(p.r)
	_ = unix.Close(p.w)
}

// get returns an empty pipe of the splicer's size.
func (s *splicer) get() (*pipe, error) {
	s.mu.Lock()
	if n := len(s.free); n > 0 {
		p := s.free[n-1]
		s.free = s.free[:n-1]
		s.mu.Unlock()
		return p, nil
	}
	s.mu.Unlock()
	p, size, err := newPipe(s.max + 2*pageSize)
	if err != nil {
		return nil, err
	}
	if size < s.max+2*pageSize {
		p.close()
		return nil, syscall.ENOMEM
	}
	return p, nil
}

// close closes the free pipes, once the loop has stopped.
func (s *splicer) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.free {
		p.close()
	}
	s.free = nil
	s.pending.Range(func(k, v any) bool { // answers nobody sent: none, unless a write failed
		v.(*pipe).close()
		s.pending.Delete(k)
		return true
	})
}

// take returns the pipe holding the answer to request unique, if one does.
func (s *splicer) take(unique uint64) (*pipe, bool) {
	v, ok := s.pending.LoadAndDelete(unique)
	if !ok {
		return nil, false
	}
	return v.(*pipe), true
}

// put gives back a pipe that was emptied; one that may hold bytes is closed,
// and so is one more than the readers can use at once.
func (s *splicer) put(p *pipe, empty bool) {
	if empty {
		s.mu.Lock()
		if len(s.free) < maxReaders {
			s.free = append(s.free, p)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
	p.close()
}

// fileRead is a READ of a file served through strata, done when go-fuse
// asks for the bytes: by splice when rawFS.Read tagged it with the request
// (sp set), else by pread.
type fileRead struct {
	f      *file
	off    int64
	size   int
	sp     *splicer
	unique uint64
}

var _ interface {
	fuse.ReadResult
	Readv([][]byte) (int, fuse.Status)
} = (*fileRead)(nil)

func (r *fileRead) Size() int { return r.size }
func (r *fileRead) Done()     {}

// Bytes reads into buf, for callers that want the data in memory.
func (r *fileRead) Bytes(buf []byte) ([]byte, fuse.Status) {
	n, errno := r.f.pread(buf[:min(len(buf), r.size)], r.off)
	return buf[:n], fuse.Status(errno)
}

// copied reads into buf the plain way, for a read that is not spliced.
func (r *fileRead) copied(buf []byte) (int, fuse.Status) {
	n, errno := r.f.pread(buf, r.off)
	return n, fuse.Status(errno)
}

// Readv is how go-fuse's ProtocolServer takes the data, into the answer's
// buffer dst. A spliced read leaves dst alone: the answer, header and data,
// waits in a pipe for serveLoop.answer, and the count it returns goes into the
// header go-fuse writes (and the loop then drops).
func (r *fileRead) Readv(dst [][]byte) (int, fuse.Status) {
	if len(dst) != 1 || len(dst[0]) < r.size {
		return 0, fuse.EIO // the loop gives one buffer, big enough
	}
	buf := dst[0][:r.size]
	if r.sp == nil || r.size > r.sp.max {
		return r.copied(buf)
	}
	p, err := r.sp.get()
	if err != nil {
		return r.copied(buf)
	}
	var hdr [16]byte // struct fuse_out_header
	binary.NativeEndian.PutUint32(hdr[0:], uint32(len(hdr)+r.size))
	binary.NativeEndian.PutUint64(hdr[8:], r.unique)
	if _, err := unix.Write(p.w, hdr[:]); err != nil {
		r.sp.put(p, false)
		return r.copied(buf)
	}
	n := 0
	errno := r.f.use(func(fd int, _ bool) syscall.Errno {
		off := r.off
		for n < r.size {
			m, err := unix.Splice(fd, &off, p.w, nil, r.size-n, unix.SPLICE_F_MOVE)
			if err != nil || m == 0 {
				return toErrno(err) // 0 at the end of the file
			}
			n += int(m)
		}
		return 0
	})
	if errno == 0 && n == r.size {
		r.sp.pending.Store(r.unique, p)
		return n, fuse.OK
	}
	// Short, or the layer's file system does not splice: take back what the
	// pipe holds and read the rest. A short answer would tell the kernel the
	// file ends there.
	if err := drain(p.r, hdr[:]); err != nil {
		r.sp.put(p, false)
		return 0, fuse.EIO
	}
	if err := drain(p.r, buf[:n]); err != nil {
		r.sp.put(p, false)
		return 0, fuse.EIO
	}
	r.sp.put(p, true)
	rest, errno := r.f.pread(buf[n:], r.off+int64(n))
	if errno != 0 {
		return 0, fuse.Status(errno)
	}
	return n + rest, fuse.OK
}

// drain reads exactly len(buf) bytes from the pipe r, which holds them.
func drain(r int, buf []byte) error {
	for got := 0; got < len(buf); {
		m, err := unix.Read(r, buf[got:])
		if err != nil {
			return err
		}
		if m == 0 {
			return syscall.EIO
		}
		got += m
	}
	return nil
}

// send writes the answer waiting in p to the kernel, length bytes with its
// header. The pipe goes back to the pool only when emptied.
func (s *splicer) send(p *pipe, dev *fusedev.Dev, length int) error {
	err := dev.Splice(p.r, length)
	s.put(p, err == nil)
	return err
}
