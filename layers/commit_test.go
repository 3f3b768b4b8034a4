package layers

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tarIndex lists a tar's entries as "name type linkname".
func tarIndex(t *testing.T, b []byte) []string {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var out []string
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, hdr.Name+" "+string(hdr.Typeflag)+" "+hdr.Linkname)
	}
}

// testUpper makes an upper directory as a container would leave it, with
// whiteouts and opaque dirs of both formats when running as root (the overlay
// ones need mknod and trusted xattrs).
func testUpper(t *testing.T) string {
	t.Helper()
	up := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(up, "etc"), 0o755))
	must(os.WriteFile(filepath.Join(up, "etc/hosts"), []byte("127.0.0.1 edited\n"), 0o644))
	must(os.WriteFile(filepath.Join(up, "etc/.wh.gone"), nil, 0o644))
	must(os.WriteFile(filepath.Join(up, "etc/renamed"), []byte("moved"), 0o600))
	must(os.WriteFile(filepath.Join(up, "etc/.wh.tobemoved"), nil, 0o644))
	must(os.MkdirAll(filepath.Join(up, "cache"), 0o755))
	must(os.WriteFile(filepath.Join(up, "cache/.wh..wh..opq"), nil, 0o644))
	must(os.WriteFile(filepath.Join(up, "cache/fresh"), []byte("f"), 0o644))
	must(os.WriteFile(filepath.Join(up, "a"), []byte("linked"), 0o644))
	must(os.Link(filepath.Join(up, "a"), filepath.Join(up, "b")))
	must(os.Symlink("a", filepath.Join(up, "s")))
	if os.Geteuid() == 0 {
		must(unix.Mknod(filepath.Join(up, "etc/gone2"), unix.S_IFCHR, 0))
		must(os.MkdirAll(filepath.Join(up, "var"), 0o755))
		must(unix.Setxattr(filepath.Join(up, "var"), "trusted.overlay.opaque", []byte("y"), 0))
		must(unix.Setxattr(filepath.Join(up, "a"), "user.note", []byte("kept"), 0))
	}
	return up
}

func TestWriteDiff(t *testing.T) {
	up := testUpper(t)
	var one, two bytes.Buffer
	clamp := time.Unix(1700000000, 0)
	if err := WriteDiff(up, &one, DiffOptions{Clamp: clamp}); err != nil {
		t.Fatal(err)
	}
	// Touch everything: a clamped tar stays the same.
	now := time.Now()
	_ = filepath.Walk(up, func(p string, _ os.FileInfo, _ error) error {
		_ = unix.Lutimes(p, []unix.Timeval{unix.NsecToTimeval(now.UnixNano()), unix.NsecToTimeval(now.UnixNano())})
		return nil
	})
	if err := WriteDiff(up, &two, DiffOptions{Clamp: clamp}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(one.Bytes(), two.Bytes()) {
		t.Errorf("two clamped diffs of the same tree differ")
	}
	got := tarIndex(t, one.Bytes())
	want := []string{
		"a 0 ", "b 1 a", "cache/ 5 ", "cache/.wh..wh..opq 0 ", "cache/fresh 0 ",
		"etc/ 5 ", "etc/.wh.gone 0 ", "etc/.wh.tobemoved 0 ", "etc/hosts 0 ", "etc/renamed 0 ", "s 2 a",
	}
	if os.Geteuid() == 0 {
		want = []string{
			"a 0 ", "b 1 a", "cache/ 5 ", "cache/.wh..wh..opq 0 ", "cache/fresh 0 ",
			"etc/ 5 ", "etc/.wh.gone 0 ", "etc/.wh.gone2 0 ", "etc/.wh.tobemoved 0 ", "etc/hosts 0 ", "etc/renamed 0 ", "s 2 a",
			"var/ 5 ", "var/.wh..wh..opq 0 ",
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("entries:\ngot  %q\nwant %q", got, want)
	}
}

func TestCommit(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	base := testImage(t, layerOf(t, false,
		dirEntry("etc/"), reg("etc/hosts", "127.0.0.1 base\n"), reg("etc/gone", "x"), reg("etc/gone2", "x"),
		reg("etc/tobemoved", "moved"), dirEntry("cache/"), reg("cache/old", "o"), dirEntry("var/"), reg("var/log", "l"),
	))
	baseID, err := s.Import(ctx, writeLayout(t, base, "base"), ImportOptions{Unpack: UnpackOptions{Privileged: os.Geteuid() == 0}})
	if err != nil {
		t.Fatal(err)
	}
	up := testUpper(t)
	created := time.Unix(1700000000, 0).UTC()
	id, err := s.Commit(ctx, up, "oci:base", CommitOptions{Tags: []string{"new:1"}, Created: created, Clamp: true,
		Unpack: UnpackOptions{Privileged: os.Geteuid() == 0}})
	if err != nil {
		t.Fatal(err)
	}
	// Reproducible: the same upper, committed again, is the same image.
	id2, err := s.Commit(ctx, up, "oci:base", CommitOptions{Created: created, Clamp: true})
	if err != nil || id2 != id {
		t.Errorf("second commit: %s, %v; want %s", id2, err, id)
	}
	img, err := s.Image("new:1")
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Layers) != 2 {
		t.Fatalf("%d layers, want 2", len(img.Layers))
	}
	baseImg, _ := s.Image(baseID.String())
	if img.Layers[0].DiffID != baseImg.Layers[0].DiffID {
		t.Errorf("the base layer changed")
	}
	cfg, err := s.Config(id)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Created.Equal(created) || len(cfg.History) == 0 || cfg.History[len(cfg.History)-1].CreatedBy != "strata commit" {
		t.Errorf("config: created %v, history %+v", cfg.Created, cfg.History)
	}
	top := s.LayerDir(img.Layers[1].DiffID)
	for _, p := range []string{"etc/.wh.gone", "etc/.wh.tobemoved", "cache/.wh..wh..opq", "etc/renamed"} {
		if _, err := os.Lstat(filepath.Join(top, p)); err != nil {
			t.Errorf("top layer: %v", err)
		}
	}
	if os.Geteuid() == 0 {
		for _, p := range []string{"etc/.wh.gone2", "var/.wh..wh..opq"} {
			if _, err := os.Lstat(filepath.Join(top, p)); err != nil {
				t.Errorf("top layer: %v", err)
			}
		}
	}
}
