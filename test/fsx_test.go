package test

import (
	"bytes"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/unionfs"
	"github.com/strata-fs/strata/whiteout"
)

// An fsx-style exerciser: random writes, reads, truncations, hole punches,
// appends and mmap reads and writes on a file that starts in a lower layer,
// checked after every step against a model held in memory. It runs in a child
// process (this test binary, re-executed): a page fault on a mapping of the
// mount must not happen in the process that serves the mount.

const (
	fsxEnv     = "STRATA_FSX" // path:seed:ops, set in the child
	fsxMaxSize = 4 << 20
	// The lower file has a hole here, punched after it is written.
	fsxHoleStart, fsxHoleEnd = 256 << 10, 768 << 10
)

var (
	fsxOps   = flag.Int("fsx.ops", 3000, "fsx: operations per seed and whiteout format (make stress: 100000)")
	fsxSeeds = flag.Int("fsx.seeds", 1, "fsx: how many seeds to run, from STRATA_FSX_SEED (or the clock) on")
)

func TestFsx(t *testing.T) {
	if os.Getenv(fsxEnv) != "" {
		t.Skip("in the exerciser child")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("STRATA_FSX_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	ops := *fsxOps
	if testing.Short() {
		ops = min(ops, 500)
	}
	for k := range *fsxSeeds {
		t.Run(fmt.Sprint("seed-", seed+uint64(k)), func(t *testing.T) { runFsx(t, seed+uint64(k), ops) })
	}
}

func runFsx(t *testing.T, seed uint64, ops int) {
	initial := make([]byte, 1<<20+123)
	fill := rand.New(rand.NewPCG(seed, 1))
	for i := range initial {
		initial[i] = byte(fill.Uint32())
	}
	clear(initial[fsxHoleStart:fsxHoleEnd])
	type mode struct {
		name   string
		format whiteout.Format
		// follow mounts without LowerPassthrough and opens the read-only
		// descriptor before the first write: only then must it see the
		// writes (unionfs/doc.go, Caching).
		follow bool
	}
	for _, m := range []mode{{"oci", whiteout.OCI, false}, {"overlay", whiteout.Overlay, false}, {"follow-copy-up", whiteout.OCI, true}} {
		f := m.format
		t.Run(m.name, func(t *testing.T) {
			s := newStack(t, 2, func(i int, dir string) {
				if i == 0 {
					p := filepath.Join(dir, "f")
					if err := os.WriteFile(p, initial, 0o644); err != nil {
						t.Fatal(err)
					}
					// A hole in the lower file: copy-ups must keep it
					// reading as zeros.
					fd, err := unix.Open(p, unix.O_RDWR, 0)
					if err != nil {
						t.Fatal(err)
					}
					err = unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, fsxHoleStart, fsxHoleEnd-fsxHoleStart)
					_ = unix.Close(fd) // a fixture; the content is checked below
					if err != nil {
						t.Fatal(err)
					}
				}
			})
			guardLowers(t, s.Lowers)
			mnt := mountConfig(t, unionfs.Config{Lowers: s.Lowers, Upper: s.Upper, Work: s.Work, Whiteout: f, LowerPassthrough: !m.follow})
			roFirst := 0
			if m.follow {
				roFirst = 1
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestFsxChild$", "-test.v")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%d:%d:%d", fsxEnv, filepath.Join(mnt, "f"), seed, ops, roFirst))
			out, err := cmd.CombinedOutput()
			if err != nil || !bytes.Contains(out, []byte("--- PASS: TestFsxChild")) {
				t.Fatalf("exerciser (STRATA_FSX_SEED=%d to repeat): %v\n%s", seed, err, out)
			}
			lower, err := os.ReadFile(filepath.Join(s.Lowers[len(s.Lowers)-1], "f"))
			if err != nil || !bytes.Equal(lower, initial) {
				t.Errorf("the lower file changed (%v)", err)
			}
		})
	}
}

// TestFsxChild is the exerciser; it runs only when TestFsx starts it.
func TestFsxChild(t *testing.T) {
	spec := os.Getenv(fsxEnv)
	if spec == "" {
		t.Skip("run by TestFsx")
	}
	var path string
	var seed uint64
	var ops, roFirst int
	if i := bytes.IndexByte([]byte(spec), ':'); i > 0 {
		path = spec[:i]
		if _, err := fmt.Sscanf(spec[i+1:], "%d:%d:%d", &seed, &ops, &roFirst); err != nil {
			t.Fatal(err)
		}
	}
	x := &fsx{t: t, path: path, rnd: rand.New(rand.NewPCG(seed, 2))}
	var err error
	if x.model, err = os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
	// A read-only descriptor must see every later write, as on any file;
	// opened before the first write (and copy-up) too when the union follows
	// copy-ups (no Config.LowerPassthrough). With it, it would keep the lower file.
	if roFirst == 1 {
		if x.ro, err = unix.Open(path, unix.O_RDONLY, 0); err != nil {
			t.Fatal(err)
		}
	}
	if x.fd, err = unix.Open(path, unix.O_RDWR, 0); err != nil {
		t.Fatal(err)
	}
	if roFirst == 0 {
		if x.ro, err = unix.Open(path, unix.O_RDONLY, 0); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < ops; i++ {
		x.step(i)
		if t.Failed() {
			t.Fatalf("stopped at op %d; last ops:\n%s", i, bytes.Join(x.log, []byte("\n")))
		}
	}
	x.checkAll("end")
}

type fsx struct {
	t       *testing.T
	path    string
	rnd     *rand.Rand
	model   []byte
	fd, ro  int
	log     [][]byte
	scratch []byte
}

func (x *fsx) logf(format string, args ...any) {
	x.log = append(x.log, fmt.Appendf(nil, format, args...))
	if len(x.log) > 20 {
		x.log = x.log[1:]
	}
}

func (x *fsx) step(i int) {
	size := len(x.model)
	off := x.rnd.IntN(size + 1)
	n := 1 + x.rnd.IntN(64<<10)
	switch op := x.rnd.IntN(12); op {
	case 0, 1, 2: // write, maybe past the end (a hole between)
		if x.rnd.IntN(4) == 0 {
			off = size + x.rnd.IntN(64<<10)
		}
		if off+n > fsxMaxSize {
			return
		}
		data := x.data(n)
		x.logf("%d: pwrite off=%d len=%d", i, off, n)
		if k, err := unix.Pwrite(x.fd, data, int64(off)); err != nil || k != n {
			x.t.Errorf("pwrite off=%d len=%d: %d, %v", off, n, k, err)
			return
		}
		x.modelWrite(off, data)
	case 3: // append
		if size+n > fsxMaxSize {
			return
		}
		data := x.data(n)
		x.logf("%d: append len=%d", i, n)
		fd, err := unix.Open(x.path, unix.O_WRONLY|unix.O_APPEND, 0)
		if err != nil {
			x.t.Errorf("open O_APPEND: %v", err)
			return
		}
		if k, err := unix.Write(fd, data); err != nil || k != n {
			x.t.Errorf("append len=%d: %d, %v", n, k, err)
		}
		unix.Close(fd)
		x.modelWrite(size, data)
	case 4: // truncate, down or up
		to := x.rnd.IntN(fsxMaxSize / 2)
		x.logf("%d: ftruncate %d", i, to)
		if err := unix.Ftruncate(x.fd, int64(to)); err != nil {
			x.t.Errorf("ftruncate %d: %v", to, err)
			return
		}
		if to < size {
			x.model = x.model[:to]
		} else {
			x.model = append(x.model, make([]byte, to-size)...)
		}
	case 5: // punch a hole: zeroes, size kept
		if off >= size {
			return
		}
		n = min(n, size-off)
		x.logf("%d: punch off=%d len=%d", i, off, n)
		if err := unix.Fallocate(x.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(off), int64(n)); err != nil {
			x.t.Errorf("punch hole off=%d len=%d: %v", off, n, err)
			return
		}
		clear(x.model[off : off+n])
	case 6: // mmap write
		if size == 0 {
			return
		}
		n = min(n, size-off)
		if n == 0 {
			return
		}
		data := x.data(n)
		x.logf("%d: mmap write off=%d len=%d", i, off, n)
		m, err := unix.Mmap(x.fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			x.t.Errorf("mmap %d bytes: %v", size, err)
			return
		}
		copy(m[off:], data)
		if err := unix.Msync(m, unix.MS_SYNC); err != nil {
			x.t.Errorf("msync: %v", err)
		}
		_ = unix.Munmap(m) // a test mapping; the next check reads the file
		x.modelWrite(off, data)
	case 7: // mmap read
		if size == 0 {
			return
		}
		x.logf("%d: mmap read", i)
		m, err := unix.Mmap(x.ro, 0, size, unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			x.t.Errorf("mmap read %d bytes: %v", size, err)
			return
		}
		if j := firstDiff(m, x.model); j >= 0 {
			x.t.Errorf("mmap read differs at %d of %d", j, size)
		}
		_ = unix.Munmap(m) // read only
	case 8: // reopen the read-write descriptor, sometimes with O_TRUNC
		trunc := x.rnd.IntN(8) == 0
		x.logf("%d: reopen trunc=%v", i, trunc)
		unix.Close(x.fd)
		flags := unix.O_RDWR
		if trunc {
			flags |= unix.O_TRUNC
			x.model = x.model[:0]
		}
		var err error
		if x.fd, err = unix.Open(x.path, flags, 0); err != nil {
			x.t.Fatalf("reopen: %v", err)
		}
	case 9:
		x.logf("%d: fsync", i)
		if err := unix.Fsync(x.fd); err != nil {
			x.t.Errorf("fsync: %v", err)
		}
	default: // read a range, through either descriptor
		fd := x.fd
		if op == 10 {
			fd = x.ro
		}
		x.logf("%d: pread fd=%d off=%d len=%d", i, fd, off, n)
		buf := make([]byte, n)
		k, err := unix.Pread(fd, buf, int64(off))
		want := x.model[min(off, size):min(off+n, size)]
		if err != nil || !bytes.Equal(buf[:max(k, 0)], want) {
			x.t.Errorf("pread off=%d len=%d: got %d bytes (%v), want %d; first difference at %d",
				off, n, k, err, len(want), firstDiff(buf[:max(k, 0)], want))
		}
	}
	if i%100 == 0 {
		x.checkAll(fmt.Sprint("op ", i))
	}
}

// checkAll compares size and every byte, through both descriptors.
func (x *fsx) checkAll(when string) {
	var st unix.Stat_t
	if err := unix.Fstat(x.ro, &st); err != nil || st.Size != int64(len(x.model)) {
		x.t.Errorf("%s: size %d (%v), want %d", when, st.Size, err, len(x.model))
	}
	for _, fd := range []int{x.fd, x.ro} {
		buf := make([]byte, len(x.model)+1)
		k, err := unix.Pread(fd, buf, 0)
		if err != nil || k != len(x.model) || firstDiff(buf[:k], x.model) >= 0 {
			x.t.Errorf("%s: whole file through fd %d: %d bytes (%v), want %d, first difference at %d",
				when, fd, k, err, len(x.model), firstDiff(buf[:max(k, 0)], x.model))
		}
	}
}

func (x *fsx) data(n int) []byte {
	if cap(x.scratch) < n {
		x.scratch = make([]byte, n)
	}
	b := x.scratch[:n]
	for i := range b {
		b[i] = byte(x.rnd.Uint32())
	}
	return b
}

func (x *fsx) modelWrite(off int, data []byte) {
	if end := off + len(data); end > len(x.model) {
		x.model = append(x.model, make([]byte, end-len(x.model))...)
	}
	copy(x.model[off:], data)
}

// firstDiff is the first index where a and b differ, counting a length
// difference; -1 when equal.
func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}
