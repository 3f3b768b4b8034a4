package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/strata-fs/strata/internal/cgroups"
	"github.com/strata-fs/strata/internal/hostimage"
	"github.com/strata-fs/strata/internal/mounts"
	store "github.com/strata-fs/strata/layers"
)

// The tests of `strata run` and friends run the strata binary, as a user
// does, on a store of their own with an image built from this host's busybox
// (package hostimage): base layer the system, top layer the app's files.

var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
)

// strataBinary builds cmd/strata once for the package.
func strataBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "strata-run-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildBin = filepath.Join(dir, "strata")
		out, err := exec.Command("go", "build", "-o", buildBin, "../cmd/strata").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

// appFiles is the image's top layer.
var appFiles = []hostimage.File{
	{Path: "data/old.txt", Content: "old\n"},
	{Path: "data/keep.txt", Content: "keep\n"},
}

// runEnv is a store with the image "app" in it, and the strata binary.
type runEnv struct {
	t    *testing.T
	bin  string
	root string
}

func newRunEnv(t *testing.T) *runEnv {
	t.Helper()
	requireRoot(t)
	if _, err := os.Stat(hostimage.Busybox); err != nil {
		t.Skip("needs a static /bin/busybox (apt-get install busybox-static)")
	}
	e := &runEnv{t: t, bin: strataBinary(t), root: t.TempDir()}
	s, err := store.OpenStore(e.root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hostimage.Import(context.Background(), s, "app", appFiles); err != nil {
		t.Fatal(err)
	}
	before := ourCgroups(t)
	t.Cleanup(func() {
		// Whatever a test did, nothing of it stays mounted, and no
		// cgroup of its containers is left.
		for _, c := range e.names() {
			_, _, _ = e.strata("rm", "-f", c)
		}
		ms, err := mounts.Self()
		if err != nil {
			t.Error(err)
		}
		for _, m := range ms {
			if strings.HasPrefix(m.Mountpoint, e.root) {
				t.Errorf("left mounted: %s", m.Mountpoint)
				_ = mounts.Detach(m.Mountpoint) // never leave one behind
			}
		}
		// Other runs on the host (a second `go test`) may have
		// containers of their own, whose cgroups come and go: a
		// leftover is one that stays.
		var left []string
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			left = slices.DeleteFunc(ourCgroups(t), func(c string) bool { return slices.Contains(before, c) })
			if len(left) == 0 || time.Now().After(deadline) {
				break
			}
		}
		for _, c := range left {
			t.Errorf("cgroup left behind: %s", c)
		}
	})
	return e
}

// ourCgroups lists the cgroups named like a container id under strata's
// parent.
func ourCgroups(t *testing.T) []string {
	h, err := cgroups.Detect()
	if err != nil {
		return nil
	}
	names, err := h.List()
	if err != nil {
		t.Fatal(err)
	}
	id := regexp.MustCompile(`^[0-9a-f]{32}$`)
	return slices.DeleteFunc(names, func(n string) bool { return !id.MatchString(n) })
}

// strata runs the binary on the env's store and returns its exit code and
// output.
func (e *runEnv) strata(args ...string) (code int, stdout, stderr string) {
	e.t.Helper()
	return e.inside(nil, args...)
}

// must runs strata and fails the test unless it exits 0.
func (e *runEnv) must(args ...string) string {
	e.t.Helper()
	code, out, errs := e.strata(args...)
	if code != 0 {
		e.t.Fatalf("strata %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func (e *runEnv) names() []string {
	ents, _ := os.ReadDir(filepath.Join(e.root, "containers")) // none yet is no names
	var ns []string
	for _, en := range ents {
		if !strings.HasPrefix(en.Name(), ".") {
			ns = append(ns, en.Name())
		}
	}
	return ns
}

// layerDirs are the image's layer directories, top first.
func (e *runEnv) layerDirs() []string {
	s, err := store.OpenStore(e.root)
	if err != nil {
		e.t.Fatal(err)
	}
	st, err := s.Stack("app")
	if err != nil {
		e.t.Fatal(err)
	}
	return st.Lowers
}

// treeSum hashes every name, mode and content under dir.
func treeSum(t *testing.T, dir string) string {
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		_, _ = fmt.Fprintf(h, "%s %v\n", strings.TrimPrefix(p, dir), fi.Mode()) // a hash does not fail
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestRunNamespaces(t *testing.T) {
	e := newRunEnv(t)
	script := `echo pid=$$; hostname; ls -d /proc/[0-9]* | wc -l; cat /etc/hostname;
		grep -E ' /proc | /sys | /dev ' /proc/mounts; ls /dev; cat /proc/timer_list | wc -c;
		ls -A /sys/firmware | wc -l; (echo x > /proc/sysrq-trigger) 2>/dev/null && echo sysrq-writable; true`
	code, out, errs := e.strata("run", "--rm", "--hostname", "box", "app", "sh", "-c", script)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if lines[0] != "pid=1" {
		t.Errorf("the command's pid: %s, want pid=1", lines[0])
	}
	if lines[1] != "box" || lines[3] != "box" {
		t.Errorf("hostname, /etc/hostname: %q, %q; want box", lines[1], lines[3])
	}
	// The shell, and ls itself: the host's processes are not there.
	if n, _ := strconv.Atoi(strings.TrimSpace(lines[2])); n > 3 {
		t.Errorf("%d processes in /proc; want the container's own (<= 3)", n)
	}
	for _, want := range []string{
		"proc /proc proc rw,nosuid,nodev,noexec",
		"sysfs /sys sysfs ro,nosuid,nodev,noexec",
		"tmpfs /dev tmpfs rw,nosuid",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("mounts lack %q:\n%s", want, out)
		}
	}
	for _, dev := range []string{"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx"} {
		if !regexp.MustCompile(`(?m)^` + dev + `$`).MatchString(out) {
			t.Errorf("/dev lacks %s:\n%s", dev, out)
		}
	}
	if strings.Contains(out, "sysrq-writable") {
		t.Errorf("/proc/sysrq-trigger is writable")
	}
	if _, err := os.Stat("/proc/timer_list"); err == nil && !strings.Contains(out, "\n0\n") {
		t.Errorf("/proc/timer_list is not masked:\n%s", out)
	}
}

func TestRunLowersUnchanged(t *testing.T) {
	e := newRunEnv(t)
	lowers := e.layerDirs()
	var before []string
	for _, l := range lowers {
		before = append(before, treeSum(t, l))
	}
	e.must("run", "--name", "c1", "app", "sh", "-c",
		`rm /data/old.txt && echo more >> /data/keep.txt && echo new > /data/new.txt && rm /bin/ls && ls /data`)
	for i, l := range lowers {
		if got := treeSum(t, l); got != before[i] {
			t.Errorf("layer %s changed", l)
		}
	}
	upper := filepath.Join(e.root, "containers/c1/upper")
	for rel, want := range map[string]string{
		"data/.wh.old.txt": "",
		"data/keep.txt":    "keep\nmore\n",
		"data/new.txt":     "new\n",
		"bin/.wh.ls":       "",
	} {
		b, err := os.ReadFile(filepath.Join(upper, rel))
		if err != nil || string(b) != want {
			t.Errorf("upper %s: %q, %v; want %q", rel, b, err, want)
		}
	}
	// The init layer's files are not in the upper.
	if _, err := os.Lstat(filepath.Join(upper, "etc/hostname")); err == nil {
		t.Errorf("upper has etc/hostname")
	}
	// A second container of the image sees the image as it was.
	out := e.must("run", "--rm", "app", "cat", "/data/old.txt")
	if out != "old\n" {
		t.Errorf("old.txt in a new container: %q", out)
	}
	// commit NAME: the upper as a layer, without the init layer's files.
	e.must("commit", "c1", "-t", "app:2")
	out = e.must("run", "--rm", "app:2", "sh", "-c", "ls /data; cat /data/keep.txt")
	if out != "keep.txt\nnew.txt\nkeep\nmore\n" {
		t.Errorf("the committed image: %q", out)
	}
	e.must("rm", "c1")
	if _, err := os.Stat(filepath.Join(e.root, "containers/c1")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("rm left the container's directory: %v", err)
	}
}

func TestRunBadInput(t *testing.T) {
	e := newRunEnv(t)
	e.must("run", "--name", "taken", "app", "true")
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"run", "--rm", "app", "sh", "-c", "exit 3"}, 3, ""},
		{[]string{"run", "--rm", "app", "sh", "-c", `sh -c 'kill -9 $$'; exit $?`}, 137, ""},
		{[]string{"run", "--rm", "app", "nosuch"}, 127, `exec: "nosuch": not found in image app`},
		{[]string{"run", "--rm", "app", "/etc/passwd"}, 126, "permission denied"},
		{[]string{"run", "--rm", "nope", "true"}, 2, "no such image"},
		{[]string{"run", "--rm", "--memory", "12Q", "app", "true"}, 2, `"12Q"`},
		{[]string{"run", "--rm", "--cpus", "x", "app", "true"}, 2, "--cpus"},
		{[]string{"run", "--name", "taken", "app", "true"}, 2, "name in use"},
		{[]string{"run", "--name", "-bad/", "app", "true"}, 2, "container name"},
		{[]string{"run", "-d", "app", "nosuch"}, 127, "not found in image app"},
		{[]string{"run", "-d", "app", "/etc/passwd"}, 126, "permission denied"},
		{[]string{"exec", "taken", "true"}, 2, "not running"},
		{[]string{"exec", "nope", "true"}, 2, "no such container"},
		{[]string{"commit", "nope"}, 2, "no such container"},
	} {
		code, _, errs := e.strata(c.args...)
		if code != c.code || !strings.Contains(errs, c.msg) || strings.Count(errs, "\n") > 1 {
			t.Errorf("strata %s: exit %d, %q; want %d and one line with %q", strings.Join(c.args, " "), code, errs, c.code, c.msg)
		}
	}
	// Only "taken" is left: the failed runs left no container.
	if got := e.names(); !slices.Equal(got, []string{"taken"}) {
		t.Errorf("containers: %v; want [taken]", got)
	}
}

// cgroupTest skips t unless the host's cgroups have controller in a v1
// hierarchy, the one strata uses on this kind of host; the v2 runs skip with
// a message when the unified tree lacks the controller.
func cgroupTest(t *testing.T, controller string) {
	h, err := cgroups.Detect()
	if err != nil {
		t.Skipf("no cgroups: %v", err)
	}
	switch h.Mode() {
	case cgroups.V2:
		b, err := os.ReadFile(filepath.Join(h.Unified, "cgroup.controllers"))
		if err != nil || !slices.Contains(strings.Fields(string(b)), controller) {
			t.Skipf("cgroup v2 without the %s controller", controller)
		}
	default:
		if h.V1[controller] == "" {
			t.Skipf("no v1 %s controller", controller)
		}
		if h.Unified != "" {
			b, _ := os.ReadFile(filepath.Join(h.Unified, "cgroup.controllers")) // empty if unreadable
			if !slices.Contains(strings.Fields(string(b)), controller) {
				t.Logf("hybrid host: %s is a v1 controller here; the unified tree lacks it, so there is no v2 run of this test", controller)
			}
		}
	}
}

func TestRunMemoryLimit(t *testing.T) {
	cgroupTest(t, "memory")
	e := newRunEnv(t)
	// Doubling a shell variable: past 16 MiB within a second or two.
	code, _, errs := e.strata("run", "--rm", "--memory", "16M", "app", "sh", "-c",
		`x=0123456789abcdef; while true; do x="$x$x"; done`)
	if code != 137 || strings.TrimSpace(errs) != "strata: killed: out of memory" {
		t.Errorf("exit %d, %q; want 137 and killed: out of memory", code, errs)
	}
	// Under the limit, the same shell is fine.
	e.must("run", "--rm", "--memory", "64M", "app", "sh", "-c", `x=0123456789abcdef; for i in 1 2 3 4 5 6 7 8 9 10; do x="$x$x"; done`)
}

func TestRunPidsLimit(t *testing.T) {
	cgroupTest(t, "pids")
	e := newRunEnv(t)
	// A fork loop in a shell that says which fork it tries; busybox sh
	// gives up at the first that fails. PID 1 and the loop's shell count.
	code, out, errs := e.strata("run", "--rm", "--pids", "10", "app", "sh", "-c",
		`sh -c 'for i in $(seq 40); do echo $i; sleep 2 & done'; exit 0`)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	f := strings.Fields(out)
	last, err := strconv.Atoi(f[len(f)-1])
	if err != nil || last > 10 || !strings.Contains(errs, "can't fork") {
		t.Errorf("fork loop under --pids 10: tried %q, %q; want a fork refused by the 9th", out, errs)
	}
}

func TestRunCPUQuota(t *testing.T) {
	cgroupTest(t, "cpu")
	e := newRunEnv(t)
	// A busy loop for 2 s of wall time; its CPU time (utime+stime, in
	// clock ticks of 1/100 s) from /proc.
	code, out, errs := e.strata("run", "--rm", "--cpus", "0.25", "app", "sh", "-c",
		`sh -c 'while :; do :; done' & p=$!; sleep 2; cat /proc/$p/stat; kill $p`)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	f := strings.Fields(out)
	if len(f) < 15 {
		t.Fatalf("stat: %q", out)
	}
	utime, _ := strconv.Atoi(f[13])
	stime, _ := strconv.Atoi(f[14])
	cpu := float64(utime+stime) / 100
	// The quota is 0.5 s of CPU in 2 s. Loose: the machine is shared, and
	// the loop starts a little late.
	if cpu > 0.8 || cpu < 0.05 {
		t.Errorf("CPU time in 2 s at --cpus 0.25: %.2f s; want about 0.5 s", cpu)
	}
	t.Logf("CPU time in 2 s at --cpus 0.25: %.2f s", cpu)
}

func TestRunDetachedExecStopRm(t *testing.T) {
	e := newRunEnv(t)
	out := e.must("run", "-d", "--name", "web", "--memory", "64M", "app", "sh", "-c",
		`echo ready > /tmp/mark; trap 'echo bye; exit 7' TERM; while :; do sleep 0.1; done`)
	if out != "web\n" {
		t.Errorf("run -d printed %q; want the name", out)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(e.must("ps", "--format", "json")), &list); err != nil || len(list) != 1 ||
		list[0]["name"] != "web" || list[0]["status"] != "running" {
		t.Fatalf("ps --format json: %v, %v", list, err)
	}
	if e.must("ps", "-q") != "web\n" {
		t.Errorf("ps -q")
	}
	// exec: the same pid namespace and files.
	out = e.must("exec", "web", "sh", "-c", `cat /tmp/mark; cat /proc/1/cmdline | tr '\0' ' '; echo; echo $$`)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || lines[0] != "ready" || !strings.HasPrefix(lines[1], "sh -c echo ready") || lines[2] == "1" {
		t.Errorf("exec saw %q; want the mark, the container's PID 1, a pid of its own", lines)
	}
	if code, _, _ := e.strata("exec", "web", "sh", "-c", "exit 5"); code != 5 {
		t.Errorf("exec exit code %d, want 5", code)
	}
	// stop: SIGTERM reaches the trap.
	e.must("stop", "web")
	if list = nil; json.Unmarshal([]byte(e.must("ps", "-a", "--format", "json")), &list) != nil || len(list) != 1 ||
		list[0]["status"] != "exited" || list[0]["exitCode"] != float64(7) {
		t.Errorf("ps -a after stop: %v; want exited (7)", list)
	}
	if e.must("ps", "-q") != "" {
		t.Errorf("ps lists a stopped container")
	}
	if b, _ := os.ReadFile(filepath.Join(e.root, "containers/web/log")); string(b) != "bye\n" {
		t.Errorf("log: %q", b)
	}
	// stop of one that ignores SIGTERM: SIGKILL after --time.
	e.must("run", "-d", "--name", "stubborn", "app", "sleep", "100")
	start := time.Now()
	e.must("stop", "-t", "1", "stubborn")
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("stop -t 1 took %v", d)
	}
	if code, _, errs := e.strata("rm", "web", "stubborn"); code != 0 {
		t.Errorf("rm: %d %s", code, errs)
	}
	if len(e.names()) != 0 {
		t.Errorf("containers after rm: %v", e.names())
	}
}

func TestRunSupervisorKilled(t *testing.T) {
	e := newRunEnv(t)
	e.must("run", "-d", "--name", "orphan", "--memory", "64M", "app", "sleep", "100")
	b, err := os.ReadFile(filepath.Join(e.root, "containers/orphan/state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Supervisor int }
	if err := json.Unmarshal(b, &st); err != nil || st.Supervisor == 0 {
		t.Fatalf("state: %s, %v", b, err)
	}
	if err := syscall.Kill(st.Supervisor, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Its container dies with it (Pdeathsig); ps then finds the lock free
	// and cleans up: the dead mount, the cgroup.
	deadline := time.Now().Add(10 * time.Second)
	for syscall.Kill(st.Supervisor, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	out := e.must("ps", "-a")
	if !strings.Contains(out, "exited (-1)") {
		t.Errorf("ps -a after the supervisor died:\n%s", out)
	}
	if _, mounted, _ := mounts.Lookup(filepath.Join(e.root, "containers/orphan/rootfs")); mounted {
		t.Errorf("the dead union is still mounted")
	}
	e.must("rm", "orphan")
}

func TestRunInitAndTty(t *testing.T) {
	e := newRunEnv(t)
	// --init: the command is PID 1's child, and its exit code comes back.
	// (The init's Go threads take pids too: the command's is not 2.)
	code, out, _ := e.strata("run", "--rm", "--init", "app", "sh", "-c", `echo $$; cat /proc/1/cmdline; exit 4`)
	if lines := strings.SplitN(out, "\n", 2); code != 4 || len(lines) != 2 || lines[0] == "1" || !strings.HasPrefix(lines[1], "strata-init") {
		t.Errorf("--init: exit %d, %q; want 4, the command a child of strata-init", code, out)
	}
	// -t: the command's stdin and stdout are a terminal.
	code, out, errs := e.strata("run", "--rm", "-t", "app", "sh", "-c", `[ -t 0 ] && [ -t 1 ] && echo tty`)
	if code != 0 || strings.TrimSpace(out) != "tty" {
		t.Errorf("-t: exit %d, %q %q", code, out, errs)
	}
}

func TestRunLayers(t *testing.T) {
	e := newRunEnv(t)
	lowers := e.layerDirs() // top first
	app := t.TempDir()
	if err := os.WriteFile(filepath.Join(app, "hello"), []byte("hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := e.must("run", "--rm", "--layer", lowers[1], "--layer", app, "--", "/bin/sh", "-c", "cat /hello; ls /data 2>&1 | head -1")
	if !strings.HasPrefix(out, "hi\n") || strings.Contains(out, "keep.txt") {
		t.Errorf("--layer run: %q; want /hello, no /data", out)
	}
}

func TestRunSignalsAndUser(t *testing.T) {
	e := newRunEnv(t)
	// SIGTERM to strata reaches the command, whose exit code is strata's.
	c := exec.Command(e.bin, "run", "--rm", "app", "sh", "-c", `trap 'exit 9' TERM; echo ready; while :; do sleep 0.1; done`)
	c.Env = append(os.Environ(), "STRATA_ROOT="+e.root)
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := out.Read(buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("read: %q, %v", buf, err)
	}
	if err := c.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var exit *exec.ExitError
	if err := c.Wait(); !errors.As(err, &exit) || exit.ExitCode() != 9 {
		t.Errorf("after SIGTERM: %v; want exit 9", err)
	}
	// -u names from the image's /etc/passwd, -w made if missing, -e.
	got := e.must("run", "--rm", "-u", "nobody", "-w", "/tmp/wd", "-e", "GREETING=hi", "app", "sh", "-c", `id -u; pwd; echo $GREETING`)
	if got != "65534\n/tmp/wd\nhi\n" {
		t.Errorf("-u nobody -w /tmp/wd -e: %q", got)
	}
}
