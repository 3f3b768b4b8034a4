package test

// Images end to end: layers built from fixture directories with GNU tar, an
// image made of them with go-containerregistry, imported into a store, and
// its merged tree mounted by strata and compared with an independent
// extraction (umoci unpack) when umoci is installed.

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	store "github.com/strata-fs/strata/layers"
	"github.com/strata-fs/strata/unionfs"
	"github.com/strata-fs/strata/whiteout"
)

// gnuTar tars dir as an OCI layer would hold it: PAX, sparse files as
// sparse entries, xattrs, numeric owners.
func gnuTar(t testing.TB, dir string) []byte {
	t.Helper()
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("needs GNU tar")
	}
	cmd := exec.Command("tar", "--sparse", "--format=pax", "--xattrs", "--xattrs-include=*", "--numeric-owner",
		"--sort=name", "-C", dir, "-cf", "-", ".")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("tar: %v\n%s", err, stderr.String())
	}
	return out.Bytes()
}

// layerFromFixture builds a layer from fixture steps: the tar of a directory
// they were applied to, compressed as comp says ("gzip", "zstd" or "none").
func layerFromFixture(t testing.TB, comp string, steps []fx) v1.Layer {
	t.Helper()
	return layerFromTar(t, comp, fixtureTar(t, steps))
}

// fixtureTar is the tar of a directory the fixture steps were applied to.
func fixtureTar(t testing.TB, steps []fx) []byte {
	t.Helper()
	dir := t.TempDir()
	applyFixture(t, dir, steps)
	return gnuTar(t, dir)
}

// layerFromTar makes a layer of the tar b, compressed as comp says.
func layerFromTar(t testing.TB, comp string, b []byte) v1.Layer {
	t.Helper()
	var (
		l   v1.Layer
		err error
	)
	opener := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	switch comp {
	case "none":
		l = static.NewLayer(b, types.OCIUncompressedLayer)
	case "zstd":
		l, err = tarball.LayerFromOpener(opener, tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd))
	default:
		l, err = tarball.LayerFromOpener(opener, tarball.WithMediaType(types.OCILayer))
	}
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func ociImage(t testing.TB, ls ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, ls...)
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
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

func writeOCILayout(t testing.TB, img v1.Image, tag string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "oci")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})); err != nil {
		t.Fatal(err)
	}
	return dir
}

// mountImage mounts a read-only union of the image ref and unmounts it when
// the test ends.
func mountImage(t testing.TB, s *store.Store, ref string) string {
	t.Helper()
	st, err := s.Stack(ref)
	if err != nil {
		t.Fatal(err)
	}
	return mountStrata(t, stack{Lowers: st.Lowers}, whiteout.OCI)
}

// forImages drops what an image comparison cannot hold against either side:
// which names share an inode (a union shows one inode per name), the root
// directory (an unpacker makes its own), and directory times (applying a
// later layer touches them in an extraction).
func forImages(tr tree) tree {
	delete(tr, ".")
	for _, e := range tr {
		e.Links = ""
		if e.Type == "dir" {
			e.Mtime = ""
		}
	}
	return tr
}

const sparseSize = 3 << 30

// roundTripTars are the layer tars of the round trip, bottom first.
func roundTripTars(t testing.TB) [][]byte {
	return [][]byte{
		fixtureTar(t, layer(
			fDir("etc"), fFile("etc/passwd", "root:x:0:0::/root:/bin/sh\n"), fFile("etc/gone", "deleted above"),
			fDir("var/cache"), fFile("var/cache/a", "a"), fFile("var/cache/b", "b"),
			fFileM("bin/tool", "#!/bin/sh\necho tool\n", 0o755), fHardlink("bin/tool2", "bin/tool"),
			fSymlink("bin/sh", "tool"), fXattr("bin/tool", "user.origin", "base"),
			fChown("etc/passwd", 0, 42), fFileM("bin/suid", "s", 0o4755),
		)),
		fixtureTar(t, layer(
			fDir("etc"), fOCIWhiteout("etc/gone"), fFile("etc/passwd", "root:x:0:0::/root:/bin/bash\n"),
			fOCIOpaque("var/cache"), fFile("var/cache/new", "new"),
			fSparse("big/sparse", sparseSize),
		)),
		fixtureTar(t, layer(
			fDir("app"), fFile("app/run", "run"), fFifo("app/fifo"), fSymlink("app/link", "../bin/tool"),
			fDirM("app/private", 0o700), fFile("app/private/key", "k"),
		)),
	}
}

func TestImageRoundTrip(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	// gzip, zstd and an uncompressed layer.
	tars := roundTripTars(t)
	img := ociImage(t, layerFromTar(t, "gzip", tars[0]), layerFromTar(t, "zstd", tars[1]), layerFromTar(t, "none", tars[2]))
	wantID, _ := img.ConfigName()
	dir := writeOCILayout(t, img, "1.0")
	archive := filepath.Join(t.TempDir(), "img.tar")
	tag, _ := name.NewTag("example.com/rt:1.0")
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		t.Fatal(err)
	}

	s, err := store.OpenStore(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	priv := store.ImportOptions{Unpack: store.UnpackOptions{Privileged: true}}
	id, err := s.Import(ctx, dir+":1.0", priv)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := s.Import(ctx, archive, priv)
	if err != nil {
		t.Fatal(err)
	}
	if id != wantID || id2 != wantID {
		t.Errorf("ids %s (layout), %s (archive), want %s", id, id2, wantID)
	}
	st, err := s.Stack("oci:1.0")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Lowers) != 3 {
		t.Fatalf("%d layers, want 3", len(st.Lowers))
	}
	if ents, _ := os.ReadDir(filepath.Join(s.Root(), "layers", "sha256")); len(ents) != 3 {
		t.Errorf("%d layer dirs after importing the image twice, want 3", len(ents))
	}
	// The layers, one by one (top first).
	mid, bottom := st.Lowers[1], st.Lowers[2]
	for _, p := range []string{"etc/.wh.gone", "var/cache/.wh..wh..opq"} {
		if fi, err := os.Lstat(filepath.Join(mid, p)); err != nil || !fi.Mode().IsRegular() || fi.Size() != 0 {
			t.Errorf("middle layer %s: %v, %v; want an empty file", p, fi, err)
		}
	}
	var a, b unix.Stat_t
	if err := unix.Lstat(filepath.Join(bottom, "bin/tool"), &a); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(bottom, "bin/tool2"), &b); err != nil || a.Ino != b.Ino {
		t.Errorf("bin/tool2 is not a hard link of bin/tool in the bottom layer")
	}
	var sp unix.Stat_t
	if err := unix.Lstat(filepath.Join(mid, "big/sparse"), &sp); err != nil || sp.Size != sparseSize || sp.Blocks*512 > 1<<20 {
		t.Errorf("big/sparse: size %d, %d bytes allocated, %v; want %d, sparse", sp.Size, sp.Blocks*512, err, int64(sparseSize))
	}

	mnt := mountImage(t, s, "oci:1.0")
	got := forImages(snapshot(t, mnt, snapMerged))
	for p, want := range map[string]string{"etc/gone": "", "var/cache/a": "", "var/cache/new": "file", "bin/tool2": "file", "big/sparse": "file"} {
		e, ok := got[p]
		switch {
		case want == "" && ok:
			t.Errorf("merged %s: %v, want it hidden", p, e)
		case want != "" && (!ok || e.Type != want):
			t.Errorf("merged %s: %v, want a %s", p, e, want)
		}
	}
	if e := got["bin/tool"]; e == nil || e.Xattrs["user.origin"] != "base" {
		t.Errorf("merged bin/tool: %v, want xattr user.origin=base", e)
	}

	umoci, err := exec.LookPath("umoci")
	if err != nil {
		t.Skip("umoci is not installed: the merged tree was not compared with an independent extraction (CI installs it)")
	}
	// umoci 0.4 reads no zstd: the same layers, all gzip'd, for it.
	gz := writeOCILayout(t, ociImage(t, layerFromTar(t, "gzip", tars[0]), layerFromTar(t, "gzip", tars[1]), layerFromTar(t, "none", tars[2])), "1.0")
	bundle := filepath.Join(t.TempDir(), "bundle")
	if out, err := exec.Command(umoci, "unpack", "--image", gz+":1.0", bundle).CombinedOutput(); err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, out)
	}
	want := forImages(snapshot(t, filepath.Join(bundle, "rootfs"), snapMerged))
	compareTrees(t, "merged image", "umoci unpack", want, "strata", got)
	t.Logf("the merged tree matches umoci unpack: %d entries", len(got))
}

// mountRW mounts a union of the image ref under a fresh upper, and returns
// the mount point, the upper, and an unmount that the test calls before it
// commits (and that runs at cleanup anyway).
func mountRW(t testing.TB, s *store.Store, ref string) (mnt, upper string, unmount func()) {
	t.Helper()
	requireRoot(t)
	st, err := s.Stack(ref)
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	upper, work, mnt := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "mnt")
	for _, d := range []string{upper, work, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	guardLowers(t, st.Lowers)
	srv, err := unionfs.Mount(mnt, unionfs.Config{Lowers: st.Lowers, Upper: upper, Work: work, Whiteout: whiteout.Overlay})
	if err != nil {
		t.Fatal(err)
	}
	done := false
	unmount = func() {
		if done {
			return
		}
		done = true
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount %s: %v (detaching)", mnt, err)
			_ = unix.Unmount(mnt, unix.MNT_DETACH) // never leave a mount behind
		}
		srv.Wait()
	}
	t.Cleanup(unmount)
	return mnt, upper, unmount
}

func TestCommitShowsWhatTheContainerSaw(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	img := ociImage(t,
		layerFromFixture(t, "gzip", layer(
			fDir("etc"), fFile("etc/hosts", "127.0.0.1 base\n"), fFile("etc/gone", "x"), fFile("etc/old-name", "moved"),
			fDir("srv/data"), fFile("srv/data/1", "1"), fFile("srv/data/2", "2"), fFile("keep", "k"),
		)),
		layerFromFixture(t, "gzip", layer(fDir("opt"), fFile("opt/app", "app"))),
	)
	s, err := store.OpenStore(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	priv := store.ImportOptions{Unpack: store.UnpackOptions{Privileged: true}}
	if _, err := s.Import(ctx, writeOCILayout(t, img, "base"), priv); err != nil {
		t.Fatal(err)
	}
	// The overlay whiteout format in the upper: commit must translate it.
	mnt, upper, unmount := mountRW(t, s, "oci:base")
	p := func(rel string) string { return filepath.Join(mnt, rel) }
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Remove(p("etc/gone")))
	must(os.Rename(p("etc/old-name"), p("etc/new-name")))
	must(os.WriteFile(p("etc/hosts"), []byte("127.0.0.1 edited\n"), 0o644))
	must(os.RemoveAll(p("srv/data")))
	must(os.Mkdir(p("srv/data"), 0o750)) // opaque now
	must(os.WriteFile(p("srv/data/3"), []byte("3"), 0o644))
	must(os.Remove(p("opt/app")))
	must(os.WriteFile(p("new"), []byte("new"), 0o600))
	must(os.Link(p("new"), p("new-link")))
	must(os.Symlink("keep", p("keep-link")))
	must(unix.Setxattr(p("keep"), "user.tag", []byte("v"), 0))
	must(os.Chmod(p("keep"), 0o640))
	saw := forImages(snapshot(t, mnt, snapMerged))
	unmount()

	id, err := s.Commit(ctx, upper, "oci:base", store.CommitOptions{Tags: []string{"committed:1"}, Unpack: priv.Unpack})
	if err != nil {
		t.Fatal(err)
	}
	if img, err := s.Image("committed:1"); err != nil || img.ID != id || len(img.Layers) != 3 {
		t.Fatalf("committed image: %+v, %v", img, err)
	}
	got := forImages(snapshot(t, mountImage(t, s, "committed:1"), snapMerged))
	compareTrees(t, "committed image", "the container", saw, "the new image", got)
	t.Logf("the committed image shows what the container saw: %d entries", len(got))
}

// TestImageCLI runs `strata image mount --daemon` from the built binary
// and unmounts it.
func TestImageCLI(t *testing.T) {
	requireRoot(t)
	bin := filepath.Join(t.TempDir(), "strata")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/strata").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	root := filepath.Join(t.TempDir(), "store")
	runErr := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "STRATA_ROOT="+root)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := runErr(args...)
		if err != nil {
			t.Fatalf("strata %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	img := ociImage(t, layerFromFixture(t, "gzip", layer(fFile("hello", "hi"))))
	run("image", "import", writeOCILayout(t, img, "v1"))
	mnt := t.TempDir()
	run("image", "mount", "--daemon", "oci:v1", mnt)
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, 0); err != nil && err != unix.EINVAL {
			_ = unix.Unmount(mnt, unix.MNT_DETACH) // never leave a mount behind
		}
	})
	if b, err := os.ReadFile(filepath.Join(mnt, "hello")); err != nil || string(b) != "hi" {
		t.Errorf("hello through the image mount: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "x"), nil, 0o644); err == nil {
		t.Errorf("the image mount took a write")
	}
	// The daemon serving the mount holds its layers in use.
	out, err := runErr("image", "rm", "oci:v1")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out, "in use") {
		t.Errorf("image rm while mounted: %v\n%s; want exit 1, in use", err, out)
	}
	run("umount", mnt)
	// The daemon exits once unmounted; its locks go with it.
	var rmErr error
	for range 50 {
		if out, rmErr = runErr("image", "rm", "oci:v1"); rmErr == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if rmErr != nil {
		t.Errorf("image rm after umount: %v\n%s", rmErr, out)
	}
}
