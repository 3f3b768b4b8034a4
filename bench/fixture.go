package bench

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// A fixture is what the lower layers hold for a workload. fill writes layer
// number layer (0 is the bottom) into dir; calling it for every layer, bottom
// first, into one directory gives the merged tree, which is how the disk
// system gets its copy. Fixtures use no whiteouts, so that holds.
type fixture struct {
	name   string
	layers int
	fill   func(ctx context.Context, sz Sizes, runs, layer int, dir string) error
	// bytes is the disk space of all layers, roughly.
	bytes func(sz Sizes, runs int) int64
	// readOnly says no workload changes a file of the fixture: the disk
	// system's merged tree can then be hard links to the layers' files,
	// which take a tenth of the time of copies to make and to remove
	// (a file's blocks are freed, and discarded, only once).
	readOnly bool
	// journaled asks for a file system that reuses freed inodes at once:
	// its workloads create files right after deleting others (scratchfs.go).
	journaled bool
}

// Names in the tree of stat-walk, find, ls -lR and tar: treeDir/dNN/sNN/fNNNNNN,
// a hundred files in each leaf directory, ten leaves in each top directory.
const (
	treeDir      = "tree"
	treePerLeaf  = 100
	treePerTop   = 10
	treeLayers   = 3
	treeShadowed = 10 // every 10th file also has a shadowed copy in the bottom layer
)

func treeLeaves(files int) int { return (files + treePerLeaf - 1) / treePerLeaf }
func treeTops(files int) int {
	return (treeLeaves(files) + treePerTop - 1) / treePerTop
}

// TreeEntries is the number of entries of the merged tree of stat-walk, its
// root included.
func TreeEntries(sz Sizes) int {
	return 1 + treeTops(sz.TreeFiles) + treeLeaves(sz.TreeFiles) + sz.TreeFiles
}

// treeFile is the name and size of file k of the tree.
func treeFile(k int) (string, int64) {
	leaf := k / treePerLeaf
	return filepath.Join(treeDir, fmt.Sprintf("d%03d", leaf/treePerTop), fmt.Sprintf("s%02d", leaf%treePerTop), fmt.Sprintf("f%06d", k)),
		int64(k%8) * 512
}

// TreeBytes is the sum of the sizes of the files of the merged tree.
func TreeBytes(sz Sizes) int64 { return treeBytes(sz.TreeFiles) }

// treeBytes is the sum of the sizes of the first files files of the tree.
func treeBytes(files int) int64 {
	var n int64
	for k := range files {
		_, s := treeFile(k)
		n += s
	}
	return n
}

// tarTops is the number of top directories of the tree that tar archives:
// enough for TarFiles files, as many as untar unpacks. Tar's time is so
// much per file, and every file of the tree is like the others; the whole
// tree, read twice (once to warm the caches), was a quarter of a default run.
func tarTops(sz Sizes) int {
	perTop := treePerTop * treePerLeaf
	return min(treeTops(sz.TreeFiles), max(1, (sz.TarFiles+perTop-1)/perTop))
}

// tarTreeFiles is the number of files in the top directories tar archives.
func tarTreeFiles(sz Sizes) int { return min(sz.TreeFiles, tarTops(sz)*treePerTop*treePerLeaf) }

var treeFixture = &fixture{
	name:     "tree",
	readOnly: true,
	layers:   treeLayers,
	// Every layer has every directory, so that each is merged from three;
	// file k lives in layer k%3, and every tenth file not in the bottom
	// layer has a copy there that the union must hide.
	fill: func(ctx context.Context, sz Sizes, _, layer int, dir string) error {
		for l := range treeLeaves(sz.TreeFiles) {
			if err := os.MkdirAll(filepath.Join(dir, treeDir, fmt.Sprintf("d%03d", l/treePerTop), fmt.Sprintf("s%02d", l%treePerTop)), 0o755); err != nil {
				return err
			}
		}
		for k := range sz.TreeFiles {
			if k%1000 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			name, size := treeFile(k)
			switch {
			case k%treeLayers == layer:
			case layer == 0 && k%treeShadowed == 0:
				size = 4096 + size // the shadowed copy: another size
			default:
				continue
			}
			if err := writePattern(filepath.Join(dir, name), size); err != nil {
				return err
			}
		}
		return nil
	},
	bytes: func(sz Sizes, _ int) int64 {
		return int64(sz.TreeFiles)*(4096+4096/treeShadowed) + int64(treeLeaves(sz.TreeFiles))*treeLayers*4096
	},
}

// The directories of readdir: dirsDir/dN/e-NNNNNN, entry j in layer j%3.
const dirsDir = "dirs"

var dirsFixture = &fixture{
	name:     "dirs",
	readOnly: true,
	layers:   3,
	fill: func(ctx context.Context, sz Sizes, _, layer int, dir string) error {
		for d := range sz.Dirs {
			p := filepath.Join(dir, dirsDir, fmt.Sprintf("d%d", d))
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
			for j := layer; j < sz.DirEntries; j += 3 {
				if j%1000 < 3 && ctx.Err() != nil {
					return ctx.Err()
				}
				if err := writePattern(filepath.Join(p, fmt.Sprintf("e-%06d", j)), 0); err != nil {
					return err
				}
			}
		}
		return nil
	},
	bytes: func(sz Sizes, _ int) int64 { return int64(sz.Dirs) * int64(sz.DirEntries) * 300 },
}

// The file of seqread and randread.
const bigName = "big"

var bigFixture = &fixture{
	name:     "big",
	readOnly: true,
	layers:   1,
	fill: func(_ context.Context, sz Sizes, _, _ int, dir string) error {
		return writePattern(filepath.Join(dir, bigName), sz.BigFile)
	},
	bytes: func(sz Sizes, _ int) int64 { return sz.BigFile },
}

// copyUpName is the lower file copy-up writes into in run run: one per run,
// since a file is copied up only once.
func copyUpName(run int) string { return fmt.Sprintf("big-%d", run) }

var copyUpFixture = &fixture{
	name:   "copy-up",
	layers: 1,
	fill: func(ctx context.Context, sz Sizes, runs, _ int, dir string) error {
		for r := range runs {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err := writePattern(filepath.Join(dir, copyUpName(r)), sz.BigFile); err != nil {
				return err
			}
		}
		return nil
	},
	bytes: func(sz Sizes, runs int) int64 { return int64(runs) * sz.BigFile },
}

// metaDir is the directory of the lower files metadata-ops changes in run run.
func metaDir(run int) string { return fmt.Sprintf("meta-%d", run) }

var metaFixture = &fixture{
	name:   "meta",
	layers: 1,
	fill: func(ctx context.Context, sz Sizes, runs, _ int, dir string) error {
		for r := range runs {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			p := filepath.Join(dir, metaDir(r))
			if err := os.Mkdir(p, 0o755); err != nil {
				return err
			}
			for k := range sz.MetaFiles {
				if err := writePattern(filepath.Join(p, fmt.Sprintf("f%05d", k)), sz.MetaFileSize); err != nil {
					return err
				}
			}
		}
		return nil
	},
	bytes: func(sz Sizes, runs int) int64 {
		return int64(runs) * int64(sz.MetaFiles) * (sz.MetaFileSize + 4096)
	},
}

// emptyFixture is one empty lower layer, for the workloads that write.
var emptyFixture = &fixture{
	name:   "empty",
	layers: 1,
	fill:   func(context.Context, Sizes, int, int, string) error { return nil },
	bytes:  func(Sizes, int) int64 { return 0 },
}

// createFixture is emptyFixture for the workloads that create and delete
// thousands of files, on a journaled file system.
var createFixture = &fixture{
	name:      "create",
	layers:    1,
	fill:      emptyFixture.fill,
	bytes:     emptyFixture.bytes,
	journaled: true,
}

// The Go module of build: modDir, with BuildPkgs packages p0...pN, each
// importing the one before it and nothing else, so that a fresh GOCACHE
// compiles them and nothing of the standard library.
const (
	modDir       = "mod"
	modPath      = "example.com/strata-bench"
	modFiles     = 6
	modFuncsFile = 25
)

var modFixture = &fixture{
	name:     "module",
	readOnly: true,
	layers:   1,
	fill: func(_ context.Context, sz Sizes, _, _ int, dir string) error {
		root := filepath.Join(dir, modDir)
		if err := os.MkdirAll(root, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module "+modPath+"\n\ngo 1.21\n"), 0o644); err != nil {
			return err
		}
		for p := range sz.BuildPkgs {
			pdir := filepath.Join(root, fmt.Sprintf("p%d", p))
			if err := os.Mkdir(pdir, 0o755); err != nil {
				return err
			}
			for f := range modFiles {
				src := fmt.Sprintf("package p%d\n\n", p)
				if p > 0 && f == 0 {
					src += fmt.Sprintf("import prev %q\n\nvar Prev = prev.F0_0\n\n", fmt.Sprintf("%s/p%d", modPath, p-1))
				}
				for k := range modFuncsFile {
					src += fmt.Sprintf("// F%[1]d_%[2]d sums a series.\nfunc F%[1]d_%[2]d(n int) int {\n\ts := 0\n\tfor i := 0; i < n; i++ {\n\t\tif i%%%[3]d == 0 {\n\t\t\ts += i * %[2]d\n\t\t} else {\n\t\t\ts -= i\n\t\t}\n\t}\n\treturn s\n}\n\n", f, k, k+2)
				}
				if err := os.WriteFile(filepath.Join(pdir, fmt.Sprintf("f%d.go", f)), []byte(src), 0o644); err != nil {
					return err
				}
			}
		}
		return nil
	},
	bytes: func(sz Sizes, _ int) int64 { return int64(sz.BuildPkgs) * modFiles * 16 << 10 },
}

// untarArchive is the archive untar unpacks, written once to the scratch
// directory, outside every mount.
const untarArchive = "untar.tar"

// writeArchive writes the archive of untar to path: TarFiles files of 512 B
// to 4 KiB in directories of a hundred.
func writeArchive(sz Sizes, path string) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	tw := tar.NewWriter(f)
	buf := pattern()
	for k := range sz.TarFiles {
		if k%treePerLeaf == 0 {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("pkg/d%04d/", k/treePerLeaf), Mode: 0o755}); err != nil {
				return err
			}
		}
		size := int64(k%8+1) * 512
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("pkg/d%04d/f%06d", k/treePerLeaf, k), Mode: 0o644, Size: size}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if _, err := tw.Write(buf[:size]); err != nil {
			return err
		}
	}
	return tw.Close()
}

// untarBytes is the disk space of the unpacked archive, roughly.
func untarBytes(sz Sizes) int64 { return int64(sz.TarFiles) * 4096 * 11 / 10 }

// pattern is a MiB of bytes that neither compress nor dedupe to nothing.
func pattern() []byte {
	buf := make([]byte, 1<<20)
	x := uint32(2463534242)
	for i := range buf {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		buf[i] = byte(x)
	}
	return buf
}

// writePattern writes size bytes of pattern to path, replacing what is there.
func writePattern(path string, size int64) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	return writeN(f, size)
}

var patternBuf = pattern()

// writeN writes n bytes of pattern to w, a MiB at a time.
func writeN(w io.Writer, n int64) error {
	for n > 0 {
		k := min(n, int64(len(patternBuf)))
		if _, err := w.Write(patternBuf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// link makes the merged tree of lowers (top first) in dir, which exists, of
// directories and hard links to the files of the layers, each name linked
// to the topmost layer's file.
func link(ctx context.Context, lowers []string, dir string) error {
	for _, l := range lowers {
		err := filepath.WalkDir(l, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(l, p)
			if err != nil {
				return err
			}
			dst := filepath.Join(dir, rel)
			if d.IsDir() {
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := os.Mkdir(dst, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
					return err
				}
				return nil
			}
			if err := os.Link(p, dst); err != nil && !errors.Is(err, fs.ErrExist) {
				return err // a name that exists is a higher layer's
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("link merged tree: %w", err)
		}
	}
	return nil
}
