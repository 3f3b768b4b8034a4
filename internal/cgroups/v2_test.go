package cgroups

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeV2 builds a cgroup2 tree in a temporary directory whose root has the
// controllers ctls, and a Host on it whose mkdir and rmdir play the kernel's
// part: a new directory gets the interface files of its parent's
// subtree_control, as a real one would.
func fakeV2(t *testing.T, ctls string) *Host {
	t.Helper()
	root := t.TempDir()
	files := func(dir, controllers string) {
		t.Helper()
		fs := map[string]string{
			"cgroup.controllers":     controllers,
			"cgroup.subtree_control": "",
			"cgroup.procs":           "",
			"cgroup.kill":            "",
		}
		for _, c := range strings.Fields(controllers) {
			switch c {
			case "memory":
				fs["memory.max"] = "max\n"
				fs["memory.swap.max"] = "max\n"
				fs["memory.current"] = "0\n"
				fs["memory.events"] = "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n"
				fs["memory.stat"] = "anon 0\nfile 0\ninactive_file 0\n"
			case "cpu":
				fs["cpu.max"] = "max 100000\n"
			case "pids":
				fs["pids.max"] = "max\n"
			}
		}
		for name, data := range fs {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	files(root, ctls)
	return &Host{
		Unified: root,
		Parent:  DefaultParent,
		mkdir: func(p string) error {
			if err := os.Mkdir(p, 0o755); err != nil {
				return err
			}
			// cgroup.controllers of a child: what the parent passes down.
			b, err := os.ReadFile(filepath.Join(filepath.Dir(p), "cgroup.subtree_control"))
			if err != nil {
				return err
			}
			var on []string
			for _, f := range strings.Fields(string(b)) {
				on = append(on, strings.TrimPrefix(f, "+"))
			}
			files(p, strings.Join(on, " "))
			return nil
		},
		rmdir: func(p string) error {
			ents, err := os.ReadDir(p)
			if err != nil {
				return err
			}
			for _, e := range ents {
				if e.IsDir() {
					return &fs.PathError{Op: "rmdir", Path: p, Err: errors.New("busy")}
				}
			}
			return os.RemoveAll(p)
		},
	}
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestV2Writes(t *testing.T) {
	h := fakeV2(t, "cpuset cpu io memory pids")
	if h.Mode() != V2 {
		t.Fatalf("got mode %v, want v2", h.Mode())
	}
	cg, err := h.Create("web", Limits{Memory: 64 << 20, CPUs: 0.5, Pids: 64})
	if err != nil {
		t.Fatal(err)
	}
	parent := filepath.Join(h.Unified, "strata")
	dir := filepath.Join(parent, "web")
	// The fake truncates at each write, so each file holds the last one:
	// every controller strata uses, enabled in one write at each level.
	for path, want := range map[string]string{
		filepath.Join(h.Unified, "cgroup.subtree_control"): "+memory +cpu +pids",
		filepath.Join(parent, "cgroup.subtree_control"):    "+memory +cpu +pids",
		filepath.Join(dir, "cgroup.subtree_control"):       "",
		filepath.Join(dir, "memory.max"):                   "67108864",
		filepath.Join(dir, "memory.swap.max"):              "0",
		filepath.Join(dir, "cpu.max"):                      "50000 100000",
		filepath.Join(dir, "pids.max"):                     "64",
	} {
		if got := read(t, path); got != want {
			t.Errorf("%s: got %q, want %q", path, got, want)
		}
	}
	if fd, ok := cg.FD(); !ok || fd < 0 {
		t.Errorf("FD: got %d, %v; want a descriptor", fd, ok)
	}

	if err := cg.Add(4242); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(dir, "cgroup.procs")); got != "4242" {
		t.Errorf("cgroup.procs: got %q, want 4242", got)
	}
	// Let the fake "kernel" answer the readers.
	for name, data := range map[string]string{
		"cgroup.procs":   "",
		"memory.current": "10000000\n",
		"memory.stat":    "anon 1\ninactive_file 4000000\nactive_file 5\n",
		"memory.events":  "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := cg.MemoryUsage(); err != nil || n != 6000000 {
		t.Errorf("MemoryUsage: got %d, %v; want 6000000", n, err)
	}
	if oom, err := cg.OOMKilled(); err != nil || !oom {
		t.Errorf("OOMKilled: got %v, %v; want true", oom, err)
	}

	// Load finds it again.
	cg2, err := h.Load("web")
	if err != nil {
		t.Fatal(err)
	}
	if names, err := h.List(); err != nil || len(names) != 1 || names[0] != "web" {
		t.Errorf("List: got %v, %v; want [web]", names, err)
	}
	if _, err := h.Create("web", Limits{}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Create again: got %v, want fs.ErrExist", err)
	}

	if err := cg.Destroy(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, filepath.Join(h.Unified, "cgroup.subtree_control")); got != "+memory +cpu +pids" {
		t.Errorf("root subtree_control after Destroy: %q", got)
	}
	if _, err := os.Stat(parent); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("parent left after the last Destroy: %v", err)
	}
	if _, ok := cg.FD(); ok {
		t.Error("FD after Destroy: still open")
	}
	// Idempotent, through either handle.
	if err := cg.Destroy(); err != nil {
		t.Errorf("second Destroy: %v", err)
	}
	if err := cg2.Destroy(); err != nil {
		t.Errorf("Destroy of the loaded one: %v", err)
	}
	if _, err := h.Load("web"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load after Destroy: got %v, want fs.ErrNotExist", err)
	}
}

func TestV2NoLimits(t *testing.T) {
	// Without limits, the controllers that are there are still enabled
	// (for memory.current and memory.events), and those that are not are
	// no error.
	h := fakeV2(t, "pids")
	cg, err := h.Create("a", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cg.Destroy() })
	dir := filepath.Join(h.Unified, "strata", "a")
	if got := read(t, filepath.Join(h.Unified, "strata", "cgroup.subtree_control")); got != "+pids" {
		t.Errorf("parent subtree_control: got %q, want +pids", got)
	}
	if got := read(t, filepath.Join(dir, "pids.max")); got != "max\n" {
		t.Errorf("pids.max: got %q, want it untouched", got)
	}
	// A second cgroup finds the controllers enabled and writes nothing.
	if err := os.WriteFile(filepath.Join(h.Unified, "cgroup.subtree_control"), []byte("pids\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.Unified, "strata", "cgroup.subtree_control"), []byte("pids\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cg2, err := h.Create("b", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cg2.Destroy() })
	if got := read(t, filepath.Join(h.Unified, "cgroup.subtree_control")); got != "pids\n" {
		t.Errorf("root subtree_control rewritten: %q", got)
	}
	if _, err := cg.MemoryUsage(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("MemoryUsage without the memory controller: got %v, want fs.ErrNotExist", err)
	}
}

func TestV2MissingController(t *testing.T) {
	h := fakeV2(t, "cpu pids")
	_, err := h.Create("web", Limits{Memory: 64 << 20, CPUs: 1})
	if !errors.Is(err, ErrNoController) {
		t.Fatalf("got %v, want ErrNoController", err)
	}
	for _, want := range []string{"memory", h.Unified} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	assertGone(t, h, "web")
}

func TestV2Rollback(t *testing.T) {
	// A write that fails halfway (pids.max is not there) leaves nothing.
	h := fakeV2(t, "memory cpu pids")
	mkdir := h.mkdir
	h.mkdir = func(p string) error {
		if err := mkdir(p); err != nil {
			return err
		}
		if filepath.Base(p) == "web" {
			return os.Remove(filepath.Join(p, "pids.max"))
		}
		return nil
	}
	_, err := h.Create("web", Limits{Memory: 8 << 20, Pids: 10})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "pids.max") {
		t.Fatalf("got %v, want a failure naming pids.max", err)
	}
	assertGone(t, h, "web")
}

func TestBadName(t *testing.T) {
	h := fakeV2(t, "memory")
	for _, name := range []string{"", ".", "..", "a/b", "x\x00"} {
		if _, err := h.Create(name, Limits{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Create(%q): got %v, want ErrInvalid", name, err)
		}
		if _, err := h.Load(name); !errors.Is(err, ErrInvalid) {
			t.Errorf("Load(%q): got %v, want ErrInvalid", name, err)
		}
	}
	if _, err := h.Create("a", Limits{Memory: -1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative memory: got %v, want ErrInvalid", err)
	}
}

// assertGone fails if a hierarchy of h has the cgroup name.
func assertGone(t *testing.T, h *Host, name string) {
	t.Helper()
	for _, root := range h.roots() {
		dir := filepath.Join(root, h.parent(), name)
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left behind (%v)", dir, err)
		}
	}
}
