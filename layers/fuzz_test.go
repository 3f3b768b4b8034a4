package layers

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Fuzz targets for what strata reads from outside: fuse-overlayfs's -o
// options, layer tars, and image manifests. `make fuzz` runs each for a
// minute; `go test` runs their seeds (f.Add, and testdata/fuzz/NAME) as
// ordinary tests.

// FuzzParseFuseOverlay: any option string either fails with ErrBadOption or
// gives a stack whose paths are non-empty and id maps that are ranges that
// map back and forth.
func FuzzParseFuseOverlay(f *testing.F) {
	for _, s := range []string{
		"lowerdir=/l/app:/l/base,upperdir=/u,workdir=/w",
		`lowerdir=/a\:b:/c\,d,volatile,ro,allow_other`,
		"lowerdir=/l,uidmapping=0:1000:1:1:100000:65536,gidmapping=0:1000:1,squash_to_uid=5",
		"lowerdir=/l,squash_to_root,context=\"system_u:object_r:container_file_t:s0\",noatime,xattr_permissions=1",
		"lowerdir=/a::/b", "lowerdir=/a,lowerdir=/b", `lowerdir=/a\`, "metacopy=on", "uidmapping=0:0:0", "uidmapping=1:2",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, opts string) {
		fo, err := ParseFuseOverlay(opts)
		if err != nil {
			if !errors.Is(err, ErrBadOption) {
				t.Fatalf("ParseFuseOverlay(%q): %v, not ErrBadOption", opts, err)
			}
			return
		}
		for _, p := range fo.Lowers {
			if p == "" {
				t.Fatalf("ParseFuseOverlay(%q): an empty layer path: %+v", opts, fo.Stack)
			}
		}
		for _, maps := range [][]IDMap{fo.UIDMap, fo.GIDMap} {
			for _, m := range maps {
				if m.Count == 0 {
					t.Fatalf("ParseFuseOverlay(%q): empty range %+v", opts, m)
				}
				for _, id := range []uint32{m.Stored, m.Stored + m.Count - 1} {
					shown, ok := ToShown(maps, id)
					back, ok2 := ToStored(maps, shown)
					if !ok || !ok2 || back != id {
						t.Fatalf("ParseFuseOverlay(%q): stored id %d shows as %d (%v), which stores as %d (%v)", opts, id, shown, ok, back, ok2)
					}
				}
			}
		}
	})
}

// FuzzUnpack applies any bytes as a layer tar. Whatever it holds, nothing may
// appear beside the layer directory, and a victim directory there stays as it
// was. The seeds are the hostile corpus.
func FuzzUnpack(f *testing.F) {
	for _, c := range hostileCorpus(f) {
		if len(c.tar) < 1<<20 {
			f.Add(c.tar)
		}
	}
	f.Add(mkTar(f, dirEntry("d/"), reg("d/f", "data"), symlink("d/l", "f"), hardlink("d/h", "d/f"), reg("d/.wh.x", ""), reg("e/.wh..wh..opq", "")))
	f.Fuzz(func(t *testing.T, data []byte) {
		layer, victim := breakoutDirs(t)
		// Bounded, so that a fuzzed size cannot fill the disk.
		err := Unpack(layer, bytes.NewReader(data), UnpackOptions{Privileged: os.Geteuid() == 0, MaxSize: 1 << 20})
		var re *RefusedError
		if errors.As(err, &re) && !strings.Contains(err.Error(), re.Entry) {
			t.Errorf("refusal %q does not name its entry %q", err, re.Entry)
		}
		checkVictim(t, victim)
		ents, _ := os.ReadDir(filepath.Dir(layer))
		for _, e := range ents {
			if n := e.Name(); n != "layer" && n != "victim" {
				t.Errorf("%s appeared beside the layer", n)
			}
		}
	})
}

// FuzzReadArchive reads a docker archive whose manifest.json and config are
// fuzzed: any of them either fails with ErrBadImage (or ErrDigest) or gives a
// source whose layers are all in the archive.
func FuzzReadArchive(f *testing.F) {
	f.Add([]byte(`[{"Config":"config.json","RepoTags":["busybox:latest"],"Layers":["layer.tar"]}]`), []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`))
	f.Add([]byte(`[{"Config":"config.json","Layers":["link.tar","layer.tar"]}]`), []byte(`{}`))
	f.Add([]byte(`[{"Config":"missing.json","Layers":[]}]`), []byte(`{}`))
	f.Add([]byte(`[]`), []byte(`null`))
	f.Fuzz(func(t *testing.T, manifest, config []byte) {
		layer := mkTar(t, reg("f", "x"))
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		for _, e := range []struct {
			name string
			data []byte
			link string
		}{{"manifest.json", manifest, ""}, {"config.json", config, ""}, {"layer.tar", layer, ""}, {"link.tar", nil, "layer.tar"}, {"loop.tar", nil, "loop.tar"}} {
			h := &tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg}
			if e.link != "" {
				h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, e.link, 0
			}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if _, err := tw.Write(e.data); err != nil {
				t.Fatal(err)
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "image.tar")
		if err := os.WriteFile(file, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		in, err := readArchive(file, nil)
		if err != nil {
			if !errors.Is(err, ErrBadImage) && !errors.Is(err, ErrDigest) {
				t.Fatalf("readArchive: %v, want ErrBadImage or ErrDigest", err)
			}
			return
		}
		defer in.close()
		for _, l := range in.layers {
			r, err := l.open()
			if err != nil {
				t.Fatalf("%s: %v", l.what, err)
			}
			_ = r.Close() // read-only
		}
	})
}

// FuzzReadLayout reads an OCI layout whose index.json, manifest and config
// are fuzzed. The blobs are stored under their true digests, and the strings
// MANIFEST and CONFIG in the index and the manifest stand for those digests,
// so that the fuzzer gets past the digest checks to the parsing behind them.
func FuzzReadLayout(f *testing.F) {
	index := `{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"MANIFEST","size":SIZE,"annotations":{"org.opencontainers.image.ref.name":"1.0"}}]}`
	manifest := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"CONFIG","size":2},"layers":[]}`
	f.Add([]byte(index), []byte(manifest), []byte(`{}`))
	f.Add([]byte(strings.Replace(index, "image.manifest", "image.index", 1)), []byte(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"MANIFEST","size":SIZE}]}`), []byte(`{}`))
	f.Add([]byte(`{"manifests":[]}`), []byte(`{}`), []byte(`{}`))
	f.Fuzz(func(t *testing.T, index, manifest, config []byte) {
		dir := t.TempDir()
		blobs := filepath.Join(dir, "blobs", "sha256")
		if err := os.MkdirAll(blobs, 0o755); err != nil {
			t.Fatal(err)
		}
		put := func(b []byte) string {
			sum := sha256.Sum256(b)
			h := hex.EncodeToString(sum[:])
			if err := os.WriteFile(filepath.Join(blobs, h), b, 0o644); err != nil {
				t.Fatal(err)
			}
			return "sha256:" + h
		}
		cd := put(config)
		manifest = bytes.ReplaceAll(manifest, []byte("CONFIG"), []byte(cd))
		md := put(manifest)
		index = bytes.ReplaceAll(index, []byte("MANIFEST"), []byte(md))
		index = bytes.ReplaceAll(index, []byte("SIZE"), []byte(strconv.Itoa(len(manifest))))
		for name, b := range map[string][]byte{"index.json": index, "oci-layout": []byte(`{"imageLayoutVersion":"1.0.0"}`)} {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		in, err := readLayout(dir, "", &v1.Platform{OS: "linux", Architecture: "amd64"})
		if err != nil {
			if !errors.Is(err, ErrBadImage) && !errors.Is(err, ErrDigest) {
				t.Fatalf("readLayout: %v, want ErrBadImage or ErrDigest", err)
			}
			return
		}
		if in.cfg == nil {
			t.Fatalf("readLayout: no config")
		}
	})
}
