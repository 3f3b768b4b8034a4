package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-fs/strata/internal/mounts"
)

// TestPodman runs real podman with strata as its overlay driver's
// mount_program, on an image built here from busybox: a container deletes a
// file and replaces a directory (rm -r d; mkdir d, where fuse-overlayfs loses
// the deletion), podman commit makes an image of it, and that image shows
// exactly what the container saw. Nothing stays mounted after podman rm.
func TestPodman(t *testing.T) {
	requireMount(t)
	for _, tool := range []string{"podman", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (.ci/run installs it)", tool)
		}
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("needs busybox (busybox-static)")
	}
	if out, _ := exec.Command("ldd", busybox).CombinedOutput(); !strings.Contains(string(out), "not a dynamic") {
		t.Skip("needs a static busybox (busybox-static)")
	}
	d := t.TempDir()

	// The image: busybox, a file to delete, a directory to replace.
	rootfs := filepath.Join(d, "rootfs")
	for _, dir := range []string{"bin", "d"} {
		if err := os.MkdirAll(filepath.Join(rootfs, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"d/x": "lower x", "keep": "kept", "gone": "to delete"}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(rootfs, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"sh", "ls", "cat", "rm", "mkdir", "echo", "find", "sort"} {
		if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", applet)); err != nil {
			t.Fatal(err)
		}
	}
	tarball := filepath.Join(d, "rootfs.tar")
	if out, err := exec.Command("tar", "-C", rootfs, "-cf", tarball, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}

	// podman, offline, on a store of its own, strata as mount_program.
	program := filepath.Join(d, "strata-overlayfs")
	if err := os.Symlink(binary, program); err != nil {
		t.Fatal(err)
	}
	graph, run := filepath.Join(d, "graph"), filepath.Join(d, "run")
	storageConf := filepath.Join(d, "storage.conf")
	write := func(path, content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(storageConf, `[storage]
driver = "overlay"
runroot = "`+run+`"
graphroot = "`+graph+`"
[storage.options.overlay]
mount_program = "`+program+`"
`)
	// runc: crun refuses hybrid cgroup hosts. No ulimits beyond the machine's.
	containersConf := filepath.Join(d, "containers.conf")
	write(containersConf, `[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
`)
	env := append(os.Environ(), "CONTAINERS_STORAGE_CONF="+storageConf, "CONTAINERS_CONF="+containersConf)
	podman := func(args ...string) string {
		t.Helper()
		c := exec.Command("podman", args...)
		c.Env = env
		out, err := c.CombinedOutput()
		if err != nil {
			t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	t.Cleanup(func() {
		for _, args := range [][]string{{"rm", "-af"}, {"rmi", "-af"}} {
			c := exec.Command("podman", args...)
			c.Env = env
			_ = c.Run() // best effort; what stays mounted is checked below
		}
		ms, _ := mounts.Self()
		for _, m := range ms {
			if strings.HasPrefix(m.Mountpoint, d) {
				t.Errorf("%s still mounted after podman rm; detaching", m.Mountpoint)
				_ = mounts.Detach(m.Mountpoint)
			}
		}
	})

	podman("import", tarball, "localhost/strata-test:1")
	const look = `cd / && find bin d keep gone 2>/dev/null | sort; cat /d/* /keep`
	saw := podman("run", "--name", "c1", "--network", "none", "localhost/strata-test:1", "sh", "-c",
		`cat /d/x && rm /gone && rm -r /d && mkdir /d && echo new > /d/y && `+look)
	if !strings.HasPrefix(saw, "lower x") || strings.Contains(saw, "gone") || strings.Contains(saw, "d/x") {
		t.Fatalf("the container saw:\n%s", saw)
	}
	saw = strings.TrimPrefix(saw, "lower x")
	podman("commit", "c1", "localhost/strata-test:2")
	podman("rm", "c1")
	again := podman("run", "--rm", "--network", "none", "localhost/strata-test:2", "sh", "-c", look)
	if again != saw {
		t.Errorf("the committed image shows\n%s\nthe container saw\n%s", again, saw)
	}
	ms, err := mounts.Self()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if strings.HasPrefix(m.Mountpoint, d) {
			t.Errorf("after podman rm: %s still mounted (%s)", m.Mountpoint, m.FSType)
		}
	}
}
