package layers

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/flock"
)

// ImportOptions tune Import.
type ImportOptions struct {
	// Tags name the image (NAME[:TAG]); none: the names the archive gives.
	Tags []string
	// Platform is the os/arch[/variant] to pick from a multi-platform index
	// and to accept; "": the host's (linux/amd64, say).
	Platform string
	// Progress hears of each layer; nil: silence.
	Progress Progress
	// Unpack is passed on to Unpack.
	Unpack UnpackOptions
}

// Progress hears how an import goes, layer by layer.
type Progress interface {
	// Layer starts layer i (from 1) of n, whose blob is size bytes (-1:
	// unknown). The writer is given every byte read from the blob.
	Layer(i, n int, diffID v1.Hash, size int64) LayerProgress
}

// LayerProgress follows one layer.
type LayerProgress interface {
	io.Writer
	// Done ends the layer: status is "unpacked" or "already present"; err
	// is non-nil when the layer failed.
	Done(status string, err error)
}

// layerSource is one layer as a source gives it.
type layerSource struct {
	// desc describes the blob; a zero Digest means the source names none
	// (a docker archive's legacy layer.tar), and ingest fills it in.
	desc v1.Descriptor
	// what names the layer's file in errors ("blobs/sha256/...").
	what string
	open func() (io.ReadCloser, error)
}

// source is an image to ingest.
type source struct {
	file     string // the archive or layout, for errors
	config   []byte
	cfg      *v1.ConfigFile
	manifest []byte // nil: ingest writes an OCI manifest
	mediaTyp types.MediaType
	layers   []layerSource
	tags     []string // the names the source gives
	close    func() error
}

// Import imports the image at src into the store and returns its id. src is
// a docker-archive (`docker save`, `podman save`) file, or an OCI image layout
// directory, optionally followed by ":TAG" or "@sha256:HEX" to pick one of its
// images.
//
// Every digest the source gives is verified as the data streams through:
// manifests, configs, layer blobs and the diff_ids of the config. On any error
// the store is left as it was: nothing is renamed into place until it is
// complete and verified, and what an import renamed into place is removed
// again if a later step fails. Two imports of images sharing layers may run at
// once; the second waits for the first's shared layers and unpacks them no
// second time.
func (s *Store) Import(ctx context.Context, src string, opts ImportOptions) (v1.Hash, error) {
	plat, err := parsePlatform(opts.Platform)
	if err != nil {
		return v1.Hash{}, err
	}
	var in *source
	if dir, ref, ok := splitLayoutRef(src); ok {
		in, err = readLayout(dir, ref, plat)
	} else {
		in, err = readArchive(src, opts.Tags)
	}
	if err != nil {
		return v1.Hash{}, err
	}
	defer func() { _ = in.close() }() // read-only files
	if err := checkPlatform(in, plat); err != nil {
		return v1.Hash{}, err
	}
	if len(opts.Tags) > 0 {
		in.tags = nil
		for _, t := range opts.Tags {
			in.tags = append(in.tags, NormalizeTag(t))
		}
	}
	return s.ingest(ctx, in, opts)
}

func parsePlatform(p string) (*v1.Platform, error) {
	if p == "" {
		return &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}, nil
	}
	plat, err := v1.ParsePlatform(p)
	if err != nil {
		return nil, fmt.Errorf("platform %q: %w", p, err)
	}
	return plat, nil
}

func checkPlatform(in *source, want *v1.Platform) error {
	got := v1.Platform{OS: in.cfg.OS, Architecture: in.cfg.Architecture, Variant: in.cfg.Variant}
	if got.OS == "" && got.Architecture == "" {
		return nil // a config that names no platform
	}
	if got.OS != want.OS || got.Architecture != want.Architecture || (want.Variant != "" && got.Variant != want.Variant) {
		return fmt.Errorf("import %s: %w: the image is for %s, not %s (see --platform)", in.file, ErrBadImage, got.String(), want.String())
	}
	return nil
}

// splitLayoutRef reads "DIR", "DIR:TAG" or "DIR@DIGEST" for an OCI layout
// directory (one holding index.json); ok is false for anything else.
func splitLayoutRef(src string) (dir, ref string, ok bool) {
	isLayout := func(d string) bool {
		_, err := os.Stat(filepath.Join(d, "index.json"))
		return err == nil
	}
	if isLayout(src) {
		return src, "", true
	}
	if i := strings.LastIndexByte(src, '@'); i > 0 && isLayout(src[:i]) {
		return src[:i], src[i:], true
	}
	if i := strings.LastIndexByte(src, ':'); i > 0 && isLayout(src[:i]) {
		return src[:i], src[i+1:], true
	}
	return "", "", false
}

const refNameAnnotation = "org.opencontainers.image.ref.name"

// readLayout reads the image ref of the OCI layout dir.
func readLayout(dir, ref string, plat *v1.Platform) (*source, error) {
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w: %w", dir, ErrBadImage, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("import %s: %w: %w", dir, ErrBadImage, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("import %s: index.json: %w: %w", dir, ErrBadImage, err)
	}
	desc, err := pickDescriptor(dir, im.Manifests, ref)
	if err != nil {
		return nil, err
	}
	tagName := desc.Annotations[refNameAnnotation]
	// An index: pick the platform's manifest from it.
	for depth := 0; desc.MediaType.IsIndex(); depth++ {
		raw, err := verifiedBlob(p, dir, *desc)
		if err != nil {
			return nil, err
		}
		sub, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("import %s: index %s: %w: %w", dir, desc.Digest, ErrBadImage, err)
		}
		if depth > 4 {
			return nil, fmt.Errorf("import %s: index %s: %w: indexes nested too deep", dir, desc.Digest, ErrBadImage)
		}
		var found *v1.Descriptor
		var have []string
		for i, m := range sub.Manifests {
			if m.Platform == nil {
				continue
			}
			have = append(have, m.Platform.String())
			if m.Platform.Satisfies(*plat) && found == nil {
				found = &sub.Manifests[i]
			}
		}
		if found == nil {
			return nil, fmt.Errorf("import %s: %w: no manifest for platform %s (the index has %s; see --platform)",
				dir, ErrBadImage, plat, strings.Join(have, ", "))
		}
		desc = found
	}
	if !desc.MediaType.IsImage() {
		return nil, fmt.Errorf("import %s: manifest %s: %w: unknown media type %q", dir, desc.Digest, ErrBadImage, desc.MediaType)
	}
	raw, err := verifiedBlob(p, dir, *desc)
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("import %s: manifest %s: %w: %w", dir, desc.Digest, ErrBadImage, err)
	}
	if m.MediaType != "" && !m.MediaType.IsImage() {
		return nil, fmt.Errorf("import %s: manifest %s: %w: unknown media type %q", dir, desc.Digest, ErrBadImage, m.MediaType)
	}
	if !m.Config.MediaType.IsConfig() {
		return nil, fmt.Errorf("import %s: config %s: %w: unknown media type %q", dir, m.Config.Digest, ErrBadImage, m.Config.MediaType)
	}
	config, err := verifiedBlob(p, dir, m.Config)
	if err != nil {
		return nil, err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(config))
	if err != nil {
		return nil, fmt.Errorf("import %s: config %s: %w: %w", dir, m.Config.Digest, ErrBadImage, err)
	}
	in := &source{file: dir, config: config, cfg: cfg, manifest: raw, mediaTyp: desc.MediaType, close: func() error { return nil }}
	for i, l := range m.Layers {
		what := fmt.Sprintf("layer %d/%d (blobs/%s/%s)", i+1, len(m.Layers), l.Digest.Algorithm, l.Digest.Hex)
		if !knownLayerType(l.MediaType) {
			return nil, fmt.Errorf("import %s: %s: %w: unknown media type %q", dir, what, ErrBadImage, l.MediaType)
		}
		blob := filepath.Join(dir, "blobs", l.Digest.Algorithm, l.Digest.Hex)
		if _, err := os.Stat(blob); err != nil {
			return nil, fmt.Errorf("import %s: %s: %w: missing blob: %w", dir, what, ErrBadImage, err)
		}
		in.layers = append(in.layers, layerSource{desc: l, what: what, open: func() (io.ReadCloser, error) { return os.Open(blob) }})
	}
	if tagName != "" {
		in.tags = []string{layoutTag(dir, tagName)}
	}
	return in, nil
}

// layoutTag names an image of a layout: its ref.name annotation when that is a
// whole reference ("docker.io/library/busybox:1.0"), else the directory's name
// with the annotation as tag.
func layoutTag(dir, refName string) string {
	if strings.ContainsAny(refName, ":/") {
		return NormalizeTag(refName)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	return filepath.Base(abs) + ":" + refName
}

// pickDescriptor finds ref (a tag, "@sha256:...", or "" for the only image)
// among the manifests of index.json.
func pickDescriptor(dir string, ms []v1.Descriptor, ref string) (*v1.Descriptor, error) {
	var tags []string
	for i, m := range ms {
		name := m.Annotations[refNameAnnotation]
		tags = append(tags, name)
		switch {
		case ref == "":
		case strings.HasPrefix(ref, "@"):
			if "@"+m.Digest.String() == ref {
				return &ms[i], nil
			}
		case name == ref, strings.HasSuffix(name, ":"+ref):
			return &ms[i], nil
		}
	}
	if ref == "" && len(ms) == 1 {
		return &ms[0], nil
	}
	if ref == "" {
		return nil, fmt.Errorf("import %s: %w: the layout holds %d images (tags %q): name one as DIR:TAG or DIR@DIGEST", dir, ErrBadImage, len(ms), tags)
	}
	return nil, fmt.Errorf("import %s: %w: no image %q in index.json (tags %q)", dir, ErrBadImage, ref, tags)
}

// verifiedBlob reads a (small) blob of a layout and checks its digest.
func verifiedBlob(p layout.Path, dir string, d v1.Descriptor) ([]byte, error) {
	what := fmt.Sprintf("blobs/%s/%s", d.Digest.Algorithm, d.Digest.Hex)
	if d.Digest.Algorithm != "sha256" {
		return nil, fmt.Errorf("import %s: %s: %w: digest algorithm %q", dir, what, ErrBadImage, d.Digest.Algorithm)
	}
	b, err := p.Bytes(d.Digest)
	if err != nil {
		return nil, fmt.Errorf("import %s: %s: %w: missing blob: %w", dir, what, ErrBadImage, err)
	}
	if got := sha256Of(b); got != d.Digest {
		return nil, fmt.Errorf("import %s: %s: %w: content is %s", dir, what, ErrDigest, got)
	}
	return b, nil
}

func sha256Of(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sum)}
}

func knownLayerType(mt types.MediaType) bool {
	switch mt {
	case types.OCILayer, types.OCILayerZStd, types.OCIUncompressedLayer,
		types.OCIRestrictedLayer, types.OCIUncompressedRestrictedLayer,
		types.DockerLayer, types.DockerUncompressedLayer, types.DockerForeignLayer:
		return true
	}
	return false
}

// archiveEntry is where a file sits in a docker archive.
type archiveEntry struct {
	off, size int64
	link      string // a symlink's target, resolved against the archive's root
}

// readArchive reads a docker archive, picking the image tagged one of tags,
// or the first.
func readArchive(file string, tags []string) (_ *source, err error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close() // read-only
		}
	}()
	ents, err := indexArchive(f)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w: %w", file, ErrBadImage, err)
	}
	open := func(name string) (*io.SectionReader, error) {
		for range 16 { // symlinks between layers of a docker save
			e, ok := ents[path.Clean(name)]
			if !ok {
				return nil, fmt.Errorf("%s: %w: not in the archive", name, ErrBadImage)
			}
			if e.link == "" {
				return io.NewSectionReader(f, e.off, e.size), nil
			}
			name = e.link
		}
		return nil, fmt.Errorf("%s: %w: too many symlinks", name, ErrBadImage)
	}
	if _, err := open("manifest.json"); err != nil {
		return nil, fmt.Errorf("import %s: not an OCI layout (no index.json) nor a docker archive: %w", file, err)
	}
	mf, err := tarball.LoadManifest(func() (io.ReadCloser, error) {
		return io.NopCloser(io.NewSectionReader(f, 0, 1<<62)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("import %s: manifest.json: %w: %w", file, ErrBadImage, err)
	}
	if len(mf) == 0 {
		return nil, fmt.Errorf("import %s: manifest.json: %w: no image", file, ErrBadImage)
	}
	d := mf[0]
	for _, cand := range mf {
		for _, rt := range cand.RepoTags {
			for _, t := range tags {
				if NormalizeTag(t) == NormalizeTag(rt) {
					d = cand
				}
			}
		}
	}
	cr, err := open(d.Config)
	if err != nil {
		return nil, fmt.Errorf("import %s: config: %w", file, err)
	}
	config, err := io.ReadAll(cr)
	if err != nil {
		return nil, fmt.Errorf("import %s: %s: %w", file, d.Config, err)
	}
	if want, ok := digestInName(d.Config); ok && sha256Of(config) != want {
		return nil, fmt.Errorf("import %s: config %s: %w: content is %s", file, d.Config, ErrDigest, sha256Of(config))
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(config))
	if err != nil {
		return nil, fmt.Errorf("import %s: config %s: %w: %w", file, d.Config, ErrBadImage, err)
	}
	in := &source{file: file, config: config, cfg: cfg, close: f.Close}
	for _, t := range d.RepoTags {
		in.tags = append(in.tags, NormalizeTag(t))
	}
	for i, name := range d.Layers {
		what := fmt.Sprintf("layer %d/%d (%s)", i+1, len(d.Layers), name)
		r, err := open(name)
		if err != nil {
			return nil, fmt.Errorf("import %s: %s: missing blob: %w", file, what, err)
		}
		var desc v1.Descriptor
		if h, ok := digestInName(name); ok {
			desc.Digest = h
		}
		desc.Size = r.Size()
		in.layers = append(in.layers, layerSource{desc: desc, what: what, open: func() (io.ReadCloser, error) {
			return io.NopCloser(io.NewSectionReader(r, 0, r.Size())), nil
		}})
	}
	return in, nil
}

// digestInName reads the digest that a docker archive file name spells:
// "blobs/sha256/HEX" (docker 25 and later) or "HEX.json" (a config).
func digestInName(name string) (v1.Hash, bool) {
	if rest, ok := strings.CutPrefix(name, "blobs/sha256/"); ok {
		if h, err := v1.NewHash("sha256:" + rest); err == nil {
			return h, true
		}
	}
	if hex, ok := strings.CutSuffix(name, ".json"); ok && len(hex) == 64 {
		if h, err := v1.NewHash("sha256:" + hex); err == nil {
			return h, true
		}
	}
	return v1.Hash{}, false
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// indexArchive reads the tar headers of a docker archive once and notes where
// each file's data sits.
func indexArchive(f *os.File) (map[string]archiveEntry, error) {
	cr := &countingReader{r: bufio.NewReaderSize(f, 1<<16)}
	tr := tar.NewReader(cr)
	ents := map[string]archiveEntry{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return ents, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read archive: %w", err)
		}
		name := path.Clean(hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeReg:
			// The reader stops right after the header(s): the data
			// starts here. A truncated archive shows when the data
			// runs out.
			ents[name] = archiveEntry{off: cr.n, size: hdr.Size}
			if _, err := io.Copy(io.Discard, tr); err != nil {
				return nil, fmt.Errorf("read archive: %s: %w", hdr.Name, err)
			}
		case tar.TypeSymlink:
			ents[name] = archiveEntry{link: path.Join(path.Dir(name), hdr.Linkname)}
		}
	}
}

// ingest puts the image in into the store: see Import.
func (s *Store) ingest(ctx context.Context, in *source, opts ImportOptions) (id v1.Hash, err error) {
	release, err := s.useTmp()
	if err != nil {
		return v1.Hash{}, err
	}
	defer func() { err = errors.Join(err, release()) }()
	diffIDs := in.cfg.RootFS.DiffIDs
	if len(diffIDs) != len(in.layers) {
		return v1.Hash{}, fmt.Errorf("import %s: %w: the config lists %d diff_ids for %d layers", in.file, ErrBadImage, len(diffIDs), len(in.layers))
	}
	id = sha256Of(in.config)
	unlock, err := s.lockLayers(diffIDs)
	if err != nil {
		return v1.Hash{}, err
	}
	defer func() {
		if uerr := unlock(); uerr != nil && err == nil {
			err = uerr
		}
	}()
	// created is what this import renamed into place; a failure removes it.
	var created []string
	defer func() {
		if err != nil {
			for _, p := range created {
				err = errors.Join(err, os.RemoveAll(p))
			}
		}
	}()
	rec := Record{ID: id, Imported: time.Now().UTC()}
	for i, ls := range in.layers {
		if err := ctx.Err(); err != nil {
			return v1.Hash{}, err
		}
		lr, made, err := s.ingestLayer(in, i, ls, diffIDs[i], opts)
		created = append(created, made...)
		if err != nil {
			return v1.Hash{}, err
		}
		rec.Layers = append(rec.Layers, lr)
	}
	if in.manifest == nil {
		in.manifest, in.mediaTyp, err = ociManifest(in.config, rec.Layers)
		if err != nil {
			return v1.Hash{}, err
		}
	}
	rec.Manifest, rec.ManifestMediaType = sha256Of(in.manifest), in.mediaTyp
	for _, b := range [][]byte{in.config, in.manifest} {
		made, err := s.putBlob(sha256Of(b), b)
		if made != "" {
			created = append(created, made)
		}
		if err != nil {
			return v1.Hash{}, err
		}
	}
	made, err := s.commitRecord(&rec, in.tags)
	if made != "" {
		created = append(created, made)
	}
	return id, err
}

// commitRecord writes the image record, if new, and points the tags at it,
// under store.lock. It returns the record's path when it wrote it.
func (s *Store) commitRecord(rec *Record, tags []string) (made string, err error) {
	meta, err := flock.Exclusive(s.path("store.lock"))
	if err != nil {
		return "", err
	}
	defer func() {
		if uerr := meta.Unlock(); uerr != nil && err == nil {
			err = uerr
		}
	}()
	if _, err := os.Stat(s.recordPath(rec.ID)); errors.Is(err, fs.ErrNotExist) {
		b, err := json.MarshalIndent(rec, "", "  ")
		if err != nil {
			return "", fmt.Errorf("write image: %w", err)
		}
		if err := s.writeFileAtomic(s.recordPath(rec.ID), append(b, '\n')); err != nil {
			return "", err
		}
		made = s.recordPath(rec.ID)
	}
	if len(tags) == 0 {
		return made, nil
	}
	all, err := s.readTags()
	if err == nil {
		for _, t := range tags {
			all[t] = rec.ID
		}
		err = s.writeTags(all)
	}
	return made, err
}

// ociManifest writes the manifest of an image that came without one.
func ociManifest(config []byte, layers []LayerRecord) ([]byte, types.MediaType, error) {
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Size: int64(len(config)), Digest: sha256Of(config)},
	}
	for _, l := range layers {
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: l.MediaType, Size: l.Size, Digest: l.Digest})
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, "", fmt.Errorf("write manifest: %w", err)
	}
	return b, types.OCIManifestSchema1, nil
}

// putBlob stores a small blob, unless it is there; made is its path when this
// call wrote it.
func (s *Store) putBlob(h v1.Hash, b []byte) (made string, err error) {
	p := s.blobPath(h)
	if _, err := os.Stat(p); err == nil {
		return "", nil
	}
	if err := s.writeFileAtomic(p, b); err != nil {
		return "", err
	}
	return p, nil
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// ingestLayer unpacks layer i of in, unless the store has it, and stores its
// blob, unless the store has that. It returns the paths it renamed into place.
// The caller holds the layer's lock.
func (s *Store) ingestLayer(in *source, i int, ls layerSource, diffID v1.Hash, opts ImportOptions) (lr LayerRecord, made []string, err error) {
	lr = LayerRecord{DiffID: diffID, Digest: ls.desc.Digest, MediaType: ls.desc.MediaType, Size: ls.desc.Size}
	haveLayer := exists(s.layerPath(diffID))
	haveBlob := ls.desc.Digest.Hex != "" && exists(s.blobPath(ls.desc.Digest))
	var prog LayerProgress = nopProgress{}
	if opts.Progress != nil {
		prog = opts.Progress.Layer(i+1, len(in.layers), diffID, ls.desc.Size)
	}
	fail := func(err error) (LayerRecord, []string, error) {
		err = fmt.Errorf("import %s: %s: %w", in.file, ls.what, err)
		prog.Done("", err)
		return lr, made, err
	}
	if haveLayer && haveBlob {
		m, err := s.readLayerMeta(diffID)
		if err != nil {
			return fail(err)
		}
		lr.Unpacked = m.Unpacked
		prog.Done("already present", nil)
		return lr, nil, nil
	}
	rc, err := ls.open()
	if err != nil {
		return fail(fmt.Errorf("%w: missing blob: %w", ErrBadImage, err))
	}
	defer func() { _ = rc.Close() }() // read-only

	stage, err := os.MkdirTemp(s.path("tmp"), "layer-")
	if err != nil {
		return fail(err)
	}
	defer func() { _ = os.RemoveAll(stage) }() // what is left of the staging dir is debris
	// blob → (progress, blob hash, blob copy) → decompress → diff hash → tar.
	blobHash := sha256.New()
	blobCount := &countingReader{r: rc}
	var sinks = []io.Writer{blobHash, prog}
	var blobFile *os.File
	if !haveBlob {
		if blobFile, err = os.OpenFile(filepath.Join(stage, "blob"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return fail(err)
		}
		defer func() { _ = blobFile.Close() }() // closed and checked below; this is for the error paths
		sinks = append(sinks, blobFile)
	}
	raw := bufio.NewReaderSize(io.TeeReader(blobCount, io.MultiWriter(sinks...)), 1<<20)
	dec, mt, err := decompress(raw, ls.desc.MediaType)
	if err != nil {
		return fail(err)
	}
	defer func() { _ = dec.Close() }() // a decompressor; the verdict is the digests
	diffHash := sha256.New()
	tarCount := &countingReader{r: io.TeeReader(dec, diffHash)}
	if !haveLayer {
		if err := os.Mkdir(filepath.Join(stage, "layer"), 0o700); err != nil {
			return fail(err)
		}
		if err := os.Mkdir(filepath.Join(stage, "layer", "diff"), 0o755); err != nil {
			return fail(err)
		}
		if err := unpackPipelined(filepath.Join(stage, "layer", "diff"), tarCount, opts.Unpack); err != nil {
			return fail(err)
		}
	}
	// The tar's end-of-archive blocks and any padding count in the diff_id.
	if _, err := io.Copy(io.Discard, tarCount); err != nil {
		return fail(fmt.Errorf("%w: %w", ErrBadImage, err))
	}
	if _, err := io.Copy(io.Discard, raw); err != nil {
		return fail(fmt.Errorf("%w: %w", ErrBadImage, err))
	}
	gotBlob := hashOf(blobHash)
	if ls.desc.Digest.Hex != "" && gotBlob != ls.desc.Digest {
		return fail(fmt.Errorf("blob: %w: content is %s, the manifest says %s", ErrDigest, gotBlob, ls.desc.Digest))
	}
	if got := hashOf(diffHash); got != diffID {
		return fail(fmt.Errorf("diff_id: %w: content is %s, the config says %s", ErrDigest, got, diffID))
	}
	lr.Digest, lr.Size, lr.Unpacked = gotBlob, blobCount.n, tarCount.n
	if lr.MediaType == "" {
		lr.MediaType = mt
	}
	keepBlob := !haveBlob && !exists(s.blobPath(gotBlob))
	if !haveBlob {
		if err := blobFile.Close(); err != nil {
			return fail(err)
		}
	}
	if !haveLayer {
		meta, err := json.Marshal(layerMeta{DiffID: diffID, Unpacked: tarCount.n})
		if err == nil {
			err = os.WriteFile(filepath.Join(stage, "layer", "layer.json"), meta, 0o600)
		}
		if err != nil {
			return fail(err)
		}
	}
	if !haveLayer || keepBlob {
		// The layer's files and the blob reach the disk before their
		// names do: a crash leaves no layer, or a whole one. One
		// syncfs(2) flushes them all, where an fsync per file would
		// cost a round trip to the disk each.
		if err := syncfs(stage); err != nil {
			return fail(err)
		}
	}
	if !haveLayer {
		if err := os.Rename(filepath.Join(stage, "layer"), s.layerPath(diffID)); err != nil {
			return fail(err)
		}
		made = append(made, s.layerPath(diffID))
	}
	if keepBlob {
		if err := os.Rename(filepath.Join(stage, "blob"), s.blobPath(gotBlob)); err != nil {
			return fail(err)
		}
		made = append(made, s.blobPath(gotBlob))
	}
	status := "unpacked"
	if haveLayer {
		status = "already present"
	}
	prog.Done(status, nil)
	return lr, made, nil
}

// errStopped stops the reading goroutine of unpackPipelined.
var errStopped = errors.New("unpack stopped")

// unpackPipelined unpacks the tar read from r into dir, as Unpack does, with
// the reading of r (decompression and hashing) in a goroutine of its own that
// keeps a chunk ahead: the two halves of an import, each about one core's
// worth, overlap. On success, r has been read to its end.
func unpackPipelined(dir string, r io.Reader, opts UnpackOptions) error {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := io.CopyBuffer(pw, r, make([]byte, 1<<20))
		_ = pw.CloseWithError(err) // nil: the reader sees io.EOF; always returns nil
	}()
	err := Unpack(dir, pr, opts)
	if err == nil {
		// What follows the tar's end counts in the digests too.
		_, err = io.Copy(io.Discard, pr)
	}
	_ = pr.CloseWithError(errStopped) // a writer still at it stops; always returns nil
	<-done
	return err
}

// syncfs flushes the file system that holds dir.
func syncfs(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer func() { _ = unix.Close(fd) }() // a read-only descriptor, for syncfs
	if err := unix.Syncfs(fd); err != nil {
		return &os.PathError{Op: "syncfs", Path: dir, Err: err}
	}
	return nil
}

func (s *Store) readLayerMeta(diffID v1.Hash) (layerMeta, error) {
	var m layerMeta
	b, err := os.ReadFile(filepath.Join(s.layerPath(diffID), "layer.json"))
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err != nil {
		return m, fmt.Errorf("read layer %s: %w", diffID, err)
	}
	return m, nil
}

func hashOf(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}
}

type nopProgress struct{}

func (nopProgress) Write(p []byte) (int, error) { return len(p), nil }
func (nopProgress) Done(string, error)          {}

// decompress opens the layer stream r, gzip, zstd or plain tar, judged by its
// first bytes (docker archives name no media type). It returns the media type
// that fits what it found.
func decompress(r *bufio.Reader, declared types.MediaType) (io.ReadCloser, types.MediaType, error) {
	magic, err := r.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, "", fmt.Errorf("%w: %w", ErrBadImage, err)
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, "", fmt.Errorf("%w: gzip: %w", ErrBadImage, err)
		}
		return zr, types.OCILayer, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(r)
		if err != nil {
			return nil, "", fmt.Errorf("%w: zstd: %w", ErrBadImage, err)
		}
		return zr.IOReadCloser(), types.OCILayerZStd, nil
	}
	if declared == types.OCILayer || declared == types.DockerLayer || declared == types.OCILayerZStd {
		return nil, "", fmt.Errorf("%w: %s says compressed, the blob is not", ErrBadImage, declared)
	}
	return io.NopCloser(r), types.OCIUncompressedLayer, nil
}
