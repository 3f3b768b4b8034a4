package layers

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// layerOf makes a gzip layer (zstd when zst) of the entries.
func layerOf(t testing.TB, zst bool, entries ...tarEntry) v1.Layer {
	t.Helper()
	b := mkTar(t, entries...)
	opts := []tarball.LayerOption{}
	if zst {
		opts = append(opts, tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd))
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testImage stacks layers into an OCI image for this host's platform.
func testImage(t testing.TB, layers ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Cmd = []string{"/bin/sh"}
	cf.Config.Env = []string{"PATH=/bin"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// writeLayout writes img as the only image of a new OCI layout, tagged tag.
func writeLayout(t testing.TB, img v1.Image, tag string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "oci")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{refNameAnnotation: tag})); err != nil {
		t.Fatal(err)
	}
	return dir
}

// writeArchive writes img as a docker archive tagged ref.
func writeArchive(t testing.TB, img v1.Image, ref string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "image.tar")
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(file, tag, img); err != nil {
		t.Fatal(err)
	}
	return file
}

func baseLayer(t testing.TB) v1.Layer {
	return layerOf(t, false,
		dirEntry("etc/"), reg("etc/hosts", "127.0.0.1 base\n"), reg("etc/gone", "bye"),
		dirEntry("cache/"), reg("cache/old", "old"),
	)
}

func newStore(t testing.TB) *Store {
	t.Helper()
	s, err := OpenStore(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// snapshot lists every path of the store but its lock files, with sizes.
func snapshot(t testing.TB, s *Store) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(s.Root(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(s.Root(), p)
		if rel == "locks" || rel == "store.lock" || rel == "tmp.lock" {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestImportLayoutAndArchive(t *testing.T) {
	s := newStore(t)
	app := layerOf(t, true,
		dirEntry("etc/"), reg("etc/.wh.gone", ""), reg("etc/hosts", "127.0.0.1 app\n"),
		dirEntry("cache/"), reg("cache/.wh..wh..opq", ""), reg("cache/new", "new"),
		reg("bin/tool", "#!/bin/sh\n"), hardlink("bin/tool2", "bin/tool"), symlink("bin/sh", "tool"),
	)
	img := testImage(t, baseLayer(t), app)
	wantID, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	dir := writeLayout(t, img, "1.0")
	id, err := s.Import(ctx, dir+":1.0", ImportOptions{Unpack: UnpackOptions{Privileged: os.Geteuid() == 0}})
	if err != nil {
		t.Fatal(err)
	}
	if id != wantID {
		t.Errorf("image id %s, want %s", id, wantID)
	}
	// The same image from a docker archive: same id, nothing unpacked again.
	before := len(snapshot(t, s))
	id2, err := s.Import(ctx, writeArchive(t, img, "example.com/app:2"), ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if id2 != wantID {
		t.Errorf("archive image id %s, want %s", id2, wantID)
	}
	// The archive's layers are gzip'd by go-containerregistry where the
	// layout's app layer was zstd: one more blob, no more layer dirs.
	if n := countDirs(t, s.path("layers", "sha256")); n != 2 {
		t.Errorf("%d layer dirs, want 2", n)
	}
	if after := len(snapshot(t, s)); after > before+1 {
		t.Logf("store grew by %d paths", after-before)
	}
	imgs, err := s.Images()
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || !slices.Equal(imgs[0].Tags, []string{"example.com/app:2", "oci:1.0"}) {
		t.Fatalf("images: %+v", imgs)
	}
	st, err := s.Stack("oci:1.0")
	if err != nil {
		t.Fatal(err)
	}
	top := st.Lowers[0]
	for p, want := range map[string]string{
		"etc/hosts": "127.0.0.1 app\n", "etc/.wh.gone": "", "cache/.wh..wh..opq": "", "cache/new": "new",
	} {
		if b, err := os.ReadFile(filepath.Join(top, p)); err != nil || string(b) != want {
			t.Errorf("%s: %q, %v; want %q", p, b, err, want)
		}
	}
	a, errA := os.Stat(filepath.Join(top, "bin/tool"))
	b, errB := os.Stat(filepath.Join(top, "bin/tool2"))
	if errA != nil || errB != nil || !os.SameFile(a, b) {
		t.Errorf("bin/tool2 is not a hard link of bin/tool (%v, %v)", errA, errB)
	}
}

func countDirs(t testing.TB, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestLayerSharingAndRemove(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	base := baseLayer(t)
	img1 := testImage(t, base, layerOf(t, false, reg("one", "1")))
	img2 := testImage(t, base, layerOf(t, false, reg("two", "2")))
	if _, err := s.Import(ctx, writeLayout(t, img1, "one"), ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(ctx, writeLayout(t, img2, "two"), ImportOptions{Tags: []string{"two:latest"}}); err != nil {
		t.Fatal(err)
	}
	if n := countDirs(t, s.path("layers", "sha256")); n != 3 {
		t.Errorf("%d layer dirs, want 3: the base once, and one each", n)
	}
	st1, _ := s.Stack("oci:one")
	st2, _ := s.Stack("two")
	if st1.Lowers[1] != st2.Lowers[1] {
		t.Errorf("base layers differ: %s, %s", st1.Lowers[1], st2.Lowers[1])
	}
	if _, err := s.Remove("oci:one"); err != nil {
		t.Fatal(err)
	}
	if n := countDirs(t, s.path("layers", "sha256")); n != 2 {
		t.Errorf("after rm: %d layer dirs, want 2", n)
	}
	if _, err := os.Stat(st2.Lowers[1]); err != nil {
		t.Errorf("the shared base went with the first image: %v", err)
	}
	if _, err := s.Remove("two"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"layers/sha256", "blobs/sha256", "images/sha256", "tmp"} {
		if n := countDirs(t, s.path(d)); n != 0 {
			t.Errorf("after removing everything, %s holds %d entries", d, n)
		}
	}
	if _, err := s.Resolve("two"); !errors.Is(err, ErrImageNotFound) {
		t.Errorf("resolve of a removed image: %v", err)
	}
}

func TestImportCleansCrashDebris(t *testing.T) {
	s := newStore(t)
	// What a crashed import leaves: a half-unpacked layer.
	if err := os.MkdirAll(s.path("tmp", "layer-123", "layer", "diff", "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(context.Background(), writeLayout(t, testImage(t, baseLayer(t)), "x"), ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := countDirs(t, s.path("tmp")); n != 0 {
		t.Errorf("tmp holds %d entries after an import", n)
	}
}

func TestConcurrentImport(t *testing.T) {
	s := newStore(t)
	base := baseLayer(t)
	var srcs []string
	for i := range 4 {
		img := testImage(t, base, layerOf(t, false, reg("n", strings.Repeat("x", i+1))))
		srcs = append(srcs, writeLayout(t, img, "t"))
	}
	var wg sync.WaitGroup
	errs := make([]error, len(srcs))
	for i, src := range srcs {
		wg.Go(func() {
			_, errs[i] = s.Import(context.Background(), src, ImportOptions{Tags: []string{"img" + string(rune('a'+i))}})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("import %d: %v", i, err)
		}
	}
	if n := countDirs(t, s.path("layers", "sha256")); n != 5 {
		t.Errorf("%d layer dirs, want 5", n)
	}
	if n := countDirs(t, s.path("tmp")); n != 0 {
		t.Errorf("tmp holds %d entries", n)
	}
}

// rewriteManifest edits the manifest of the only image of layout dir and
// points index.json at the result.
func rewriteManifest(t testing.TB, dir string, edit func(*v1.Manifest)) {
	t.Helper()
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := p.Bytes(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	edit(m)
	raw, err = json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256Of(raw)
	if err := p.WriteBlob(h, io.NopCloser(bytes.NewReader(raw))); err != nil {
		t.Fatal(err)
	}
	im.Manifests[0].Digest, im.Manifests[0].Size = h, int64(len(raw))
	b, err := json.Marshal(im)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestImportBadInput(t *testing.T) {
	ctx := context.Background()
	top := layerOf(t, false, reg("top", "t"))
	topDigest, _ := top.Digest()
	layerBlob := func(dir string) string { return filepath.Join(dir, "blobs", "sha256", topDigest.Hex) }
	for _, tc := range []struct {
		name  string
		src   func(t *testing.T) string
		want  error
		words []string // the message must hold each
	}{
		{"digest mismatch", func(t *testing.T) string {
			dir := writeLayout(t, testImage(t, baseLayer(t), top), "1")
			var gz bytes.Buffer
			zw := gzip.NewWriter(&gz)
			_, _ = zw.Write(mkTar(t, reg("top", "evil")))
			_ = zw.Close()
			if err := os.WriteFile(layerBlob(dir), gz.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			return dir
		}, ErrDigest, []string{"oci", "layer 2/2", topDigest.Hex}},
		{"missing blob", func(t *testing.T) string {
			dir := writeLayout(t, testImage(t, baseLayer(t), top), "1")
			if err := os.Remove(layerBlob(dir)); err != nil {
				t.Fatal(err)
			}
			return dir
		}, ErrBadImage, []string{"oci", "layer 2/2", "missing blob"}},
		{"corrupt gzip", func(t *testing.T) string {
			dir := writeLayout(t, testImage(t, baseLayer(t), top), "1")
			b, err := os.ReadFile(layerBlob(dir))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(layerBlob(dir), b[:len(b)/2], 0o644); err != nil {
				t.Fatal(err)
			}
			return dir
		}, nil, []string{"oci", "layer 2/2", "EOF"}},
		{"unknown media type", func(t *testing.T) string {
			dir := writeLayout(t, testImage(t, baseLayer(t), top), "1")
			rewriteManifest(t, dir, func(m *v1.Manifest) { m.Layers[1].MediaType = "application/x-strata-nonsense" })
			return dir
		}, ErrBadImage, []string{"oci", "layer 2/2", "unknown media type", "x-strata-nonsense"}},
		{"wrong diff_id", func(t *testing.T) string {
			img := testImage(t, baseLayer(t), top)
			cf, _ := img.ConfigFile()
			cf = cf.DeepCopy()
			cf.RootFS.DiffIDs[1] = sha256Of([]byte("something else"))
			img, err := mutate.ConfigFile(img, cf)
			if err != nil {
				t.Fatal(err)
			}
			return writeLayout(t, img, "1")
		}, ErrDigest, []string{"oci", "layer 2/2", "diff_id"}},
		{"wrong platform", func(t *testing.T) string {
			img := testImage(t, baseLayer(t), top)
			cf, _ := img.ConfigFile()
			cf = cf.DeepCopy()
			cf.Architecture = "s390x"
			if runtime.GOARCH == "s390x" {
				cf.Architecture = "arm64"
			}
			img, err := mutate.ConfigFile(img, cf)
			if err != nil {
				t.Fatal(err)
			}
			return writeLayout(t, img, "1")
		}, ErrBadImage, []string{"oci", "platform"}},
		{"truncated archive", func(t *testing.T) string {
			file := writeArchive(t, testImage(t, baseLayer(t), top), "x:1")
			fi, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(file, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
			return file
		}, ErrBadImage, []string{"image.tar"}},
		{"hostile layer", func(t *testing.T) string {
			return writeLayout(t, testImage(t, baseLayer(t), layerOf(t, false, reg("../escape", "x"))), "1")
		}, ErrRefused, []string{"oci", "layer 2/2", "../escape"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			// An image already there, sharing the base layer: a failed
			// import must leave it and everything else as it was.
			if _, err := s.Import(ctx, writeLayout(t, testImage(t, baseLayer(t)), "base"), ImportOptions{}); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, s)
			src := tc.src(t)
			_, err := s.Import(ctx, src, ImportOptions{})
			if err == nil {
				t.Fatal("import succeeded")
			}
			t.Logf("refused: %v", err)
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("got %v, want %v", err, tc.want)
			}
			for _, w := range tc.words {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message %q does not say %q", err, w)
				}
			}
			if after := snapshot(t, s); !slices.Equal(before, after) {
				t.Errorf("store changed:\nbefore %q\nafter  %q", before, after)
			}
		})
	}
}

// check that a tar header is a tar header (keeps the tar import honest).
var _ = tar.TypeReg

// TestImportLegacyDockerSave reads the layout `docker save` wrote before
// docker 25: uncompressed ID/layer.tar files, a layer repeated as a symlink
// to the first copy, the config as HEX.json.
func TestImportLegacyDockerSave(t *testing.T) {
	l1 := mkTar(t, dirEntry("etc/"), reg("etc/a", "a"))
	l2 := mkTar(t, reg("etc/.wh.a", ""), reg("b", "b"))
	cfg := []byte(`{"architecture":"` + runtime.GOARCH + `","os":"linux","config":{"Cmd":["sh"]},` +
		`"rootfs":{"type":"layers","diff_ids":["` + sha256Of(l1).String() + `","` + sha256Of(l2).String() + `","` + sha256Of(l1).String() + `"]}}`)
	cfgName := sha256Of(cfg).Hex + ".json"
	manifest := `[{"Config":"` + cfgName + `","RepoTags":["busybox:latest"],"Layers":["aaa/layer.tar","bbb/layer.tar","ccc/layer.tar"]}]`
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	add := func(name string, data []byte) {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	add("aaa/layer.tar", l1)
	add("bbb/layer.tar", l2)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "ccc/layer.tar", Linkname: "../aaa/layer.tar"}); err != nil {
		t.Fatal(err)
	}
	add(cfgName, cfg)
	add("manifest.json", []byte(manifest))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "busybox.tar")
	if err := os.WriteFile(file, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	s := newStore(t)
	id, err := s.Import(context.Background(), file, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if id != sha256Of(cfg) {
		t.Errorf("id %s, want %s", id, sha256Of(cfg))
	}
	img, err := s.Image("busybox")
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Layers) != 3 || img.Layers[0].MediaType != types.OCIUncompressedLayer || img.Layers[0].Digest != sha256Of(l1) {
		t.Errorf("layers: %+v", img.Layers)
	}
	if n := countDirs(t, s.path("layers", "sha256")); n != 2 {
		t.Errorf("%d layer dirs, want 2", n)
	}
	// Saved and imported again: the same image.
	out := filepath.Join(t.TempDir(), "out.tar")
	if err := s.SaveArchiveFile("busybox", out); err != nil {
		t.Fatal(err)
	}
	if id2, err := newStore(t).Import(context.Background(), out, ImportOptions{}); err != nil || id2 != id {
		t.Errorf("re-import: %s, %v; want %s", id2, err, id)
	}
	// A config that does not match its HEX.json name.
	bad := bytes.Replace(b.Bytes(), []byte(`"Cmd":["sh"]`), []byte(`"Cmd":["xx"]`), 1)
	badFile := filepath.Join(t.TempDir(), "bad.tar")
	if err := os.WriteFile(badFile, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := newStore(t).Import(context.Background(), badFile, ImportOptions{}); !errors.Is(err, ErrDigest) || !strings.Contains(err.Error(), cfgName) {
		t.Errorf("config not matching its name: %v, want a digest mismatch naming %s", err, cfgName)
	}
}

func TestRemoveRefusesMountedLayers(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	base := baseLayer(t)
	if _, err := s.Import(ctx, writeLayout(t, testImage(t, base), "base"), ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Import(ctx, writeLayout(t, testImage(t, base, layerOf(t, false, reg("x", "x"))), "app"), ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	st, release, err := s.Use("oci:app")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Lowers) != 2 {
		t.Fatalf("stack %v", st.Lowers)
	}
	// The base image's only layer is shared with the mounted one: it can go,
	// and its layer stays.
	if _, err := s.Remove("oci:base"); err != nil {
		t.Errorf("rm of an image whose layers all stay: %v", err)
	}
	before := snapshot(t, s)
	if _, err := s.Remove("oci:app"); !errors.Is(err, ErrInUse) {
		t.Errorf("rm of a mounted image: %v, want ErrInUse", err)
	}
	if after := snapshot(t, s); !slices.Equal(before, after) {
		t.Errorf("a refused rm changed the store:\nbefore %q\nafter  %q", before, after)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Remove("oci:app"); err != nil {
		t.Errorf("rm after the mount is gone: %v", err)
	}
	if n := countDirs(t, s.path("layers", "sha256")); n != 0 {
		t.Errorf("%d layer dirs left", n)
	}
}

func TestImportMultiPlatformIndex(t *testing.T) {
	ctx := context.Background()
	img := testImage(t, baseLayer(t))
	cf, _ := img.ConfigFile()
	cf = cf.DeepCopy()
	cf.Architecture = "s390x"
	img, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
		Platform: &v1.Platform{OS: "linux", Architecture: "s390x"},
	}})
	dir := filepath.Join(t.TempDir(), "multi")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{refNameAnnotation: "v1"})); err != nil {
		t.Fatal(err)
	}
	s := newStore(t)
	if runtime.GOARCH != "s390x" {
		_, err := s.Import(ctx, dir+":v1", ImportOptions{})
		if !errors.Is(err, ErrBadImage) || !strings.Contains(err.Error(), "no manifest for platform") || !strings.Contains(err.Error(), "linux/s390x") {
			t.Errorf("import of another platform: %v", err)
		}
	}
	id, err := s.Import(ctx, dir+":v1", ImportOptions{Platform: "linux/s390x"})
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := img.ConfigName(); id != want {
		t.Errorf("id %s, want %s", id, want)
	}
}
