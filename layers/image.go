package layers

import (
	"bytes"
	"fmt"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// storedImage is an image of the store as go-containerregistry sees it: the
// blobs as they were imported, so that it has the same digests. It implements
// the minimum (partial.CompressedImageCore) and partial derives the rest.
type storedImage struct {
	s        *Store
	rec      *Record
	manifest []byte
	config   []byte
}

var _ partial.CompressedImageCore = (*storedImage)(nil)

// V1Image returns the image ref of the store as a go-containerregistry image,
// which reads its blobs from the store.
func (s *Store) V1Image(ref string) (v1.Image, error) {
	id, err := s.Resolve(ref)
	if err != nil {
		return nil, err
	}
	rec, err := s.readRecord(id)
	if err != nil {
		return nil, err
	}
	si := &storedImage{s: s, rec: rec}
	if si.manifest, err = os.ReadFile(s.blobPath(rec.Manifest)); err != nil {
		return nil, fmt.Errorf("image %s: manifest: %w", ref, err)
	}
	if si.config, err = s.RawConfig(id); err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	return partial.CompressedToImage(si)
}

func (si *storedImage) RawConfigFile() ([]byte, error)      { return si.config, nil }
func (si *storedImage) MediaType() (types.MediaType, error) { return si.rec.ManifestMediaType, nil }
func (si *storedImage) RawManifest() ([]byte, error)        { return si.manifest, nil }

func (si *storedImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, l := range si.rec.Layers {
		if l.Digest == h {
			return &storedBlob{path: si.s.blobPath(h), rec: l}, nil
		}
	}
	// The config is a "layer" to partial, too.
	if h == si.rec.ID {
		return &storedBlob{path: si.s.blobPath(h), rec: LayerRecord{Digest: h, Size: int64(len(si.config))}, data: si.config}, nil
	}
	return nil, fmt.Errorf("image %s: blob %s: %w", si.rec.ID, h, ErrImageNotFound)
}

// storedBlob is one layer blob of the store.
type storedBlob struct {
	path string
	rec  LayerRecord
	data []byte // small blobs kept in memory
}

func (b *storedBlob) Digest() (v1.Hash, error)            { return b.rec.Digest, nil }
func (b *storedBlob) Size() (int64, error)                { return b.rec.Size, nil }
func (b *storedBlob) MediaType() (types.MediaType, error) { return b.rec.MediaType, nil }
func (b *storedBlob) DiffID() (v1.Hash, error)            { return b.rec.DiffID, nil }
func (b *storedBlob) Compressed() (io.ReadCloser, error) {
	if b.data != nil {
		return io.NopCloser(bytes.NewReader(b.data)), nil
	}
	return os.Open(b.path)
}

// sourceFromImage turns a go-containerregistry image into what ingest takes.
// file names it in errors.
func sourceFromImage(file string, img v1.Image) (*source, error) {
	in := &source{file: file, close: func() error { return nil }}
	var err error
	if in.config, err = img.RawConfigFile(); err != nil {
		return nil, fmt.Errorf("%s: config: %w", file, err)
	}
	if in.cfg, err = img.ConfigFile(); err != nil {
		return nil, fmt.Errorf("%s: config: %w", file, err)
	}
	if in.manifest, err = img.RawManifest(); err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", file, err)
	}
	if in.mediaTyp, err = img.MediaType(); err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", file, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("%s: manifest: %w", file, err)
	}
	for i, d := range m.Layers {
		l, err := img.LayerByDigest(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("%s: layer %d: %w", file, i+1, err)
		}
		in.layers = append(in.layers, layerSource{
			desc: d,
			what: fmt.Sprintf("layer %d/%d (%s)", i+1, len(m.Layers), d.Digest),
			open: l.Compressed,
		})
	}
	return in, nil
}
