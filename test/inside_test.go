package test

// Promise 8 of issue 7, "containers stay inside": a container of `strata run`
// cannot read the host's files (through /proc/1/root, symbolic links to /,
// "..", descriptors it inherits, mount propagation), cannot unmask what is
// masked, cannot write /sys or its own cgroup limits, and has none of the
// capabilities that would undo the rest (mount, modules, raw devices).
//
// Each test plants a secret on the host, under a path the container does not
// have, and fails if the secret's text ever shows in what the container
// prints. The probes run as a shell script inside; a probe prints
// "NAME: refused" when the attempt failed as it must, and anything else when it
// did not, so that a failure names the way out.

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/cgroups"
)

// hostSecret is a directory of the host with a file "secret" in it, whose
// text is a random token.
type hostSecret struct {
	dir, file, token string
}

func newHostSecret(t *testing.T) hostSecret {
	t.Helper()
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read does not fail
	s := hostSecret{token: "host-secret-" + hex.EncodeToString(b)}
	s.dir = filepath.Join(t.TempDir(), "secret-"+hex.EncodeToString(b))
	s.file = filepath.Join(s.dir, "secret")
	if err := os.Mkdir(s.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.file, []byte(s.token+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// probes is the shell function every script of this file starts with:
// `probe NAME CMD...` runs CMD and prints "NAME: refused" if it fails, else
// "NAME: done: " and what it printed.
const probes = `probe() { _p=$1; shift; if _o=$("$@" 2>&1); then echo "$_p: done: $_o"; else echo "$_p: refused"; fi; }
`

// inside runs strata with args on e's store, with extra as descriptors 3, 4,
// ... of strata (inherited without close-on-exec, as a shell passes them).
func (e *runEnv) inside(extra []*os.File, args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	var out, errb bytes.Buffer
	c := exec.Command(e.bin, args...)
	c.Env = append(os.Environ(), "STRATA_ROOT="+e.root)
	c.Stdout, c.Stderr = &out, &errb
	c.ExtraFiles = extra
	err := c.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		e.t.Fatalf("run strata %q: %v", args, err)
	}
	return code, out.String(), errb.String()
}

// checkProbes fails t for every probe of want that out does not report as
// refused, and if the secret's token is anywhere in out.
func checkProbes(t *testing.T, what, out string, s hostSecret, want ...string) {
	t.Helper()
	if strings.Contains(out, s.token) {
		t.Errorf("%s: the host's secret %s was read inside the container:\n%s", what, s.file, out)
	}
	for _, p := range want {
		if !strings.Contains(out, "\n"+p+": refused\n") && !strings.HasPrefix(out, p+": refused\n") {
			line := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(p) + `: .*$`).FindString(out)
			if line == "" {
				line = "(no result)"
			}
			t.Errorf("%s: probe %s was not refused: %s", what, p, line)
		}
	}
}

// escapeLayers makes two layers for --layer above the image's system layer,
// bottom first: symbolic links out of the root in every spelling, and pairs
// where a directory of one layer meets a symbolic link to the host's secret
// directory in the other (the union must not merge them).
func escapeLayers(t *testing.T, s hostSecret) (lower, upper string) {
	t.Helper()
	lower, upper = t.TempDir(), t.TempDir()
	for _, l := range []struct{ dir, name, target string }{
		{lower, "rootlink", "/"},
		{lower, "etcup", "/etc/../.."},
		{lower, "rel", "../../../../../.."},
		{lower, "hostdir", s.dir},
		{lower, "over", s.dir}, // a directory of the upper layer covers it
		{upper, "under", s.dir},
		{upper, "deep/rel", "../../../../.."},
	} {
		p := filepath.Join(l.dir, l.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(l.target, p); err != nil {
			t.Fatal(err)
		}
	}
	// "under" is a directory below its link, "over" one above its link.
	writeFiles(t, lower, map[string]string{"under/mine": "lower's own\n"})
	writeFiles(t, upper, map[string]string{"over/mine": "upper's own\n"})
	return lower, upper
}

func TestInsideNoHostPaths(t *testing.T) {
	e := newRunEnv(t)
	s := newHostSecret(t)
	lower, upper := escapeLayers(t, s)
	// A directory of the host held open by whoever runs strata, and
	// inherited: descriptor 9 of strata (3 to 5 the init stage takes
	// over for its pipes).
	hostDir, err := os.Open(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = hostDir.Close() }() // read-only
	inherit := []*os.File{nil, nil, nil, nil, nil, nil, hostDir}
	p := s.file
	script := probes + fmt.Sprintf(`
probe proc1root cat /proc/1/root%[1]s
probe procselfroot cat /proc/self/root%[1]s
for d in /proc/[0-9]*; do probe "procroot$d" cat $d/root%[1]s; done
probe rootlink cat /rootlink%[1]s
probe etcup cat /etcup%[1]s
probe rel cat /rel%[1]s
probe deeprel cat /deep/rel%[1]s
probe hostdir cat /hostdir/secret
probe dotdot cat /../../../..%[1]s
probe cddotdot sh -c 'cd / && cd ../../../.. && cat .%[1]s'
probe procdotdot cat /proc/self/cwd/../../..%[1]s
probe over-link cat /over/secret
probe under-link cat /under/secret
probe recreate sh -c 'rm /hostdir && mkdir /hostdir && cat /hostdir/secret'
for fd in /proc/$$/fd/*; do probe "fd-dir-$fd" cat $fd/secret; probe "fd-up-$fd" cat $fd/..%[1]s; done
echo "roots: $(ls -A /rootlink | tr '\n' ' ')|$(ls -A /etcup | tr '\n' ' ')|$(ls -A /rel | tr '\n' ' ')|$(ls -A /.. | tr '\n' ' ')|$(ls -A /proc/1/root | tr '\n' ' ')|$(ls -A / | tr '\n' ' ')"
echo "over: $(ls -A /over | tr '\n' ' ')"
echo "under: $(ls -A /under/ 2>&1 | tr '\n' ' ')"
echo "fds: $(ls /proc/self/fd | tr '\n' ' ')"
`, p)
	code, out, errs := e.inside(inherit, "run", "--name", "esc", "--layer", e.layerDirs()[1],
		"--layer", lower, "--layer", upper, "--", "/bin/sh", "-c", script)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	checkProbes(t, "run", out, s, "proc1root", "procselfroot", "rootlink", "etcup", "rel", "deeprel", "hostdir",
		"dotdot", "cddotdot", "procdotdot", "over-link", "under-link", "recreate")
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "procroot") || strings.HasPrefix(l, "fd-") {
			if !strings.HasSuffix(l, ": refused") {
				t.Errorf("run: %s", l)
			}
		}
	}
	// Every way to "/" names the container's root.
	roots := regexp.MustCompile(`(?m)^roots: (.*)$`).FindStringSubmatch(out)
	if roots == nil {
		t.Fatalf("no roots line:\n%s", out)
	}
	views := strings.Split(roots[1], "|")
	for i, v := range views {
		if v != views[len(views)-1] || !strings.Contains(v, "rootlink") {
			t.Errorf("view %d of / is %q; want the container's root %q", i, v, views[len(views)-1])
		}
	}
	// A directory of one layer over a link of another stands alone, and a
	// link over a directory is a link, resolved inside.
	if !strings.Contains(out, "over: mine \n") {
		t.Errorf("/over merged with the link below it:\n%s", out)
	}
	if !strings.Contains(out, "under: ls: /under/: No such file or directory") {
		t.Errorf("/under, a link to a path the container lacks:\n%s", out)
	}
	// Only stdin, stdout, stderr and ls's own directory.
	if !strings.Contains(out, "fds: 0 1 2 3 \n") {
		t.Errorf("descriptors inherited: %s", regexp.MustCompile(`(?m)^fds: .*$`).FindString(out))
	}

	// exec: the same, from a process that joins the namespaces later.
	e.must("run", "-d", "--name", "esc-d", "--layer", e.layerDirs()[1], "--layer", lower, "--layer", upper,
		"--", "/bin/sleep", "100")
	code, out, errs = e.inside(inherit, "exec", "esc-d", "/bin/sh", "-c", probes+fmt.Sprintf(`
probe proc1root cat /proc/1/root%[1]s
probe procselfroot cat /proc/self/root%[1]s
probe rootlink cat /rootlink%[1]s
probe dotdot cat /../../..%[1]s
probe cwd-up cat /proc/self/cwd/../../..%[1]s
for fd in /proc/$$/fd/*; do probe "fd-dir-$fd" cat $fd/secret; done
echo "cwd: $(pwd) $(readlink /proc/self/cwd) $(readlink /proc/self/root)"
echo "fds: $(ls /proc/self/fd | tr '\n' ' ')"
`, p))
	if code != 0 {
		t.Fatalf("exec: exit %d\n%s%s", code, out, errs)
	}
	checkProbes(t, "exec", out, s, "proc1root", "procselfroot", "rootlink", "dotdot", "cwd-up")
	if !strings.Contains(out, "cwd: / / /\n") {
		t.Errorf("exec's cwd and root: %s", regexp.MustCompile(`(?m)^cwd: .*$`).FindString(out))
	}
	if !strings.Contains(out, "fds: 0 1 2 3 \n") {
		t.Errorf("exec: descriptors inherited: %s", regexp.MustCompile(`(?m)^fds: .*$`).FindString(out))
	}
	e.must("stop", "-t", "1", "esc-d")
}

// shareStoreRoot makes e's store root a shared mount, so that every mount
// below it (the containers' rootfs) is shared with the copies a new mount
// namespace gets, as on a systemd host where / is shared. Without it the
// propagation tests would pass whatever the init stage did. Containers of e
// are removed, and the bind undone, when the test ends.
func shareStoreRoot(t *testing.T, e *runEnv) {
	t.Helper()
	if err := unix.Mount(e.root, e.root, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s: %v", e.root, err)
	}
	t.Cleanup(func() {
		for _, c := range e.names() {
			_, _, _ = e.strata("rm", "-f", c)
		}
		if err := unix.Unmount(e.root, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", e.root, err)
		}
	})
	if err := unix.Mount("", e.root, "", unix.MS_SHARED, ""); err != nil {
		t.Fatalf("make %s shared: %v", e.root, err)
	}
}

// containerPid is the host pid of a running container's first process.
func (e *runEnv) containerPid(name string) int {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.root, "containers", name, "state.json"))
	if err != nil {
		e.t.Fatal(err)
	}
	var st struct{ Pid int }
	if err := json.Unmarshal(b, &st); err != nil || st.Pid == 0 {
		e.t.Fatalf("state of %s: %s, %v", name, b, err)
	}
	return st.Pid
}

// hostMountsUnder lists the host's mount points under dir.
func hostMountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var ms []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			ms = append(ms, f[4])
		}
	}
	return ms
}

func TestInsideMountPropagation(t *testing.T) {
	e := newRunEnv(t)
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Skip("needs nsenter (util-linux) to mount inside a container with every capability")
	}
	shareStoreRoot(t, e)
	e.must("run", "-d", "--name", "prop", "app", "sh", "-c", "mkdir -p /tmp/in /tmp/out && exec sleep 100")
	pid := e.containerPid("prop")
	rootfs := filepath.Join(e.root, "containers/prop/rootfs")
	e.must("exec", "prop", "sh", "-c", "while [ ! -d /tmp/out ]; do sleep 0.05; done")

	// A mount inside the container: the container has no CAP_SYS_ADMIN,
	// so a process of the host makes it there (nsenter), with a marker.
	if out, err := exec.Command(nsenter, "-t", strconv.Itoa(pid), "-m", "sh", "-c",
		"mount -t tmpfs inner /tmp/in && echo inner > /tmp/in/mark").CombinedOutput(); err != nil {
		t.Fatalf("mount inside the container: %v\n%s", err, out)
	}
	if got := e.must("exec", "prop", "cat", "/tmp/in/mark"); got != "inner\n" {
		t.Fatalf("the mount inside is not there: %q", got)
	}
	if ms := hostMountsUnder(t, rootfs); len(ms) != 0 {
		t.Errorf("a mount made inside the container reached the host: %v", ms)
	}
	if b, err := os.ReadFile(filepath.Join(rootfs, "tmp/in/mark")); err == nil {
		t.Errorf("the host reads the container's mount: %q", b)
	}

	// A mount of the host below the container's root, after it started.
	out := filepath.Join(rootfs, "tmp/out")
	if err := unix.Mount("outer", out, "tmpfs", 0, ""); err != nil {
		t.Fatalf("mount on the host: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(out, unix.MNT_DETACH) }) // first of the clean-ups: before the container goes
	if err := os.WriteFile(filepath.Join(out, "mark"), []byte("outer\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := e.must("exec", "prop", "sh", "-c", "ls -A /tmp/out; grep -c ' /tmp/out ' /proc/self/mountinfo; true")
	if got != "0\n" {
		t.Errorf("a mount of the host made after the start reached the container: %q; want nothing and 0", got)
	}
	if err := unix.Unmount(out, 0); err != nil {
		t.Errorf("unmount %s: %v", out, err)
	}

	// And the container itself cannot mount, or undo a mount.
	got = e.must("exec", "prop", "sh", "-c", probes+`
probe mount-tmpfs mount -t tmpfs x /tmp/out
probe mount-bind mount --bind / /tmp/out
probe umount-proc umount -l /proc
probe umount-in umount -l /tmp/in
probe unshare-mnt unshare -m true
`)
	checkProbes(t, "mount", got, hostSecret{token: "\x00"}, "mount-tmpfs", "mount-bind", "umount-proc", "umount-in", "unshare-mnt")
	e.must("stop", "-t", "1", "prop")
}

// The paths runc masks and makes read-only (its spec's defaults), which
// internal/sandbox must cover. Kept here, apart from the sandbox's lists, so
// that a path dropped there fails this test.
var (
	wantMasked   = []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"}
	wantReadonly = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

func TestInsideMaskedAndReadonly(t *testing.T) {
	e := newRunEnv(t)
	var script strings.Builder
	script.WriteString(probes)
	var masked, readonly, absent []string
	for _, p := range wantMasked {
		fi, err := os.Stat(p)
		if err != nil {
			absent = append(absent, p)
			continue
		}
		masked = append(masked, p)
		if fi.IsDir() {
			fmt.Fprintf(&script, "echo \"mask %s: $(ls -A %s | wc -l)\"\n", p, p)
		} else {
			fmt.Fprintf(&script, "echo \"mask %s: $(cat %s | wc -c)\"\n", p, p)
		}
		fmt.Fprintf(&script, "probe umount%s umount -l %s\n", p, p)
		fmt.Fprintf(&script, "probe rm%s rm -rf %s\n", p, p)
	}
	for _, p := range wantReadonly {
		if _, err := os.Stat(p); err != nil {
			absent = append(absent, p)
			continue
		}
		readonly = append(readonly, p)
		fmt.Fprintf(&script, "probe remount%s mount -o remount,rw %s\n", p, p)
	}
	t.Logf("this kernel lacks %v: not tested", absent)
	script.WriteString(`
probe write-sysrq sh -c 'echo h > /proc/sysrq-trigger'
probe write-proc-sys sh -c 'echo evil > /proc/sys/kernel/hostname'
probe write-core-pattern sh -c 'echo "|/evil" > /proc/sys/kernel/core_pattern'
probe write-sys sh -c 'echo 1 > /sys/kernel/uevent_helper'
probe touch-sys touch /sys/x
probe remount-sys mount -o remount,rw /sys
probe remount-proc-sys mount -o remount,rw /proc/sys
probe remount-root-ro-rw sh -c 'mount -o remount,ro / && mount -o remount,rw /'
cat /proc/self/mountinfo
`)
	code, out, errs := e.strata("run", "--rm", "app", "sh", "-c", script.String())
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	for _, p := range masked {
		if !strings.Contains(out, "\nmask "+p+": 0\n") && !strings.HasPrefix(out, "mask "+p+": 0\n") {
			t.Errorf("%s is not masked: %s", p, regexp.MustCompile(`(?m)^mask `+regexp.QuoteMeta(p)+`: .*$`).FindString(out))
		}
		checkProbes(t, "masked", out, hostSecret{token: "\x00"}, "umount"+p, "rm"+p)
	}
	var want []string
	for _, p := range readonly {
		want = append(want, "remount"+p)
	}
	checkProbes(t, "read-only", out, hostSecret{token: "\x00"}, append(want, "write-sysrq", "write-proc-sys",
		"write-core-pattern", "write-sys", "touch-sys", "remount-sys", "remount-proc-sys", "remount-root-ro-rw")...)
	// The mount table after the attempts: /sys and every read-only path
	// are mounted read-only.
	mi := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 5 && regexp.MustCompile(`^\d+$`).MatchString(f[0]) {
			mi[f[4]] = f[5]
		}
	}
	for _, p := range append([]string{"/sys"}, readonly...) {
		if !slices.Contains(strings.Split(mi[p], ","), "ro") {
			t.Errorf("%s is not a read-only mount: %q", p, mi[p])
		}
	}
}

// hostCgroupFile is the host's path of file in the cgroup of process pid in
// controller's hierarchy (v1), or in the unified one.
func hostCgroupFile(t *testing.T, h *cgroups.Host, pid int, controller, file string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		if mnt := h.V1[controller]; mnt != "" && slices.Contains(strings.Split(f[1], ","), controller) {
			return filepath.Join(mnt, f[2], file)
		}
		if h.V1[controller] == "" && f[0] == "0" && h.Unified != "" {
			return filepath.Join(h.Unified, f[2], file)
		}
	}
	t.Fatalf("no %s cgroup for pid %d in %s", controller, pid, b)
	return ""
}

func TestInsideCgroupLimits(t *testing.T) {
	cgroupTest(t, "memory")
	cgroupTest(t, "pids")
	h, err := cgroups.Detect()
	if err != nil {
		t.Fatal(err)
	}
	e := newRunEnv(t)
	e.must("run", "-d", "--name", "cg", "--memory", "32M", "--pids", "20", "app", "sleep", "100")
	pid := e.containerPid("cg")
	memFile, pidsFile := "memory.limit_in_bytes", "pids.max"
	if h.V1["memory"] == "" {
		memFile = "memory.max"
	}
	mem := hostCgroupFile(t, h, pid, "memory", memFile)
	pids := hostCgroupFile(t, h, pid, "pids", pidsFile)
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	if read(mem) != "33554432" || read(pids) != "20" {
		t.Fatalf("limits before: %s %s", read(mem), read(pids))
	}
	// From the container's first process's side (exec joins its
	// namespaces, cgroup and capabilities): every file a cgroup could be
	// raised through, and every way to mount a cgroup file system.
	out := e.must("exec", "cg", "sh", "-c", probes+`
echo "cgroupfs: $(ls -A /sys/fs/cgroup | wc -l)"
echo "own: $(cat /proc/self/cgroup | cut -d: -f3 | sort -u | tr '\n' ' ')"
n=0
for f in /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /sys/fs/cgroup/*/memory.limit_in_bytes /sys/fs/cgroup/*/pids.max /sys/fs/cgroup/*/*/*/pids.max; do
	n=$((n+1)); probe "write-$n" sh -c "echo max > $f"
done
mkdir -p /tmp/cg
probe mount-v1-memory mount -t cgroup -o memory cgroup /tmp/cg
probe mount-v1-pids mount -t cgroup -o pids cgroup /tmp/cg
probe mount-v2 mount -t cgroup2 cgroup2 /tmp/cg
probe mount-sys-rw mount -t sysfs sysfs /tmp/cg
probe mount-proc mount -t proc proc /tmp/cg
probe escape-cgroupns unshare -C true
`)
	checkProbes(t, "cgroups", out, hostSecret{token: "\x00"}, "write-1", "write-2", "write-3", "write-4",
		"write-5", "mount-v1-memory", "mount-v1-pids", "mount-v2", "mount-sys-rw", "mount-proc", "escape-cgroupns")
	if !strings.Contains(out, "cgroupfs: 0\n") {
		t.Errorf("the container sees cgroup file systems in /sys/fs/cgroup:\n%s", out)
	}
	if !strings.Contains(out, "own: / \n") {
		t.Errorf("the container sees cgroup paths beyond its own (no cgroup namespace?):\n%s", out)
	}
	if read(mem) != "33554432" || read(pids) != "20" {
		t.Errorf("limits after the container's attempts: memory %s, pids %s; want 33554432, 20", read(mem), read(pids))
	}
	e.must("stop", "-t", "1", "cg")
}

func TestInsideDevicesModulesCapabilities(t *testing.T) {
	e := newRunEnv(t)
	script := probes + `
probe mknod-block mknod /tmp/disk b 8 0
probe mknod-dev-block mknod /dev/disk b 8 0
probe mknod-mem mknod /dev/mem2 c 1 1
probe mknod-kmsg mknod /dev/kmsg2 c 1 11
printf '\177ELFjunk' > /tmp/m.ko
probe insmod insmod /tmp/m.ko
probe modprobe-path sh -c 'echo /tmp/evil > /proc/sys/kernel/modprobe'
probe reboot-sysrq sh -c 'echo b > /proc/sysrq-trigger'
probe settime sh -c 'date -s 2000-01-01 >/dev/null 2>&1; [ "$(date +%Y)" = 2000 ]'
probe ip-link ip link add dummy0 type dummy
grep -E '^Cap(Eff|Bnd|Prm|Inh|Amb)' /proc/self/status
echo "procs: $(cat /proc/[0-9]*/comm | tr '\n' ' ')"
`
	code, out, errs := e.strata("run", "--rm", "app", "sh", "-c", script)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	checkProbes(t, "devices", out, hostSecret{token: "\x00"}, "mknod-block", "mknod-dev-block", "mknod-mem",
		"mknod-kmsg", "insmod", "modprobe-path", "reboot-sysrq", "settime", "ip-link")
	if !strings.Contains(out, "insmod: refused") {
		t.Errorf("insmod: %s", out)
	}
	// The capabilities that undo the fence are in no set: not effective,
	// not in the bounding set a setuid binary or execve could raise to.
	forbidden := map[string]int{"CAP_DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH, "CAP_LINUX_IMMUTABLE": unix.CAP_LINUX_IMMUTABLE,
		"CAP_NET_ADMIN": unix.CAP_NET_ADMIN, "CAP_SYS_MODULE": unix.CAP_SYS_MODULE, "CAP_SYS_RAWIO": unix.CAP_SYS_RAWIO,
		"CAP_SYS_PTRACE": unix.CAP_SYS_PTRACE, "CAP_SYS_ADMIN": unix.CAP_SYS_ADMIN, "CAP_SYS_BOOT": unix.CAP_SYS_BOOT,
		"CAP_SYS_TIME": unix.CAP_SYS_TIME, "CAP_MKNOD": unix.CAP_MKNOD, "CAP_MAC_ADMIN": unix.CAP_MAC_ADMIN,
		"CAP_SYSLOG": unix.CAP_SYSLOG, "CAP_BPF": unix.CAP_BPF, "CAP_PERFMON": unix.CAP_PERFMON}
	sets := regexp.MustCompile(`(?m)^(Cap\w+):\s+([0-9a-f]+)$`).FindAllStringSubmatch(out, -1)
	if len(sets) != 5 {
		t.Fatalf("capability sets: %q", sets)
	}
	for _, s := range sets {
		v, err := strconv.ParseUint(s[2], 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		for name, c := range forbidden {
			if v&(1<<c) != 0 {
				t.Errorf("%s holds %s (%s)", s[1], name, s[2])
			}
		}
	}
	// No process of the host: none of strata's, none of this test's, and
	// only the few of the script (the shell, a subshell, cat, tr).
	procs := regexp.MustCompile(`(?m)^procs: (.*)$`).FindStringSubmatch(out)
	if procs == nil {
		t.Fatalf("no procs line:\n%s", out)
	}
	self := filepath.Base(os.Args[0])
	if len(self) > 15 {
		self = self[:15] // comm is cut to 15 bytes
	}
	comms := strings.Fields(procs[1])
	if len(comms) > 6 || slices.Contains(comms, "strata") || slices.Contains(comms, self) {
		t.Errorf("processes of the host are visible: %q", comms)
	}
}
