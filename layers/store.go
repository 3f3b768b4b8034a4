package layers

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/strata-fs/strata/internal/flock"
)

// The image store keeps images as the layer directories that a union stacks.
// Its layout under the root (README.md, "The image store", says the same):
//
//	blobs/sha256/HEX         every blob an image of the store names: manifests,
//	                         configs, and layer blobs as they were imported
//	                         (compressed or not), so that a saved image is the
//	                         imported one, digest for digest
//	layers/sha256/HEX/       one per layer, named by its diff_id (the sha256 of
//	                         the uncompressed tar); unpacked once, shared by
//	                         every image that has the layer
//	  diff/                  the layer's tree: the directory a mount stacks
//	  layer.json             its diff_id and unpacked size
//	images/sha256/HEX.json   one per image, named by its image id (the sha256
//	                         of its config): manifest digest, layers
//	repositories.json        tags: {"NAME:TAG": "sha256:..."}
//	locks/HEX.lock           flock'd while layer HEX is looked at, unpacked or
//	                         removed
//	locks/HEX.use            flock'd shared while a mount uses layer HEX
//	store.lock               flock'd while images/ and repositories.json change
//	tmp/                     staging: half-unpacked layers, half-written blobs
//	tmp.lock                 flock'd shared by every operation that stages in
//	                         tmp/; whoever gets it exclusively empties tmp/ of
//	                         what crashed operations left
//
// Everything reaches its final name by rename(2) from tmp/, once complete and
// verified: a reader never sees half a layer, and a crash leaves debris in tmp/
// only.
//
// Locking: an import (or commit) takes the exclusive locks of all its layers,
// in the order of their names (no two imports can wait on each other), and
// keeps them until its image record is written; a second import of a shared
// layer waits, then finds it unpacked. Removal takes the locks of the layers
// it means to remove, then store.lock, then checks again that no image uses
// them. The order is always layer locks, then store.lock.
type Store struct {
	root string
}

// Sentinel errors of the store.
var (
	// ErrImageNotFound: no image by that name, tag or id.
	ErrImageNotFound = errors.New("no such image")
	// ErrBadImage: an archive or layout that cannot be imported as it is:
	// corrupt, truncated, a missing blob, an unknown media type, another
	// platform.
	ErrBadImage = errors.New("bad image")
	// ErrDigest: content that does not match the digest it is given.
	ErrDigest = errors.New("digest mismatch")
	// ErrInUse: an image whose layers a mount uses (see Use).
	ErrInUse = errors.New("image in use")
)

// OpenStore opens the store at root, creating its directories.
func OpenStore(root string) (*Store, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open store: %s: %w", root, err)
	}
	s := &Store{root: abs}
	for _, d := range []string{"blobs/sha256", "layers/sha256", "images/sha256", "locks", "tmp"} {
		if err := os.MkdirAll(s.path(d), 0o700); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	return s, nil
}

// Root is the store's directory.
func (s *Store) Root() string { return s.root }

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.root}, elem...)...)
}

func (s *Store) blobPath(h v1.Hash) string   { return s.path("blobs", h.Algorithm, h.Hex) }
func (s *Store) layerPath(h v1.Hash) string  { return s.path("layers", h.Algorithm, h.Hex) }
func (s *Store) recordPath(h v1.Hash) string { return s.path("images", h.Algorithm, h.Hex+".json") }
func (s *Store) lockPath(h v1.Hash) string   { return s.path("locks", h.Hex+".lock") }
func (s *Store) usePath(h v1.Hash) string    { return s.path("locks", h.Hex+".use") }

// LayerDir is the directory of the unpacked layer diffID, as a mount stacks it.
func (s *Store) LayerDir(diffID v1.Hash) string { return filepath.Join(s.layerPath(diffID), "diff") }

// shortID is how many hex digits of a digest name it for people, as docker
// shows ids.
const shortID = 12

// LayerName names the layer directory dir (as LayerDir gives it) by its short
// diff_id, the first 12 hex digits; "" for a directory that is not one of the
// store's layers.
func (s *Store) LayerName(dir string) string {
	rel, err := filepath.Rel(s.path("layers"), dir)
	if err != nil {
		return ""
	}
	parts := strings.Split(filepath.ToSlash(rel), "/")
	if len(parts) != 3 || parts[2] != "diff" {
		return ""
	}
	h, err := v1.NewHash(parts[0] + ":" + parts[1])
	if err != nil || len(h.Hex) < shortID {
		return ""
	}
	return h.Hex[:shortID]
}

// Record is what the store keeps of one image.
type Record struct {
	// ID is the image id: the digest of its config.
	ID v1.Hash `json:"id"`
	// Manifest is the digest of its manifest, in blobs/.
	Manifest          v1.Hash         `json:"manifest"`
	ManifestMediaType types.MediaType `json:"manifestMediaType"`
	// Layers, bottom first.
	Layers   []LayerRecord `json:"layers"`
	Imported time.Time     `json:"imported"`
}

// LayerRecord is one layer of an image.
type LayerRecord struct {
	DiffID v1.Hash `json:"diffID"`
	// Digest, MediaType and Size describe the layer's blob.
	Digest    v1.Hash         `json:"digest"`
	MediaType types.MediaType `json:"mediaType"`
	Size      int64           `json:"size"`
	// Unpacked is the size of the uncompressed tar.
	Unpacked int64 `json:"unpacked"`
}

// layerMeta is layers/sha256/HEX/layer.json.
type layerMeta struct {
	DiffID   v1.Hash `json:"diffID"`
	Unpacked int64   `json:"unpacked"`
}

// Image is one image of the store, as `image ls` shows it.
type Image struct {
	Record
	Tags    []string
	Created time.Time
	// Size is the sum of the unpacked sizes of its layers.
	Size int64
}

// writeFileAtomic writes data to path through a file in tmp/ and a rename.
func (s *Store) writeFileAtomic(path string, data []byte) (err error) {
	f, err := os.CreateTemp(s.path("tmp"), "file-")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(f.Name()) // staging debris; the error says what failed
		}
	}()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func (s *Store) readTags() (map[string]v1.Hash, error) {
	tags := map[string]v1.Hash{}
	b, err := os.ReadFile(s.path("repositories.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return tags, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read tags: %w", err)
	}
	if err := json.Unmarshal(b, &tags); err != nil {
		return nil, fmt.Errorf("read tags: %s: %w", s.path("repositories.json"), err)
	}
	return tags, nil
}

func (s *Store) writeTags(tags map[string]v1.Hash) error {
	b, err := json.MarshalIndent(tags, "", "  ")
	if err != nil {
		return fmt.Errorf("write tags: %w", err)
	}
	return s.writeFileAtomic(s.path("repositories.json"), append(b, '\n'))
}

func (s *Store) readRecord(id v1.Hash) (*Record, error) {
	b, err := os.ReadFile(s.recordPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("image %s: %w", id, ErrImageNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read image: %w", err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("read image: %s: %w", s.recordPath(id), err)
	}
	return &r, nil
}

func (s *Store) records() ([]*Record, error) {
	ents, err := os.ReadDir(s.path("images", "sha256"))
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var recs []*Record
	for _, e := range ents {
		hex, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		r, err := s.readRecord(v1.Hash{Algorithm: "sha256", Hex: hex})
		if err != nil {
			return nil, err
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// NormalizeTag spells a reference NAME[:TAG] as NAME:TAG, "latest" by default.
// A ":" before the last "/" belongs to a registry's port, not to a tag.
func NormalizeTag(ref string) string {
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		return ref
	}
	return ref + ":latest"
}

// Resolve finds the image a reference names: NAME[:TAG], a full image id
// "sha256:HEX", or a unique prefix of the HEX of one (at least 4 characters).
func (s *Store) Resolve(ref string) (v1.Hash, error) {
	tags, err := s.readTags()
	if err != nil {
		return v1.Hash{}, err
	}
	if id, ok := tags[NormalizeTag(ref)]; ok {
		return id, nil
	}
	hex := strings.TrimPrefix(ref, "sha256:")
	if len(hex) >= 4 && strings.Trim(hex, "0123456789abcdef") == "" {
		recs, err := s.records()
		if err != nil {
			return v1.Hash{}, err
		}
		var found []v1.Hash
		for _, r := range recs {
			if strings.HasPrefix(r.ID.Hex, hex) {
				found = append(found, r.ID)
			}
		}
		switch len(found) {
		case 1:
			return found[0], nil
		case 0:
		default:
			return v1.Hash{}, fmt.Errorf("image %s: %w: the prefix names %d images", ref, ErrImageNotFound, len(found))
		}
	}
	return v1.Hash{}, fmt.Errorf("image %s: %w", ref, ErrImageNotFound)
}

// Images lists the images of the store, newest first.
func (s *Store) Images() ([]Image, error) {
	recs, err := s.records()
	if err != nil {
		return nil, err
	}
	tags, err := s.readTags()
	if err != nil {
		return nil, err
	}
	byID := map[v1.Hash][]string{}
	for t, id := range tags {
		byID[id] = append(byID[id], t)
	}
	var imgs []Image
	for _, r := range recs {
		img := Image{Record: *r, Tags: byID[r.ID]}
		slices.Sort(img.Tags)
		for _, l := range r.Layers {
			img.Size += l.Unpacked
		}
		if cfg, err := s.Config(r.ID); err == nil {
			img.Created = cfg.Created.Time
		} else {
			return nil, err
		}
		imgs = append(imgs, img)
	}
	slices.SortFunc(imgs, func(a, b Image) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID.Hex, b.ID.Hex)
	})
	return imgs, nil
}

// Image returns one image by reference (see Resolve).
func (s *Store) Image(ref string) (Image, error) {
	id, err := s.Resolve(ref)
	if err != nil {
		return Image{}, err
	}
	imgs, err := s.Images()
	if err != nil {
		return Image{}, err
	}
	for _, img := range imgs {
		if img.ID == id {
			return img, nil
		}
	}
	return Image{}, fmt.Errorf("image %s: %w", ref, ErrImageNotFound)
}

// RawConfig returns the config blob of image id.
func (s *Store) RawConfig(id v1.Hash) ([]byte, error) {
	b, err := os.ReadFile(s.blobPath(id))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return b, nil
}

// Config returns the parsed config of image id.
func (s *Store) Config(id v1.Hash) (*v1.ConfigFile, error) {
	b, err := s.RawConfig(id)
	if err != nil {
		return nil, err
	}
	cfg, err := v1.ParseConfigFile(strings.NewReader(string(b)))
	if err != nil {
		return nil, fmt.Errorf("read config: %s: %w", id, err)
	}
	return cfg, nil
}

// Stack returns the read-only stack of the image ref: its layer directories,
// top first.
func (s *Store) Stack(ref string) (Stack, error) {
	id, err := s.Resolve(ref)
	if err != nil {
		return Stack{}, err
	}
	r, err := s.readRecord(id)
	if err != nil {
		return Stack{}, err
	}
	var st Stack
	for i := len(r.Layers) - 1; i >= 0; i-- {
		st.Lowers = append(st.Lowers, s.LayerDir(r.Layers[i].DiffID))
	}
	if len(st.Lowers) == 0 {
		return Stack{}, fmt.Errorf("image %s: %w: no layers to mount", ref, ErrBadImage)
	}
	return st, nil
}

// useTmp marks tmp/ in use until release is called. First, if no other
// operation uses it, it empties it: what is there was left by a crash.
func (s *Store) useTmp() (release func() error, err error) {
	lockPath := s.path("tmp.lock")
	if l, err := flock.TryExclusive(lockPath); err == nil {
		ents, rerr := os.ReadDir(s.path("tmp"))
		for _, e := range ents {
			rerr = errors.Join(rerr, os.RemoveAll(s.path("tmp", e.Name())))
		}
		if err := errors.Join(rerr, l.Unlock()); err != nil {
			return nil, fmt.Errorf("clean %s: %w", s.path("tmp"), err)
		}
	} else if !errors.Is(err, flock.ErrBusy) {
		return nil, err
	}
	// Between the unlock above and this lock, another operation may clean
	// tmp/: ours holds nothing there yet.
	l, err := flock.Shared(lockPath)
	if err != nil {
		return nil, err
	}
	return l.Unlock, nil
}

// Use returns the read-only stack of the image ref, like Stack, and marks its
// layers in use until release is called: Remove refuses to remove them
// meanwhile (ErrInUse). A mount holds it for its life; the kernel releases
// it when the process dies.
func (s *Store) Use(ref string) (st Stack, release func() error, err error) {
	id, err := s.Resolve(ref)
	if err != nil {
		return Stack{}, nil, err
	}
	rec, err := s.readRecord(id)
	if err != nil {
		return Stack{}, nil, err
	}
	var held []*flock.Lock
	release = func() error {
		var errs []error
		for _, l := range held {
			errs = append(errs, l.Unlock())
		}
		return errors.Join(errs...)
	}
	for _, l := range rec.Layers {
		u, err := flock.Shared(s.usePath(l.DiffID))
		if err != nil {
			return Stack{}, nil, errors.Join(err, release())
		}
		held = append(held, u)
	}
	// A removal may have run between the look-up and the locks.
	for i := len(rec.Layers) - 1; i >= 0; i-- {
		d := s.LayerDir(rec.Layers[i].DiffID)
		if !exists(d) {
			return Stack{}, nil, errors.Join(fmt.Errorf("image %s: %w: removed meanwhile", ref, ErrImageNotFound), release())
		}
		st.Lowers = append(st.Lowers, d)
	}
	if len(st.Lowers) == 0 {
		return Stack{}, nil, errors.Join(fmt.Errorf("image %s: %w: no layers to mount", ref, ErrBadImage), release())
	}
	return st, release, nil
}

// lockLayers takes the exclusive locks of the layers, in order of their
// digests, and returns a function that releases them all.
func (s *Store) lockLayers(ids []v1.Hash) (func() error, error) {
	sorted := slices.Clone(ids)
	slices.SortFunc(sorted, func(a, b v1.Hash) int { return strings.Compare(a.String(), b.String()) })
	sorted = slices.Compact(sorted)
	var held []*flock.Lock
	unlock := func() error {
		var errs []error
		for _, l := range slices.Backward(held) {
			errs = append(errs, l.Unlock())
		}
		return errors.Join(errs...)
	}
	for _, id := range sorted {
		l, err := flock.Exclusive(s.lockPath(id))
		if err != nil {
			return nil, errors.Join(err, unlock())
		}
		held = append(held, l)
	}
	return unlock, nil
}

// Remove untags ref; once no tag names the image (or when ref is an id), it
// removes the image, and the layers and blobs no other image uses. It returns
// the removed image id when the image went, zero when only the tag did.
func (s *Store) Remove(ref string) (removed v1.Hash, err error) {
	id, err := s.Resolve(ref)
	if err != nil {
		return v1.Hash{}, err
	}
	release, err := s.useTmp()
	if err != nil {
		return v1.Hash{}, err
	}
	defer func() { err = errors.Join(err, release()) }()
	meta, err := flock.Exclusive(s.path("store.lock"))
	if err != nil {
		return v1.Hash{}, err
	}
	tags, err := s.readTags()
	if err != nil {
		return v1.Hash{}, errors.Join(err, meta.Unlock())
	}
	byTag := tags[NormalizeTag(ref)] == id
	if byTag {
		delete(tags, NormalizeTag(ref))
	} else {
		for t, tid := range tags {
			if tid == id {
				delete(tags, t)
			}
		}
	}
	still := false
	for _, tid := range tags {
		still = still || tid == id
	}
	rec, err := s.readRecord(id)
	var inUse []*flock.Lock
	defer func() {
		for _, l := range inUse {
			err = errors.Join(err, l.Unlock())
		}
	}()
	if err == nil && !still {
		// The layers that would go must not be mounted: hold their use
		// locks until they are gone, and refuse if a mount has one.
		inUse, err = s.claimUnused(rec)
	}
	if err == nil {
		err = s.writeTags(tags)
	}
	if err == nil && !still {
		err = os.Remove(s.recordPath(id))
	}
	if uerr := meta.Unlock(); err == nil {
		err = uerr
	}
	if err != nil || still {
		return v1.Hash{}, err
	}
	return id, s.collect(rec)
}

// claimUnused takes the use locks of the layers of rec that no other image
// has, without waiting: ErrInUse when a mount holds one. The caller holds
// store.lock.
func (s *Store) claimUnused(rec *Record) ([]*flock.Lock, error) {
	recs, err := s.records()
	if err != nil {
		return nil, err
	}
	used := map[v1.Hash]bool{}
	for _, r := range recs {
		if r.ID == rec.ID {
			continue
		}
		for _, l := range r.Layers {
			used[l.DiffID] = true
		}
	}
	var held []*flock.Lock
	for _, l := range rec.Layers {
		if used[l.DiffID] {
			continue
		}
		u, err := flock.TryExclusive(s.usePath(l.DiffID))
		if err != nil {
			for _, h := range held {
				err = errors.Join(err, h.Unlock())
			}
			if errors.Is(err, flock.ErrBusy) {
				return nil, fmt.Errorf("image %s: %w: layer %s is mounted (strata umount first)", rec.ID, ErrInUse, l.DiffID)
			}
			return nil, err
		}
		held = append(held, u)
	}
	return held, nil
}

// collect removes the layers and blobs of the removed image rec that no image
// uses any more.
func (s *Store) collect(rec *Record) error {
	var cand []v1.Hash
	for _, l := range rec.Layers {
		cand = append(cand, l.DiffID)
	}
	unlock, err := s.lockLayers(cand)
	if err != nil {
		return err
	}
	defer func() { _ = unlock() }() // released on every path; a failed unlock leaves nothing held (the fds close)
	meta, err := flock.Exclusive(s.path("store.lock"))
	if err != nil {
		return err
	}
	defer func() { _ = meta.Unlock() }() // as above
	recs, err := s.records()
	if err != nil {
		return err
	}
	usedLayers, usedBlobs := map[v1.Hash]bool{}, map[v1.Hash]bool{}
	for _, r := range recs {
		usedBlobs[r.ID], usedBlobs[r.Manifest] = true, true
		for _, l := range r.Layers {
			usedLayers[l.DiffID], usedBlobs[l.Digest] = true, true
		}
	}
	var errs []error
	for _, l := range rec.Layers {
		if !usedLayers[l.DiffID] {
			errs = append(errs, s.removeTree(s.layerPath(l.DiffID)))
		}
		if !usedBlobs[l.Digest] {
			errs = append(errs, removeIfExists(s.blobPath(l.Digest)))
		}
	}
	for _, b := range []v1.Hash{rec.ID, rec.Manifest} {
		if !usedBlobs[b] {
			errs = append(errs, removeIfExists(s.blobPath(b)))
		}
	}
	return errors.Join(errs...)
}

// removeTree moves dir into tmp/ first, so that a half-removed layer never
// sits at its final name, then removes it.
func (s *Store) removeTree(dir string) error {
	trash, err := os.MkdirTemp(s.path("tmp"), "rm-")
	if err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	if err := os.Rename(dir, filepath.Join(trash, "x")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return errors.Join(fmt.Errorf("remove: %w", err), os.RemoveAll(trash))
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("remove: %w", err)
	}
	return nil
}

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove: %w", err)
	}
	return nil
}
