package demo

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/mounts"
	"github.com/strata-fs/strata/internal/sandbox"
	"github.com/strata-fs/strata/whiteout"
)

// TestMain lets this test binary be a container's init stage: RunContainer
// starts /proc/self/exe.
func TestMain(m *testing.M) {
	if sandbox.IsInit() {
		sandbox.Init()
	}
	os.Exit(m.Run())
}

func TestDemoRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	dir := t.TempDir()
	var out bytes.Buffer
	if err := RunContainer(context.Background(), &out, Options{Dir: dir}); err != nil {
		t.Fatalf("demo run: %v\n%s", err, out.String())
	}
	text := out.String()
	for _, want := range []string{
		"I am PID 1 on host box",
		`.wh.old-cache.txt    empty file: whiteout, hides "old-cache.txt" below`,
		`config.txt           "color=green\n"`,
		`config.txt           "color=blue\n"`,
		`old-cache.txt        "stale data\n"`,
		"It exited with code 0",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("left behind in %s: %v (%v)", dir, ents, err)
	}
}

func TestDemo(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	for _, f := range []whiteout.Format{whiteout.OCI, whiteout.Overlay} {
		t.Run(f.String(), func(t *testing.T) {
			dir := t.TempDir()
			var out bytes.Buffer
			if err := Run(context.Background(), &out, Options{Whiteout: f, Dir: dir, Keep: true}); err != nil {
				t.Fatalf("demo: %v\n%s", err, out.String())
			}
			ents, err := os.ReadDir(dir)
			if err != nil || len(ents) != 1 {
				t.Fatalf("demo dirs in %s: %v, %v; want one", dir, ents, err)
			}
			root := filepath.Join(dir, ents[0].Name())
			if _, ok, _ := mounts.Lookup(filepath.Join(root, "merged")); ok {
				t.Fatal("merged/ still mounted")
			}
			text := out.String()
			for _, want := range []string{
				`bin/hello            from app     "hello v2 (from app)\n"`,
				`upper/etc/hosts (the copy)         "127.0.0.1 localhost\n10.0.0.2 db\n"`,
				`base/etc/hosts (unchanged)         "127.0.0.1 localhost\n"`,
				"== 7. Unmount ==",
			} {
				if !strings.Contains(text, want) {
					t.Errorf("output lacks %q:\n%s", want, text)
				}
			}

			// What the story told is what is on disk.
			read := func(rel string) string {
				b, err := os.ReadFile(filepath.Join(root, rel))
				if err != nil {
					t.Errorf("read %s: %v", rel, err)
				}
				return string(b)
			}
			if got := read("upper/etc/hosts"); got != "127.0.0.1 localhost\n10.0.0.2 db\n" {
				t.Errorf("upper/etc/hosts: got %q", got)
			}
			if got := read("base/etc/hosts"); got != "127.0.0.1 localhost\n" {
				t.Errorf("base/etc/hosts changed: got %q", got)
			}
			if got := read("base/docs/old-notes.txt"); got == "" {
				t.Error("base/docs/old-notes.txt changed")
			}
			whiteoutAt := "upper/docs/.wh.old-notes.txt"
			if f == whiteout.Overlay {
				whiteoutAt = "upper/docs/old-notes.txt"
			}
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(root, whiteoutAt), &st); err != nil {
				t.Errorf("whiteout: %v", err)
			} else if k, target := whiteout.Classify(filepath.Base(whiteoutAt), st.Mode, st.Rdev); k != whiteout.Whiteout || target != "old-notes.txt" {
				t.Errorf("%s: got %v of %q, want a whiteout of old-notes.txt", whiteoutAt, k, target)
			}
			if f == whiteout.OCI {
				if _, err := os.Stat(filepath.Join(root, "upper/cache", whiteout.OpaqueMarker)); err != nil {
					t.Errorf("opaque marker: %v", err)
				}
			} else if describeDir(filepath.Join(root, "upper/cache")) == "" {
				t.Error("upper/cache: no opaque xattr")
			}
			if ents, err := os.ReadDir(filepath.Join(root, "upper/cache")); err != nil || len(ents) == 0 {
				t.Errorf("upper/cache: %v, %v", ents, err)
			}
		})
	}
}

func TestDemoRemovesItsDir(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
	dir := t.TempDir()
	var out bytes.Buffer
	if err := Run(context.Background(), &out, Options{Dir: dir}); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("left behind in %s: %v (%v)", dir, ents, err)
	}
}

func TestDemoCancelled(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	if err := Run(ctx, &bytes.Buffer{}, Options{Dir: dir}); err == nil {
		t.Error("got nil, want the context's error")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}
