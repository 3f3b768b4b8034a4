package layers

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// saveName is the name an image is saved under: ref when it is a tag of the
// image, else the image's first tag; ok is false for an untagged image.
func (s *Store) saveName(ref string) (tag string, ok bool, err error) {
	img, err := s.Image(ref)
	if err != nil {
		return "", false, err
	}
	for _, t := range img.Tags {
		if t == NormalizeTag(ref) {
			return t, true, nil
		}
	}
	if len(img.Tags) > 0 {
		return img.Tags[0], true, nil
	}
	return "", false, nil
}

// SaveArchive writes the image ref to w as a docker-archive (`docker load`
// reads it), tagged with its name. The blobs are the stored ones, so that the
// archive imports back to the same image id.
func (s *Store) SaveArchive(ref string, w io.Writer) error {
	img, err := s.V1Image(ref)
	if err != nil {
		return err
	}
	t, ok, err := s.saveName(ref)
	if err != nil {
		return err
	}
	var r name.Reference
	if ok {
		r, err = name.NewTag(t)
	} else {
		var id fmt.Stringer
		if id, err = img.ConfigName(); err == nil {
			r, err = name.NewDigest("strata/untagged@" + id.String())
		}
	}
	if err != nil {
		return fmt.Errorf("save %s: %w", ref, err)
	}
	if err := tarball.Write(r, img, w); err != nil {
		return fmt.Errorf("save %s: %w", ref, err)
	}
	return nil
}

// SaveLayout adds the image ref to the OCI image layout dir, creating it if
// need be, with its tag as org.opencontainers.image.ref.name ("1.0" for
// busybox:1.0: `umoci stat --image DIR:1.0` finds it).
func (s *Store) SaveLayout(ref, dir string) error {
	img, err := s.V1Image(ref)
	if err != nil {
		return err
	}
	t, ok, err := s.saveName(ref)
	if err != nil {
		return err
	}
	p, err := layout.FromPath(dir)
	if errors.Is(err, fs.ErrNotExist) {
		p, err = layout.Write(dir, empty.Index)
	}
	if err != nil {
		return fmt.Errorf("save %s: %s: %w", ref, dir, err)
	}
	var opts []layout.Option
	if ok {
		tag := t[strings.LastIndexByte(t, ':')+1:]
		opts = append(opts, layout.WithAnnotations(map[string]string{refNameAnnotation: tag}))
	}
	if err := p.AppendImage(img, opts...); err != nil {
		return fmt.Errorf("save %s: %s: %w", ref, dir, err)
	}
	return nil
}

// SaveArchiveFile writes the docker-archive of ref to the file out, through a
// temporary file beside it and a rename: out is whole or untouched.
func (s *Store) SaveArchiveFile(ref, out string) (err error) {
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-")
	if err != nil {
		return fmt.Errorf("save %s: %w", ref, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()           // the save failed already; the file goes next
			_ = os.Remove(f.Name()) // the staging file of a failed save
		}
	}()
	if err := s.SaveArchive(ref, f); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("save %s: %w", ref, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save %s: %w", ref, err)
	}
	if err := os.Rename(f.Name(), out); err != nil {
		return fmt.Errorf("save %s: %w", ref, err)
	}
	return nil
}
