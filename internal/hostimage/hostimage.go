// Package hostimage builds a small container image from this host's own
// binaries, so that the demo and the tests of `strata run` need no download:
// the static busybox when /bin/busybox is one, with a link for each applet
// that strata's tests and demo use; otherwise /bin/sh and a few coreutils,
// with the shared libraries and the loader their ELF headers name (the way
// ldd finds them, without running ldd).
//
// The image has two layers: the system (binaries, /etc/passwd, /etc/group,
// /tmp), and on top of it the caller's files, as the Dockerfile step of an
// application would add them. It is written as a docker-archive and imported
// into the store like any other image.
package hostimage

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/strata-fs/strata/layers"
)

// Busybox is the static busybox this package prefers.
const Busybox = "/bin/busybox"

// applets get a link to busybox in /bin.
var applets = []string{
	"sh", "ls", "cat", "echo", "rm", "mkdir", "hostname", "ps", "sleep", "id", "head", "tail", "wc",
	"sync", "dd", "yes", "touch", "mv", "cp", "true", "false", "env", "grep", "sed", "awk", "mount",
	"uname", "kill", "date", "seq", "stat", "readlink", "find", "pwd", "test", "[", "printf", "tr",
	"cut", "sort", "free", "top", "du", "df", "chmod", "chown", "ln", "basename", "dirname", "nproc",
	"timeout", "tty", "stty", "pidof", "pgrep", "pkill", "wget", "httpd", "nc", "ip", "ifconfig",
}

// coreutils are the binaries taken when there is no static busybox.
var coreutils = []string{"sh", "ls", "cat", "echo", "rm", "mkdir", "hostname", "sleep", "id", "head", "true", "false", "env", "touch", "uname"}

// File is a file of the application layer.
type File struct {
	Path    string // relative: "data/old.txt"
	Content string
}

// Source says what the system layer was built from, for a person to read.
func Source() string {
	if isStatic(Busybox) {
		return "the static " + Busybox
	}
	return "/bin/sh and coreutils from the host, with their libraries"
}

// Import builds the image, with app as its top layer, and imports it into s
// as tag. It returns the image id.
func Import(ctx context.Context, s *layers.Store, tag string, app []File) (v1.Hash, error) {
	sys, err := systemLayer()
	if err != nil {
		return v1.Hash{}, err
	}
	appFiles := map[string]fileEntry{}
	for _, f := range app {
		appFiles[f.Path] = fileEntry{data: []byte(f.Content), mode: 0o644}
	}
	top, err := layerOf(appFiles)
	if err != nil {
		return v1.Hash{}, err
	}
	img, err := mutate.AppendLayers(empty.Image, sys, top)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("host image: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("host image: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Config.Cmd = []string{"sh"}
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return v1.Hash{}, fmt.Errorf("host image: %w", err)
	}
	ref, err := name.NewTag(layers.NormalizeTag(tag))
	if err != nil {
		return v1.Hash{}, fmt.Errorf("host image: tag %q: %w", tag, err)
	}
	dir, err := os.MkdirTemp("", "strata-hostimage-")
	if err != nil {
		return v1.Hash{}, fmt.Errorf("host image: %w", err)
	}
	defer func() { _ = os.RemoveAll(dir) }() // the archive is imported or useless
	archive := filepath.Join(dir, "image.tar")
	if err := tarball.WriteToFile(archive, ref, img); err != nil {
		return v1.Hash{}, fmt.Errorf("host image: %w", err)
	}
	return s.Import(ctx, archive, layers.ImportOptions{Tags: []string{tag}, Unpack: layers.UnpackOptions{Privileged: os.Geteuid() == 0}})
}

type fileEntry struct {
	data []byte // content of a regular file
	link string // target of a symbolic link
	mode int64
	dir  bool
}

// systemLayer is the system's files: busybox or the host's binaries.
func systemLayer() (v1.Layer, error) {
	files := map[string]fileEntry{
		"etc/passwd": {data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"), mode: 0o644},
		"etc/group":  {data: []byte("root:x:0:\nnogroup:x:65534:\n"), mode: 0o644},
		"tmp":        {dir: true, mode: 0o1777},
		"root":       {dir: true, mode: 0o700},
	}
	if isStatic(Busybox) {
		b, err := os.ReadFile(Busybox)
		if err != nil {
			return nil, fmt.Errorf("host image: %w", err)
		}
		files["bin/busybox"] = fileEntry{data: b, mode: 0o755}
		for _, a := range applets {
			files["bin/"+a] = fileEntry{link: "busybox", mode: 0o777}
		}
		return layerOf(files)
	}
	if err := addDynamic(files); err != nil {
		return nil, err
	}
	return layerOf(files)
}

// isStatic reports whether p is an ELF executable without a loader.
func isStatic(p string) bool {
	f, err := elf.Open(p)
	if err != nil {
		return false
	}
	defer func() { _ = f.Close() }() // read-only
	for _, ph := range f.Progs {
		if ph.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// libDirs are where the loader looks for libraries, on Debian and others.
var libDirs = []string{
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
	"/lib64", "/usr/lib64", "/lib", "/usr/lib",
}

// addDynamic adds the coreutils found on PATH, their loader and libraries.
func addDynamic(files map[string]fileEntry) error {
	queue := []string{}
	for _, c := range coreutils {
		for _, dir := range []string{"/bin", "/usr/bin"} {
			p := filepath.Join(dir, c)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
				queue = append(queue, p)
				files["bin/"+c] = fileEntry{}
				break
			}
		}
	}
	if _, ok := files["bin/sh"]; !ok {
		return errors.New("host image: neither a static /bin/busybox nor /bin/sh on this host")
	}
	seen := map[string]bool{}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return fmt.Errorf("host image: %w", err)
		}
		b, err := os.ReadFile(real)
		if err != nil {
			return fmt.Errorf("host image: %w", err)
		}
		rel := strings.TrimPrefix(p, "/")
		if strings.HasPrefix(rel, "bin/") || strings.HasPrefix(rel, "usr/bin/") {
			rel = "bin/" + filepath.Base(p)
		}
		files[rel] = fileEntry{data: b, mode: 0o755}
		deps, err := elfDeps(real)
		if err != nil {
			return err
		}
		queue = append(queue, deps...)
	}
	return nil
}

// elfDeps lists the loader and the libraries the ELF file p needs, as paths.
func elfDeps(p string) ([]string, error) {
	f, err := elf.Open(p)
	if err != nil {
		return nil, nil // a script: nothing to follow
	}
	defer func() { _ = f.Close() }() // read-only
	var out []string
	for _, ph := range f.Progs {
		if ph.Type == elf.PT_INTERP {
			b, err := io.ReadAll(ph.Open())
			if err == nil {
				out = append(out, strings.TrimRight(string(b), "\x00"))
			}
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return nil, fmt.Errorf("host image: %s: %w", p, err)
	}
	for _, l := range libs {
		found := false
		for _, d := range libDirs {
			if _, err := os.Stat(filepath.Join(d, l)); err == nil {
				out = append(out, filepath.Join(d, l))
				found = true
				break
			}
		}
		if !found {
			return nil, fmt.Errorf("host image: %s needs %s, not found in %s", p, l, strings.Join(libDirs, ":"))
		}
	}
	return out, nil
}

// layerOf writes files as a layer tar (parent directories first, owners 0).
func layerOf(files map[string]fileEntry) (v1.Layer, error) {
	dirs := map[string]bool{}
	var names []string
	for n, f := range files {
		names = append(names, n)
		if f.dir {
			dirs[n] = true
		}
		for d := filepath.Dir(n); d != "."; d = filepath.Dir(d) {
			if _, ok := files[d]; !ok {
				dirs[d] = true
			}
		}
	}
	for d := range dirs {
		if !slices.Contains(names, d) {
			names = append(names, d)
		}
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		f, ok := files[n]
		hdr := &tar.Header{Name: n, Mode: 0o755, Typeflag: tar.TypeDir, Format: tar.FormatPAX}
		switch {
		case !ok || f.dir:
			hdr.Name += "/"
			if ok {
				hdr.Mode = f.mode
			}
		case f.link != "":
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, f.link, f.mode
		default:
			hdr.Typeflag, hdr.Size, hdr.Mode = tar.TypeReg, int64(len(f.data)), f.mode
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("host image: %w", err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.data); err != nil {
				return nil, fmt.Errorf("host image: %w", err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("host image: %w", err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
	if err != nil {
		return nil, fmt.Errorf("host image: %w", err)
	}
	return l, nil
}
