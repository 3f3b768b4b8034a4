package test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/strata-fs/strata/unionfs"
	"github.com/strata-fs/strata/whiteout"
)

// The benchmarks run each workload on strata and on kernel overlayfs over
// identical stacks in the same run, and report both times and their ratio
// ("x-overlay": above 1 is slower than the kernel). The machines are shared and
// noisy, so only the ratio means much.

const benchFileSize = 256 << 20

// sideBySide times op on a strata mount and an overlay mount of two identical
// stacks made by fill, b.N times each, interleaved.
func sideBySide(b *testing.B, layers int, fill func(i int, dir string), op func(b *testing.B, mnt string, iter int)) {
	sideBySideWarm(b, layers, fill, nil, op)
}

// sideBySideWarm is sideBySide with warm, if not nil, called untimed on each
// mount first.
func sideBySideWarm(b *testing.B, layers int, fill func(i int, dir string), warm func(b *testing.B, mnt string), op func(b *testing.B, mnt string, iter int)) {
	sideBySideCfg(b, layers, fill, warm, op, false)
}

// sideBySideCfg is sideBySideWarm, strata mounted with metacopy or without.
func sideBySideCfg(b *testing.B, layers int, fill func(i int, dir string), warm func(b *testing.B, mnt string), op func(b *testing.B, mnt string, iter int), metacopy bool) {
	requireRoot(b)
	st := newStack(b, layers, fill)
	ov := newStack(b, layers, fill)
	sm := mountConfig(b, unionfs.Config{Lowers: st.Lowers, Upper: st.Upper, Work: st.Work, Whiteout: whiteout.OCI, Metacopy: metacopy})
	om := mountOverlay(b, ov)
	if warm != nil {
		warm(b, sm)
		warm(b, om)
	}
	var ts, to time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		op(b, sm, i)
		t1 := time.Now()
		op(b, om, i)
		to += time.Since(t1)
		ts += t1.Sub(t0)
	}
	b.StopTimer()
	b.ReportMetric(float64(ts.Nanoseconds())/float64(b.N), "strata-ns/op")
	b.ReportMetric(float64(to.Nanoseconds())/float64(b.N), "overlay-ns/op")
	if to > 0 {
		b.ReportMetric(float64(ts)/float64(to), "x-overlay")
	}
}

func writeFile(b testing.TB, path string, size int) {
	b.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for size > 0 {
		n := min(size, len(buf))
		if _, err := f.Write(buf[:n]); err != nil {
			b.Fatal(err)
		}
		size -= n
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkLookup stats 1000 names spread over three layers, each a fresh name
// per iteration so that the kernel's caches do not answer for the daemon.
func BenchmarkLookup(b *testing.B) {
	sideBySide(b, 3, func(i int, dir string) {
		for j := 0; j < 2000; j++ {
			if j%3 == i {
				writeFile(b, filepath.Join(dir, "d", fmt.Sprintf("f%05d", j)), 0)
			}
		}
	}, func(b *testing.B, mnt string, iter int) {
		for j := 0; j < 1000; j++ {
			name := filepath.Join(mnt, "d", fmt.Sprintf("f%05d", (j+iter*1000)%2000))
			if _, err := os.Lstat(name); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkReaddir lists a directory of 10k entries merged from three layers.
func BenchmarkReaddir(b *testing.B) {
	sideBySide(b, 3, func(i int, dir string) {
		for j := 0; j < 10000; j++ {
			if j%3 == i {
				writeFile(b, filepath.Join(dir, "big", fmt.Sprintf("entry-%05d", j)), 0)
			}
		}
	}, func(b *testing.B, mnt string, iter int) {
		ents, err := os.ReadDir(filepath.Join(mnt, "big"))
		if err != nil || len(ents) != 10000 {
			b.Fatalf("readdir: %d entries, %v", len(ents), err)
		}
	})
}

// BenchmarkSeqRead reads a 256 MiB lower file in 1 MiB blocks.
func BenchmarkSeqRead(b *testing.B) {
	b.SetBytes(benchFileSize)
	sideBySide(b, 1, func(i int, dir string) {
		writeFile(b, filepath.Join(dir, "big"), benchFileSize)
	}, func(b *testing.B, mnt string, iter int) {
		readAll(b, filepath.Join(mnt, "big"))
	})
}

// BenchmarkRandRead reads 4096 random 4 KiB blocks of a warm 256 MiB lower
// file through one descriptor: the per-read cost, which passthrough takes
// out of the daemon.
func BenchmarkRandRead(b *testing.B) {
	const reads, block = 4096, 4096
	b.SetBytes(reads * block)
	sideBySideWarm(b, 1, func(i int, dir string) {
		writeFile(b, filepath.Join(dir, "big"), benchFileSize)
	}, func(b *testing.B, mnt string) {
		readAll(b, filepath.Join(mnt, "big"))
	}, func(b *testing.B, mnt string, iter int) {
		f, err := os.Open(filepath.Join(mnt, "big"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, block)
		rng := rand.New(rand.NewPCG(uint64(iter), 1))
		for j := 0; j < reads; j++ {
			off := rng.Int64N(benchFileSize/block) * block
			if _, err := f.ReadAt(buf, off); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkReadSmallFiles opens and reads 2000 warm lower files of 8 KiB, as
// tar does: the cost of an open, which passthrough makes register a backing
// file.
func BenchmarkReadSmallFiles(b *testing.B) {
	const files, size = 2000, 8 << 10
	b.SetBytes(files * size)
	read := func(b *testing.B, mnt string) {
		buf := make([]byte, 2*size)
		for j := 0; j < files; j++ {
			data, err := os.Open(filepath.Join(mnt, "d", fmt.Sprintf("f%04d", j)))
			if err != nil {
				b.Fatal(err)
			}
			n, err := data.Read(buf)
			data.Close()
			if err != nil || n != size {
				b.Fatalf("read: %d bytes, %v", n, err)
			}
		}
	}
	sideBySideWarm(b, 1, func(i int, dir string) {
		for j := 0; j < files; j++ {
			writeFile(b, filepath.Join(dir, "d", fmt.Sprintf("f%04d", j)), size)
		}
	}, read, func(b *testing.B, mnt string, iter int) { read(b, mnt) })
}

func readAll(b *testing.B, path string) {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	total := 0
	for {
		n, err := f.Read(buf)
		total += n
		if n == 0 || err != nil {
			break
		}
	}
	if total != benchFileSize {
		b.Fatalf("read %d bytes, want %d", total, benchFileSize)
	}
}

// BenchmarkSeqWrite writes a new 256 MiB file in 1 MiB blocks and fsyncs it.
func BenchmarkSeqWrite(b *testing.B) {
	b.SetBytes(benchFileSize)
	sideBySide(b, 1, nil, func(b *testing.B, mnt string, iter int) {
		path := filepath.Join(mnt, fmt.Sprintf("new%d", iter))
		writeFile(b, path, benchFileSize)
		if err := os.Remove(path); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkCreateFiles creates 1000 files of 512 B in a new directory, as
// an untar does (open with O_CREAT|O_EXCL, write, close), then removes them
// as rm -r does: the metadata round trips of the write paths.
func BenchmarkCreateFiles(b *testing.B) {
	const files = 1000
	data := make([]byte, 512)
	sideBySide(b, 1, nil, func(b *testing.B, mnt string, iter int) {
		dir := filepath.Join(mnt, fmt.Sprintf("d%d", iter))
		if err := os.Mkdir(dir, 0o755); err != nil {
			b.Fatal(err)
		}
		for j := 0; j < files; j++ {
			f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("f%04d", j)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := f.Write(data); err != nil {
				b.Fatal(err)
			}
			if err := f.Close(); err != nil {
				b.Fatal(err)
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkCopyUp measures the first one-byte write into a 256 MiB lower file:
// the latency of copy-up. Each iteration writes to another lower file.
func BenchmarkCopyUp(b *testing.B) {
	b.SetBytes(benchFileSize)
	const files = 2 // lower files per stack; iterations beyond reuse none
	sideBySide(b, 1, func(i int, dir string) {
		for j := 0; j < files; j++ {
			writeFile(b, filepath.Join(dir, fmt.Sprintf("big%d", j)), benchFileSize)
		}
	}, func(b *testing.B, mnt string, iter int) {
		if iter >= files {
			b.Skip("copy-up runs once per lower file; use -benchtime=1x or 2x")
		}
		f, err := os.OpenFile(filepath.Join(mnt, fmt.Sprintf("big%d", iter)), os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.WriteAt([]byte{1}, 0); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	})
}

// BenchmarkChmod changes the mode of 100 lower files of 64 KiB: a copy-up
// each, metadata only with metacopy (overlayfs, metacopy=off, copies the data
// and fsyncs it). The first iteration copies up; -benchtime=1x times that alone.
func BenchmarkChmod(b *testing.B) {
	const files = 100
	for _, meta := range []bool{false, true} {
		b.Run(fmt.Sprintf("metacopy=%v", meta), func(b *testing.B) {
			sideBySideCfg(b, 1, func(i int, dir string) {
				for j := 0; j < files; j++ {
					writeFile(b, filepath.Join(dir, fmt.Sprintf("f%03d", j)), 64<<10)
				}
			}, nil, func(b *testing.B, mnt string, iter int) {
				for j := 0; j < files; j++ {
					// Mode bits differ per iteration.
					if err := os.Chmod(filepath.Join(mnt, fmt.Sprintf("f%03d", j)), os.FileMode(0o600|iter&1<<2)); err != nil {
						b.Fatal(err)
					}
				}
			}, meta)
		})
	}
}

// fill3 spreads n empty files over three layers, file j in layer j%3.
func fill3(b *testing.B, n int) func(i int, dir string) {
	return func(i int, dir string) {
		for j := i; j < n; j += 3 {
			writeFile(b, filepath.Join(dir, "d", fmt.Sprintf("f%05d", j)), 0)
		}
	}
}

// BenchmarkGetattr lstats 1000 names spread over three layers that the kernel
// has looked up already: the getattr path, cached or not.
func BenchmarkGetattr(b *testing.B) {
	const n = 1000
	stat := func(b *testing.B, mnt string) {
		for j := 0; j < n; j++ {
			if _, err := os.Lstat(filepath.Join(mnt, "d", fmt.Sprintf("f%05d", j))); err != nil {
				b.Fatal(err)
			}
		}
	}
	sideBySideWarm(b, 3, fill3(b, n), stat, func(b *testing.B, mnt string, _ int) { stat(b, mnt) })
}

// BenchmarkRead makes 1000 reads of 4 KiB at scattered offsets of a 64 MiB
// lower file, read once before: the warm read path.
func BenchmarkRead(b *testing.B) {
	const size = 64 << 20
	b.SetBytes(1000 * 4096)
	sideBySideWarm(b, 1, func(i int, dir string) {
		writeFile(b, filepath.Join(dir, "big"), size)
	}, func(b *testing.B, mnt string) {
		if _, err := os.ReadFile(filepath.Join(mnt, "big")); err != nil {
			b.Fatal(err)
		}
	}, func(b *testing.B, mnt string, iter int) {
		f, err := os.Open(filepath.Join(mnt, "big"))
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = f.Close() }() // opened for reading; nothing to lose
		buf := make([]byte, 4096)
		for j := 0; j < 1000; j++ {
			off := int64((j*7919+iter*104729)%(size/4096)) * 4096
			if _, err := f.ReadAt(buf, off); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkWrite makes 1000 writes of 4 KiB into a new upper file, buffered:
// the write path without copy-up.
func BenchmarkWrite(b *testing.B) {
	b.SetBytes(1000 * 4096)
	buf := make([]byte, 4096)
	sideBySide(b, 1, nil, func(b *testing.B, mnt string, iter int) {
		path := filepath.Join(mnt, fmt.Sprintf("w%d", iter))
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		for j := 0; j < 1000; j++ {
			if _, err := f.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		if err := os.Remove(path); err != nil {
			b.Fatal(err)
		}
	})
}
