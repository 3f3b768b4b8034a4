package layers

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/cow"
	"github.com/strata-fs/strata/whiteout"
)

// DiffOptions tune WriteDiff.
type DiffOptions struct {
	// Clamp, when set, caps every modification time at it (SOURCE_DATE_EPOCH):
	// two commits of the same tree at different times give the same tar.
	Clamp time.Time
	// Exclude are paths relative to the upper ("etc/hostname") that never go
	// into the tar, nor anything below them.
	Exclude []string
	// Lowers are the layer directories under the upper, top first: a
	// metacopy file of the upper (whiteout.MetacopyXattr) takes its data
	// from the topmost of them holding the path its marker names. Without
	// them an upper with a metacopy file is an error.
	Lowers []string
}

// WriteDiff writes the upper directory upper as a layer tar to w: every entry
// of the upper, which is what changed, with whiteouts of both formats written
// as ".wh.NAME" entries and opaque directories (the ".wh..wh..opq" file or the
// overlay opaque xattr) as ".wh..wh..opq" entries, so that any OCI tool can
// apply it. Hard links within the upper are tar links. The tar is
// reproducible: entries sorted by name, numeric owners only, no access or
// change times, xattrs in name order, overlay xattrs left out.
//
// The upper is read by path without following symlinks; it must not change
// while it is written (unmount it first, or use it from a stopped container).
// Sparse files are written whole (Go's tar writer writes no sparse entries).
func WriteDiff(upper string, w io.Writer, opts DiffOptions) error {
	tw := tar.NewWriter(w)
	links := map[[2]uint64]string{} // (dev, ino) → the first name of a hard-linked file
	exclude := map[string]bool{}
	for _, e := range opts.Exclude {
		exclude[filepath.Clean(e)] = true
	}
	if err := walkDiff(tw, upper, "", links, exclude, opts); err != nil {
		return fmt.Errorf("write diff: %s: %w", upper, err)
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write diff: %s: %w", upper, err)
	}
	return nil
}

// walkDiff writes the entries of the directory rel of upper, sorted by the
// names they get in the tar (an overlay whiteout "x" is written as ".wh.x"),
// each directory followed by its own entries.
func walkDiff(tw *tar.Writer, upper, rel string, links map[[2]uint64]string, exclude map[string]bool, opts DiffOptions) error {
	ents, err := os.ReadDir(filepath.Join(upper, rel))
	if err != nil {
		return err
	}
	type named struct {
		tarName string
		ent     fs.DirEntry
	}
	var list []named
	for _, e := range ents {
		n := e.Name()
		if e.Type()&fs.ModeCharDevice != 0 {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(upper, rel, n), &st); err != nil {
				return &os.PathError{Op: "lstat", Path: filepath.Join(upper, rel, n), Err: err}
			}
			if whiteout.IsOverlayWhiteout(st.Mode, st.Rdev) {
				n = whiteout.WhiteoutFor(whiteout.OCI, n).Name
			}
		}
		list = append(list, named{n, e})
	}
	slices.SortFunc(list, func(a, b named) int { return strings.Compare(a.tarName, b.tarName) })
	for _, e := range list {
		r := filepath.Join(rel, e.ent.Name())
		if exclude[r] {
			continue
		}
		if err := diffEntry(tw, filepath.Join(upper, r), filepath.ToSlash(r), links, opts); err != nil {
			return err
		}
		if e.ent.IsDir() {
			if err := walkDiff(tw, upper, r, links, exclude, opts); err != nil {
				return err
			}
		}
	}
	return nil
}

func diffEntry(tw *tar.Writer, p, rel string, links map[[2]uint64]string, opts DiffOptions) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return &os.PathError{Op: "lstat", Path: p, Err: err}
	}
	mtime := time.Unix(st.Mtim.Unix())
	if !opts.Clamp.IsZero() && mtime.After(opts.Clamp) {
		mtime = opts.Clamp
	}
	dir, name := filepath.Split(rel)
	hdr := &tar.Header{
		Name:    rel,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: mtime,
		Format:  tar.FormatPAX,
	}
	kind, target := whiteout.Classify(name, st.Mode, st.Rdev)
	switch kind {
	case whiteout.Meta:
		return nil // aufs bookkeeping: no layer carries it
	case whiteout.Whiteout, whiteout.OpaqueMark:
		// Either format, written as OCI.
		if kind == whiteout.Whiteout {
			hdr.Name = dir + whiteout.WhiteoutFor(whiteout.OCI, target).Name
		}
		hdr.Typeflag, hdr.Mode = tar.TypeReg, 0o644
		return writeHeader(tw, hdr)
	}
	xattrs, opaque, err := diffXattrs(p)
	if err != nil {
		return err
	}
	for _, n := range slices.Sorted(mapsKeys(xattrs)) {
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+n] = xattrs[n]
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		hdr.Typeflag, hdr.Name = tar.TypeDir, rel+"/"
		if err := writeHeader(tw, hdr); err != nil {
			return err
		}
		if opaque {
			if _, err := os.Lstat(filepath.Join(p, whiteout.OpaqueMarker)); errors.Is(err, fs.ErrNotExist) {
				return writeHeader(tw, &tar.Header{Typeflag: tar.TypeReg, Name: rel + "/" + whiteout.OpaqueMarker,
					Mode: 0o644, ModTime: mtime, Format: tar.FormatPAX})
			}
		}
		return nil
	case unix.S_IFLNK:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
		return writeHeader(tw, hdr)
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO:
		hdr.Typeflag = map[uint32]byte{unix.S_IFCHR: tar.TypeChar, unix.S_IFBLK: tar.TypeBlock, unix.S_IFIFO: tar.TypeFifo}[st.Mode&unix.S_IFMT]
		hdr.Devmajor, hdr.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
		return writeHeader(tw, hdr)
	case unix.S_IFSOCK:
		return nil // a socket is no file to ship
	}
	// A regular file, or a second name of one.
	if st.Nlink > 1 {
		key := [2]uint64{st.Dev, st.Ino}
		if first, ok := links[key]; ok {
			hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
			return writeHeader(tw, hdr)
		}
		links[key] = rel
	}
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }() // read-only
	data, err := metacopyData(f, opts.Lowers, st.Size)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if data != f {
		defer func() { _ = data.Close() }() // read-only
	}
	hdr.Typeflag, hdr.Size = tar.TypeReg, st.Size
	if err := writeHeader(tw, hdr); err != nil {
		return err
	}
	if n, err := io.Copy(tw, data); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	} else if n != st.Size {
		return fmt.Errorf("%s: changed while read (%d bytes, expected %d)", rel, n, st.Size)
	}
	return nil
}

// metacopyData returns the file holding the data of the upper file f: f itself,
// or for a metacopy file the lower file its marker names, found in lowers (top
// first), which must have the size f shows.
func metacopyData(f *os.File, lowers []string, size int64) (*os.File, error) {
	src, ok, err := cow.MetacopyOf(int(f.Fd()))
	if err != nil || !ok {
		return f, err
	}
	for _, l := range lowers {
		d, err := os.OpenFile(filepath.Join(l, filepath.FromSlash(src)), os.O_RDONLY|unix.O_NOFOLLOW, 0)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if fi, err := d.Stat(); err != nil || !fi.Mode().IsRegular() || fi.Size() != size {
			_ = d.Close()
			return nil, fmt.Errorf("metacopy data %s in %s: not the file the upper was made on", src, l)
		}
		return d, nil
	}
	return nil, fmt.Errorf("metacopy file: no lower layer holds its data %s (give the lower layers)", src)
}

func writeHeader(tw *tar.Writer, hdr *tar.Header) error {
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", hdr.Name, err)
	}
	return nil
}

func mapsKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// diffXattrs reads the xattrs of p that go into a layer; opaque reports the
// overlay opaque mark, which is written as an entry instead.
func diffXattrs(p string) (map[string]string, bool, error) {
	sz, err := unix.Llistxattr(p, nil)
	if errors.Is(err, unix.ENOTSUP) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, &os.PathError{Op: "llistxattr", Path: p, Err: err}
	}
	if sz == 0 {
		return nil, false, nil
	}
	buf := make([]byte, sz)
	if sz, err = unix.Llistxattr(p, buf); err != nil {
		return nil, false, &os.PathError{Op: "llistxattr", Path: p, Err: err}
	}
	out := map[string]string{}
	opaque := false
	for _, n := range strings.Split(string(buf[:sz]), "\x00") {
		if n == "" {
			continue
		}
		vsz, err := unix.Lgetxattr(p, n, nil)
		if err != nil {
			return nil, false, &os.PathError{Op: "lgetxattr " + n, Path: p, Err: err}
		}
		v := make([]byte, vsz)
		if vsz, err = unix.Lgetxattr(p, n, v); err != nil {
			return nil, false, &os.PathError{Op: "lgetxattr " + n, Path: p, Err: err}
		}
		v = v[:vsz]
		if whiteout.IsOpaqueXattr(n, v) {
			opaque = true
		}
		if whiteout.IsPrivateXattr(n) {
			continue
		}
		out[n] = string(v)
	}
	return out, opaque, nil
}

// CommitOptions tune Commit.
type CommitOptions struct {
	// Tags name the new image.
	Tags []string
	// Created is the image's creation time; zero: now. It also clamps the
	// modification times of the layer (see DiffOptions.Clamp) when Clamp is
	// set.
	Created time.Time
	// Clamp caps the layer's modification times at Created.
	Clamp bool
	// Comment goes into the history entry of the new layer.
	Comment string
	// Exclude: see DiffOptions.
	Exclude []string
	// Unpack is passed on to Unpack.
	Unpack UnpackOptions
}

// Commit makes the upper directory upper a new layer on top of the image
// from, and stores the result as a new image, which it returns. The layer is
// the tar WriteDiff writes, gzip-compressed; the image's config and manifest
// are from's with the layer appended (go-containerregistry mutate). On error
// the store is left as it was.
func (s *Store) Commit(ctx context.Context, upper, from string, opts CommitOptions) (id v1.Hash, err error) {
	base, err := s.V1Image(from)
	if err != nil {
		return v1.Hash{}, err
	}
	// The layer is staged in tmp/ before ingest takes tmp/ in turn; a
	// shared lock of our own keeps a cleaner away meanwhile.
	release, err := s.useTmp()
	if err != nil {
		return v1.Hash{}, err
	}
	defer func() { err = errors.Join(err, release()) }()
	created := opts.Created
	if created.IsZero() {
		created = time.Now().UTC()
	}
	rec, err := s.Image(from)
	if err != nil {
		return v1.Hash{}, err
	}
	diff := DiffOptions{Exclude: opts.Exclude}
	for i := len(rec.Layers) - 1; i >= 0; i-- { // top first
		diff.Lowers = append(diff.Lowers, s.LayerDir(rec.Layers[i].DiffID))
	}
	if opts.Clamp {
		diff.Clamp = created
	}
	f, err := os.CreateTemp(s.path("tmp"), "commit-")
	if err != nil {
		return v1.Hash{}, fmt.Errorf("commit: %w", err)
	}
	defer func() {
		_ = f.Close()           // read-only by now, or failed
		_ = os.Remove(f.Name()) // staging: the layer is in the store or nowhere
	}()
	h := sha256.New()
	if err := WriteDiff(upper, io.MultiWriter(f, h), diff); err != nil {
		return v1.Hash{}, fmt.Errorf("commit: %w", err)
	}
	mt, err := base.MediaType()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("commit: %w", err)
	}
	layerType := types.OCILayer
	if mt == types.DockerManifestSchema2 {
		layerType = types.DockerLayer
	}
	tarPath := f.Name()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return os.Open(tarPath) },
		tarball.WithMediaType(layerType))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("commit: %w", err)
	}
	comment := opts.Comment
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, MediaType: layerType, History: v1.History{
		Created: v1.Time{Time: created}, CreatedBy: "strata commit", Comment: comment,
	}})
	if err == nil {
		img, err = mutate.CreatedAt(img, v1.Time{Time: created})
	}
	if err != nil {
		return v1.Hash{}, fmt.Errorf("commit: %w", err)
	}
	in, err := sourceFromImage(upper, img)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("commit: %w", err)
	}
	for _, t := range opts.Tags {
		in.tags = append(in.tags, NormalizeTag(t))
	}
	return s.ingest(ctx, in, ImportOptions{Unpack: opts.Unpack})
}
