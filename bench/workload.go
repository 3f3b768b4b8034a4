package bench

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Env is what a workload function works on.
type Env struct {
	// Dir is the root of the tree under test: a mount point, or the disk
	// system's directory.
	Dir string
	// Scratch is a directory outside every mount, for inputs such as the
	// archive of untar.
	Scratch string
	// Run numbers the runs from 0; workloads that change the tree use it to
	// name what they change.
	Run   int
	Sizes Sizes
}

// Work is what one call of a workload function did: the tests check it, and
// the report turns Ops into a rate.
type Work struct {
	Files int64 // files (non-directories) stated, listed, created, removed, changed
	Dirs  int64 // directories, where the workload counts them apart
	Bytes int64 // bytes read or written
	Ops   int64 // operations a rate is given for (randread: reads)
}

// StatWalk lstats every entry of the merged tree, reading each directory and
// then each of its entries, as du or a backup tool does. It counts the
// entries, the root included, in Files.
func StatWalk(ctx context.Context, e Env) (Work, error) {
	var w Work
	err := statWalk(ctx, filepath.Join(e.Dir, treeDir), &w)
	return w, err
}

func statWalk(ctx context.Context, dir string, w *Work) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	w.Files++
	if !fi.IsDir() {
		return nil
	}
	names, err := readNames(dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := statWalk(ctx, filepath.Join(dir, n), w); err != nil {
			return err
		}
	}
	return nil
}

// readNames lists dir with getdents and nothing else.
func readNames(dir string) (_ []string, err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	return f.Readdirnames(-1)
}

// Find runs find(1) over the merged tree, its output thrown away. Files counts
// the lines it printed: one per entry.
func Find(ctx context.Context, e Env) (Work, error) {
	var out lineCounter
	err := command(ctx, &out, "", nil, "find", filepath.Join(e.Dir, treeDir))
	return Work{Files: out.lines, Bytes: out.bytes}, err
}

// LsLR runs `ls -lR` over the merged tree: a stat and the extended attributes
// (ACLs, security labels) of every entry, and readdir. Files counts the lines
// it printed, Bytes their size.
func LsLR(ctx context.Context, e Env) (Work, error) {
	var out lineCounter
	err := command(ctx, &out, "", []string{"LC_ALL=C"}, "ls", "-lR", filepath.Join(e.Dir, treeDir))
	return Work{Files: out.lines, Bytes: out.bytes}, err
}

// Readdir lists each directory of readdir (Dirs of DirEntries entries each,
// merged from three layers) with getdents only, no stat. Files counts the
// names.
func Readdir(ctx context.Context, e Env) (Work, error) {
	var w Work
	for d := range e.Sizes.Dirs {
		if err := ctx.Err(); err != nil {
			return w, err
		}
		names, err := readNames(filepath.Join(e.Dir, dirsDir, fmt.Sprintf("d%d", d)))
		if err != nil {
			return w, err
		}
		w.Files += int64(len(names))
	}
	return w, nil
}

// SeqRead reads the big lower file from start to end in 1 MiB blocks. Bytes
// is what it read.
func SeqRead(ctx context.Context, e Env) (w Work, err error) {
	f, err := os.Open(filepath.Join(e.Dir, bigName))
	if err != nil {
		return w, err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	buf := make([]byte, 1<<20)
	for {
		n, err := f.Read(buf)
		w.Bytes += int64(n)
		w.Ops++
		if errors.Is(err, io.EOF) {
			return w, nil
		}
		if err != nil {
			return w, err
		}
		if w.Ops%64 == 0 && ctx.Err() != nil {
			return w, ctx.Err()
		}
	}
}

// RandRead makes RandReads reads of 4 KiB at random 4 KiB-aligned offsets of
// the big lower file, the same offsets in every system for a given run. Ops
// counts the reads, Bytes their bytes.
func RandRead(ctx context.Context, e Env) (w Work, err error) {
	f, err := os.Open(filepath.Join(e.Dir, bigName))
	if err != nil {
		return w, err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	blocks := e.Sizes.BigFile / 4096
	if blocks == 0 {
		return w, fmt.Errorf("randread: %s is smaller than a block", f.Name())
	}
	rng := rand.New(rand.NewPCG(uint64(e.Run), 0x5eed))
	buf := make([]byte, 4096)
	for i := range e.Sizes.RandReads {
		if i%1024 == 0 && ctx.Err() != nil {
			return w, ctx.Err()
		}
		n, err := f.ReadAt(buf, rng.Int64N(blocks)*4096)
		if err != nil {
			return w, err
		}
		w.Bytes += int64(n)
		w.Ops++
	}
	return w, nil
}

// writeName is the new file of seqwrite in run run.
func writeName(run int) string { return fmt.Sprintf("write-%d", run) }

// SeqWrite writes a new file of BigFile bytes in 1 MiB blocks, buffered: the
// time ends with close(2), before the data reaches the disk.
func SeqWrite(ctx context.Context, e Env) (Work, error) {
	return seqWrite(ctx, e, false)
}

// SeqWriteFsync is SeqWrite with an fsync(2) before close: the time ends when
// the data is on the disk.
func SeqWriteFsync(ctx context.Context, e Env) (Work, error) {
	return seqWrite(ctx, e, true)
}

func seqWrite(ctx context.Context, e Env, sync bool) (w Work, err error) {
	f, err := os.OpenFile(filepath.Join(e.Dir, writeName(e.Run)), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return w, err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	for w.Bytes < e.Sizes.BigFile {
		if err := ctx.Err(); err != nil {
			return w, err
		}
		k := min(e.Sizes.BigFile-w.Bytes, 64<<20)
		if err := writeN(f, k); err != nil {
			return w, err
		}
		w.Bytes += k
	}
	if sync {
		err = f.Sync()
	}
	return w, err
}

// removeWritten removes the file of SeqWrite and syncs, untimed, so that its
// dirty pages do not slow down what comes next.
func removeWritten(_ context.Context, e Env) error {
	err := os.Remove(filepath.Join(e.Dir, writeName(e.Run)))
	unix.Sync()
	return err
}

// CopyUp writes one byte at the start of a BigFile-sized lower file, a new one
// in each run, and closes it: the latency of copy-up, whatever way the system
// does it (a full copy, a clone, a sync or none).
func CopyUp(_ context.Context, e Env) (w Work, err error) {
	f, err := os.OpenFile(filepath.Join(e.Dir, copyUpName(e.Run)), os.O_WRONLY, 0)
	if err != nil {
		return w, err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	n, err := f.WriteAt([]byte{'x'}, 0)
	return Work{Files: 1, Bytes: int64(n)}, err
}

// removeCopiedUp removes the file CopyUp copied up, to free the upper.
func removeCopiedUp(_ context.Context, e Env) error {
	err := os.Remove(filepath.Join(e.Dir, copyUpName(e.Run)))
	unix.Sync()
	return err
}

// smallName is the directory of small-files in run run, and small files go
// into smallName/dNN/dNN: twenty to a directory, twenty directories to a
// parent.
func smallName(run int) string { return fmt.Sprintf("small-%d", run) }

const smallPerDir = 20

// SmallFilesCreate creates SmallFiles files of 4 KiB each in nested
// directories, without fsync. Files and Dirs count what it created.
func SmallFilesCreate(ctx context.Context, e Env) (w Work, err error) {
	root := filepath.Join(e.Dir, smallName(e.Run))
	if err := os.Mkdir(root, 0o755); err != nil {
		return w, err
	}
	w.Dirs++
	buf := patternBuf[:4096]
	var dir string
	for k := range e.Sizes.SmallFiles {
		if k%smallPerDir == 0 {
			if err := ctx.Err(); err != nil {
				return w, err
			}
			leaf := k / smallPerDir
			parent := filepath.Join(root, fmt.Sprintf("d%03d", leaf/smallPerDir))
			if leaf%smallPerDir == 0 {
				if err := os.Mkdir(parent, 0o755); err != nil {
					return w, err
				}
				w.Dirs++
			}
			dir = filepath.Join(parent, fmt.Sprintf("d%02d", leaf%smallPerDir))
			if err := os.Mkdir(dir, 0o755); err != nil {
				return w, err
			}
			w.Dirs++
		}
		if err := createFile(filepath.Join(dir, fmt.Sprintf("f%06d", k)), buf); err != nil {
			return w, err
		}
		w.Files++
		w.Bytes += int64(len(buf))
	}
	return w, nil
}

func createFile(path string, data []byte) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	_, err = f.Write(data)
	return err
}

// SmallFilesDelete removes the tree SmallFilesCreate made in the same run, as
// `rm -rf` does. Files and Dirs count what it removed.
func SmallFilesDelete(ctx context.Context, e Env) (Work, error) {
	return RemoveTree(ctx, filepath.Join(e.Dir, smallName(e.Run)))
}

// RemoveTree removes dir and everything in it, depth first, as `rm -rf` does,
// and counts what it removed.
func RemoveTree(ctx context.Context, dir string) (Work, error) {
	var w Work
	err := removeTree(ctx, dir, &w)
	return w, err
}

func removeTree(ctx context.Context, dir string, w *Work) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, de := range ents {
		p := filepath.Join(dir, de.Name())
		if de.IsDir() {
			if err := removeTree(ctx, p, w); err != nil {
				return err
			}
			continue
		}
		if err := os.Remove(p); err != nil {
			return err
		}
		w.Files++
	}
	if err := os.Remove(dir); err != nil {
		return err
	}
	w.Dirs++
	return nil
}

// untarName is the directory untar unpacks into in run run.
func untarName(run int) string { return fmt.Sprintf("untar-%d", run) }

// Untar unpacks the archive of TarFiles small files (made once, outside the
// mount) into a new directory of the tree, in process with archive/tar, as
// tar(1) would: mkdir, then create and write each file. Files, Dirs and Bytes
// count what it created.
func Untar(ctx context.Context, e Env) (w Work, err error) {
	a, err := os.Open(filepath.Join(e.Scratch, untarArchive))
	if err != nil {
		return w, err
	}
	defer func() { err = errors.Join(err, a.Close()) }()
	root := filepath.Join(e.Dir, untarName(e.Run))
	if err := os.Mkdir(root, 0o755); err != nil {
		return w, err
	}
	tr := tar.NewReader(a)
	var buf bytes.Buffer
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return w, nil
		}
		if err != nil {
			return w, err
		}
		if !filepath.IsLocal(hdr.Name) {
			return w, fmt.Errorf("untar: %s: not a local name", hdr.Name)
		}
		p := filepath.Join(root, hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, hdr.FileInfo().Mode().Perm()); err != nil {
				return w, err
			}
			w.Dirs++
			if err := ctx.Err(); err != nil {
				return w, err
			}
		case tar.TypeReg:
			buf.Reset()
			if _, err := buf.ReadFrom(tr); err != nil {
				return w, err
			}
			if err := createFile(p, buf.Bytes()); err != nil {
				return w, err
			}
			w.Files++
			w.Bytes += int64(buf.Len())
		default:
			return w, fmt.Errorf("untar: %s: unexpected type %c", hdr.Name, hdr.Typeflag)
		}
	}
}

// UntarRemove is the `rm -rf` of the tree Untar unpacked in the same run.
func UntarRemove(ctx context.Context, e Env) (Work, error) {
	return RemoveTree(ctx, filepath.Join(e.Dir, untarName(e.Run)))
}

// Tar archives the first top directories of the merged tree, TarFiles files
// or a few more, to nowhere, in process with archive/tar: a walk, an lstat
// and a header for every entry, and every file read to its end. (GNU tar,
// told to write to /dev/null, reads no file at all.) Files counts the
// entries, Bytes the file data read.
func Tar(ctx context.Context, e Env) (Work, error) {
	var w Work
	tw := tar.NewWriter(io.Discard)
	root := filepath.Join(e.Dir, treeDir)
	for t := range tarTops(e.Sizes) {
		if err := tarDir(ctx, tw, root, filepath.Join(root, fmt.Sprintf("d%03d", t)), &w); err != nil {
			return w, err
		}
	}
	return w, tw.Close()
}

// tarDir writes dir and everything in it to tw, named relative to root.
func tarDir(ctx context.Context, tw *tar.Writer, root, dir string, w *Work) error {
	return filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		hdr.Name = rel
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		w.Files++
		if !fi.Mode().IsRegular() {
			return nil
		}
		n, err := copyFile(tw, p)
		w.Bytes += n
		return err
	})
}

func copyFile(w io.Writer, path string) (_ int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	return io.Copy(w, f)
}

// gocacheName is the GOCACHE of build in run run, inside the tree.
func gocacheName(run int) string { return fmt.Sprintf("gocache-%d", run) }

// Build compiles the generated module (BuildPkgs packages that import each
// other and nothing else) with `go build ./...`, its sources in the lower
// layer and a fresh GOCACHE inside the tree, so that every package is
// compiled and its objects written through the mount. Files counts the
// packages.
func Build(ctx context.Context, e Env) (Work, error) {
	env := []string{
		"GOCACHE=" + filepath.Join(e.Dir, gocacheName(e.Run)),
		"GOTOOLCHAIN=local", "GOWORK=off", "GOFLAGS=-mod=mod", "GOPROXY=off", "CGO_ENABLED=0",
	}
	err := command(ctx, nil, filepath.Join(e.Dir, modDir), env, "go", "build", "./...")
	return Work{Files: int64(e.Sizes.BuildPkgs)}, err
}

// removeGocache removes the GOCACHE of Build.
func removeGocache(_ context.Context, e Env) error {
	return os.RemoveAll(filepath.Join(e.Dir, gocacheName(e.Run)))
}

// MetadataOps changes the metadata of MetaFiles lower files of MetaFileSize
// bytes each: chmod, chown, utimes, then a rename in the same directory, the
// operations that make a union copy a file up (or only its metadata). Files
// counts the files, Ops the calls.
func MetadataOps(ctx context.Context, e Env) (Work, error) {
	var w Work
	dir := filepath.Join(e.Dir, metaDir(e.Run))
	t := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	for k := range e.Sizes.MetaFiles {
		if k%100 == 0 && ctx.Err() != nil {
			return w, ctx.Err()
		}
		p := filepath.Join(dir, fmt.Sprintf("f%05d", k))
		if err := os.Chmod(p, 0o600); err != nil {
			return w, err
		}
		if err := os.Lchown(p, 1, 1); err != nil {
			return w, err
		}
		if err := os.Chtimes(p, t, t); err != nil {
			return w, err
		}
		if err := os.Rename(p, p+".moved"); err != nil {
			return w, err
		}
		w.Files++
		w.Ops += 4
	}
	return w, nil
}

// command runs name with args in dir (the current one if empty), with env
// added to this process's environment, its stdout to out and its stderr
// into the error.
func command(ctx context.Context, out io.Writer, dir string, env []string, name string, args ...string) error {
	var stderr bytes.Buffer
	c := exec.CommandContext(ctx, name, args...)
	c.Dir = dir
	c.Env = append(os.Environ(), env...)
	c.Stdout = out
	if out == nil {
		c.Stdout = &stderr
	}
	c.Stderr = &stderr
	if err := c.Run(); err != nil {
		if msg := bytes.TrimSpace(stderr.Bytes()); len(msg) > 0 {
			return fmt.Errorf("%s: %w: %s", name, err, oneLine(msg))
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// oneLine is the first 400 bytes of msg on one line.
func oneLine(msg []byte) []byte {
	if len(msg) > 400 {
		msg = append(msg[:400:400], "..."...)
	}
	return bytes.ReplaceAll(msg, []byte{'\n'}, []byte("; "))
}

// lineCounter counts the lines and bytes written to it.
type lineCounter struct{ lines, bytes int64 }

func (c *lineCounter) Write(p []byte) (int, error) {
	c.lines += int64(bytes.Count(p, []byte{'\n'}))
	c.bytes += int64(len(p))
	return len(p), nil
}
