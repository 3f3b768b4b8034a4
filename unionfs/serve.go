package unionfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/fusedev"
)

// The serving loop: why strata has its own.
//
// Every FUSE request is a round trip: the kernel wakes a daemon thread blocked
// in read(2) on /dev/fuse, the daemon answers with write(2), and the kernel
// wakes the caller. A union does little work per request (a statx, an
// openat2), so what the loop costs around that work decides metadata speed.
//
// go-fuse's own loop keeps two or more goroutines blocked in read(2) and starts
// a new one whenever the last idle reader takes a request. In Go, a goroutine
// blocked in a system call holds a whole thread, and every such thread makes
// the runtime's monitor hand its processor to another thread (futex wake-ups,
// the monitor itself waking every 20 µs). With one caller doing one request at
// a time, as tar or rm -r does, that is paid on every request: untar of 4,000
// files took 3.4 s through it, against 1.7 s with this loop (fuse-overlayfs,
// single-threaded C: 1.6 s).
//
// This loop does what a single-threaded C daemon does, one thread reading,
// answering inline and reading again, and adds a reader only when the one it
// has is stuck: a request still running a tick or two after it started (a
// copy-up, a read from a cold disk) starts another reader, so that a slow
// request never holds up the others, and a reader that finds another already
// waiting leaves. Under load the loop widens to maxReaders; idle, it shrinks
// back to one.
//
// One watchdog goroutine finds the stuck requests, waking every watchTick
// while requests come and sleeping for good once they stop. It replaced a
// timer armed for each request, which cost more than the requests it watched:
// arming a Go timer earlier than the runtime's next one wakes the thread
// parked in epoll, and it woke again when the stopped timer would have fired:
// two thread switches around every request (untar of 4,000 files: 30,349
// futex calls in the daemon with the timers, 7,716 without).
//
// go-fuse still parses the requests and calls the node tree
// (fuse.ProtocolServer); fusedev owns the device.

// watchTick is how often the watchdog looks at the readers while requests
// come: a request seen running at two looks in a row, so for 250 to 500 µs,
// starts another reader. That is longer than almost every metadata request
// and short against a disk seek; a shorter tick costs a thread wake-up each.
const watchTick = 250 * time.Microsecond

// yieldEvery is how often a busy reader passes through the Go scheduler.
// A goroutine that only ever blocks in system calls never does, and after
// 10 ms on the same scheduling tick the runtime's monitor (sysmon) takes it
// for a runaway: it takes its processor away in every read(2), every 20 µs,
// and never slows down. That was a quarter of the daemon's CPU time while
// untar ran, in thread switches. runtime.Gosched costs a thread wake-up
// (it wakes an idle one to share the work): once every 2 ms, not per request.
const yieldEvery = 2 * time.Millisecond

// idleTicks is how many looks without a new request put the watchdog to
// sleep until the next one.
const idleTicks = 8

// maxReaders bounds the readers of a loop under load.
const maxReaders = 16

// reqBufSize fits the largest request: a WRITE of maxIO bytes plus headers
// (the kernel refuses reads into less than max_write plus a page).
const reqBufSize = maxIO + 64<<10

// serveLoop answers the requests of one mount.
type serveLoop struct {
	dev    *fusedev.Dev
	ps     *fuse.ProtocolServer
	logger *log.Logger
	debug  bool
	// extraCaps are INIT capabilities (the low 32 bits) strata asks for
	// beyond go-fuse's.
	extraCaps uint32
	// splicer holds the answers of READs spliced from a layer (splice.go).
	splicer *splicer

	mu      sync.Mutex
	waiting int // readers blocked in read(2)
	readers int // all readers
	slots   [maxReaders]readerSlot
	used    [maxReaders]bool // slots held by a reader; under mu

	// The watchdog sleeps on wake once idle: a reader that finds asleep
	// set (and clears it) sends it the request that ends its sleep.
	asleep atomic.Bool
	wake   chan struct{}
	quit   chan struct{} // closed when the last reader has left

	done sync.WaitGroup // every reader has left: the mount is gone
	// free holds the buffers of readers that left, for the next to start:
	// 2 MiB each, too big to allocate (and clear, and fault in) every time
	// a slow request starts a reader. Not a sync.Pool, which every garbage
	// collection empties; there are never more than maxReaders.
	free []*buffers
}

// readerSlot is what the watchdog sees of one reader: seq counts its
// requests twice, once when it takes one and once when it has answered, so it
// is odd while the reader is busy, and the same odd value at two looks means
// the same request is still running.
type readerSlot struct {
	seq atomic.Uint64
	_   [56]byte // one cache line each: readers on other cores write their own
}

// buffers are one reader's request and answer space.
type buffers struct {
	in, out []byte
}

func newServeLoop(dev *fusedev.Dev, ps *fuse.ProtocolServer, logger *log.Logger, debug bool) *serveLoop {
	return &serveLoop{dev: dev, ps: ps, logger: logger, debug: debug,
		wake: make(chan struct{}, 1), quit: make(chan struct{})}
}

// getBuffers returns a free pair of buffers, or new ones.
func (s *serveLoop) getBuffers() *buffers {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.free); n > 0 {
		b := s.free[n-1]
		s.free = s.free[:n-1]
		return b
	}
	return &buffers{in: make([]byte, reqBufSize), out: make([]byte, maxIO+64<<10)}
}

func (s *serveLoop) putBuffers(b *buffers) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.free = append(s.free, b)
}

// init answers the kernel's first request, INIT, and returns the capability
// flags the kernel offered. Nothing else on the mount is answered before it.
// go-fuse builds the answer; init adds those of extraCaps the kernel offered.
func (s *serveLoop) init() (uint64, error) {
	b := s.getBuffers()
	defer s.putBuffers(b)
	n, err := s.dev.Read(b.in)
	if err != nil {
		return 0, err
	}
	const opInit = 26 // FUSE_INIT
	if n < int(unsafe.Sizeof(fuse.InitIn{})) || binary.NativeEndian.Uint32(b.in[4:]) != opInit {
		return 0, fmt.Errorf("fuse: first request is not INIT (%d bytes)", n)
	}
	in := (*fuse.InitIn)(unsafe.Pointer(&b.in[0]))
	flags := in.Flags64()
	m, st := s.ps.HandleRequest([][]byte{b.in[:n]}, [][]byte{b.out})
	if !st.Ok() {
		return 0, fmt.Errorf("fuse: INIT: %v", st)
	}
	if grant := uint32(flags) & s.extraCaps; grant != 0 {
		// fuse_out_header, then fuse_init_out: major, minor,
		// max_readahead, flags.
		const flagsAt = 16 + 12
		f := binary.NativeEndian.Uint32(b.out[flagsAt:])
		binary.NativeEndian.PutUint32(b.out[flagsAt:], f|grant)
	}
	if err := s.dev.Write(b.out[:m]); err != nil {
		return 0, err
	}
	return flags, nil
}

// start serves the mount in the background until it is unmounted.
func (s *serveLoop) start() {
	go s.watch()
	s.mu.Lock()
	s.addReaderLocked()
	s.mu.Unlock()
}

// addReaderLocked starts a reader in a free slot; the caller holds mu.
func (s *serveLoop) addReaderLocked() {
	slot := -1
	for i, used := range s.used {
		if !used {
			slot = i
			break
		}
	}
	if slot < 0 {
		return // maxReaders are reading already
	}
	s.used[slot] = true
	s.readers++
	s.done.Add(1)
	go s.read(slot)
}

// watch is the watchdog: every watchTick while requests come, it starts a
// reader when one has been answering the same request since the last look.
func (s *serveLoop) watch() {
	var last [maxReaders]uint64
	idle := 0
	t := time.NewTicker(watchTick)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		moved, stuck := false, false
		for i := range s.slots {
			seq := s.slots[i].seq.Load()
			if seq != last[i] {
				moved = true
			} else if seq%2 == 1 {
				stuck = true
			}
			last[i] = seq
		}
		if stuck {
			s.unstick()
		}
		if moved || stuck {
			idle = 0
			continue
		}
		if idle++; idle < idleTicks {
			continue
		}
		// No request for a while: sleep until a reader takes one. A
		// reader that took one before asleep was set is seen by the
		// look after it; one that took one after, clears asleep and
		// sends wake.
		s.asleep.Store(true)
		if s.seqsMoved(&last) {
			if s.asleep.CompareAndSwap(true, false) {
				idle = 0
				continue
			}
			// A reader cleared it first, and sends wake.
		}
		t.Stop()
		select {
		case <-s.quit:
			return
		case <-s.wake:
		}
		idle = 0
		t.Reset(watchTick)
	}
}

// seqsMoved reports whether any reader's seq differs from last.
func (s *serveLoop) seqsMoved(last *[maxReaders]uint64) bool {
	for i := range s.slots {
		if s.slots[i].seq.Load() != last[i] {
			return true
		}
	}
	return false
}

// wait returns once the mount is gone and every reader has left.
func (s *serveLoop) wait() { s.done.Wait() }

// leaveLocked gives up a reader's slot; the caller holds mu. The last reader
// out stops the watchdog.
func (s *serveLoop) leaveLocked(slot int) {
	s.used[slot] = false
	s.readers--
	if s.readers == 0 {
		close(s.quit)
	}
}

// read is one reader: read a request, answer it, and go on while no other
// reader is waiting.
func (s *serveLoop) read(slot int) {
	defer s.done.Done()
	b := s.getBuffers()
	defer s.putBuffers(b)
	seq := &s.slots[slot].seq
	yielded := time.Now()
	for {
		s.mu.Lock()
		s.waiting++
		s.mu.Unlock()
		n, err := s.dev.Read(b.in)
		s.mu.Lock()
		s.waiting--
		if err != nil {
			s.leaveLocked(slot)
			s.mu.Unlock()
			if !errors.Is(err, fusedev.ErrUnmounted) {
				s.logger.Printf("strata: %v", err)
			}
			return
		}
		s.mu.Unlock()

		seq.Add(1) // busy
		if s.asleep.Load() && s.asleep.CompareAndSwap(true, false) {
			s.wake <- struct{}{} // never blocks: one sender per sleep
		}
		err = s.answer(b, n)
		seq.Add(1) // done
		if now := time.Now(); now.Sub(yielded) > yieldEvery {
			runtime.Gosched()
			yielded = now
		}
		if err != nil {
			s.logger.Printf("strata: %v", err)
		}

		s.mu.Lock()
		if s.waiting > 0 {
			// Another reader took over while this one was busy: one
			// waiting reader is enough.
			s.leaveLocked(slot)
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
	}
}

// unstick starts another reader if none is waiting: the request at hand is
// taking long, and the next one should not wait for it.
func (s *serveLoop) unstick() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiting > 0 || s.readers == 0 {
		return // someone will read the next request; or no one ever will
	}
	s.addReaderLocked()
}

// pollHackName is a name go-fuse answers for itself (fuse.ProtocolServer):
// a file whose POLL it answers with ENOSYS.
const pollHackName = ".go-fuse-epoll-hack"

// refusePoll makes the kernel learn, now, that this mount does not answer
// POLL. The Go runtime adds every file it opens to its epoll set, which asks
// the file system to poll: the first such request would otherwise come from
// whatever process first opens a file here, and a process that serves this
// mount and is exiting (a test binary) would wait for its answer forever.
func refusePoll(mountpoint string) error {
	fd, err := unix.Open(filepath.Join(mountpoint, pollHackName), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, _ = unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0) // the answer is the point, not the events
	return nil
}

// opRead is FUSE_READ's opcode.
const opRead = 15

// answer hands the request in b.in[:n] to go-fuse and writes its answer.
func (s *serveLoop) answer(b *buffers, n int) error {
	m, st := s.ps.HandleRequest([][]byte{b.in[:n]}, [][]byte{b.out})
	if !st.Ok() {
		return fmt.Errorf("fuse: request of %d bytes: %v", n, st)
	}
	if m == 0 {
		return nil // FORGET and the like take no answer
	}
	if s.splicer != nil && binary.NativeEndian.Uint32(b.in[4:]) == opRead {
		if p, ok := s.splicer.take(binary.NativeEndian.Uint64(b.in[8:])); ok {
			return s.splicer.send(p, s.dev, int(binary.NativeEndian.Uint32(b.out[0:])))
		}
	}
	if s.debug {
		unique := binary.NativeEndian.Uint64(b.out[8:])
		errno := int32(binary.NativeEndian.Uint32(b.out[4:]))
		s.logger.Printf("tx %d: %d bytes, errno %d", unique, m, -errno)
	}
	return s.dev.Write(b.out[:m])
}

// kernelCalls are the calls go-fuse's node bridge makes into the kernel:
// passthrough backing files, and cache invalidations (fs.ServerCallbacks).
type kernelCalls struct {
	dev *fusedev.Dev
}

func (k kernelCalls) RegisterBackingFd(m *fuse.BackingMap) (int32, syscall.Errno) {
	return k.dev.OpenBacking(int(m.Fd))
}

func (k kernelCalls) UnregisterBackingFd(id int32) syscall.Errno {
	return k.dev.CloseBacking(id)
}

// FUSE notification codes (enum fuse_notify_code).
const (
	notifyInvalInode = 2
	notifyInvalEntry = 3
	notifyDelete     = 6
)

// notify writes a notification: an answer header whose error field is the
// code, and no request it answers.
func (k kernelCalls) notify(code int32, payload []byte, name string) fuse.Status {
	hdr := make([]byte, 16)
	size := len(hdr) + len(payload)
	if name != "" {
		size += len(name) + 1
	}
	binary.NativeEndian.PutUint32(hdr[0:], uint32(size))
	binary.NativeEndian.PutUint32(hdr[4:], uint32(code))
	iov := [][]byte{hdr, payload}
	if name != "" {
		iov = append(iov, append([]byte(name), 0))
	}
	if err := k.dev.Write(iov...); err != nil {
		return fuse.Status(toErrno(err))
	}
	return fuse.OK
}

func (k kernelCalls) InodeNotify(node uint64, off, length int64) fuse.Status {
	p := make([]byte, 24)
	binary.NativeEndian.PutUint64(p[0:], node)
	binary.NativeEndian.PutUint64(p[8:], uint64(off))
	binary.NativeEndian.PutUint64(p[16:], uint64(length))
	return k.notify(notifyInvalInode, p, "")
}

func (k kernelCalls) EntryNotify(parent uint64, name string) fuse.Status {
	p := make([]byte, 16)
	binary.NativeEndian.PutUint64(p[0:], parent)
	binary.NativeEndian.PutUint32(p[8:], uint32(len(name)))
	return k.notify(notifyInvalEntry, p, name)
}

func (k kernelCalls) DeleteNotify(parent, child uint64, name string) fuse.Status {
	p := make([]byte, 24)
	binary.NativeEndian.PutUint64(p[0:], parent)
	binary.NativeEndian.PutUint64(p[8:], child)
	binary.NativeEndian.PutUint32(p[16:], uint32(len(name)))
	return k.notify(notifyDelete, p, name)
}

// strata never pushes file data into the kernel's cache, nor reads it back.
func (k kernelCalls) InodeNotifyStoreCache(uint64, int64, []byte) fuse.Status { return fuse.ENOSYS }

func (k kernelCalls) InodeRetrieveCache(uint64, int64, []byte) (int, fuse.Status) {
	return 0, fuse.ENOSYS
}
