package cgroups

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The tests below run on this machine's cgroups for real, as root. They
// start their loads as /bin/sh children or as this test binary run again
// (TestMain), each waiting on its stdin until it is in the cgroup.

// childEnv makes the test binary a child that allocates memory (see
// allocChild) instead of running tests.
const childEnv = "STRATA_CGROUPS_TEST_ALLOC_MB"

func TestMain(m *testing.M) {
	if mb := os.Getenv(childEnv); mb != "" {
		os.Exit(allocChild(mb))
	}
	code := m.Run()
	// No test may leave a cgroup behind, whatever way it ended.
	if h, err := Detect(); err == nil {
		for _, root := range h.roots() {
			left, _ := filepath.Glob(filepath.Join(root, DefaultParent, testPrefix()+"*"))
			for _, l := range left {
				fmt.Fprintf(os.Stderr, "cgroup left behind: %s\n", l)
				code = 1
			}
		}
	}
	os.Exit(code)
}

// allocChild waits for a line on stdin, then allocates mb MiB and touches
// every page of it, says "ready", and waits for stdin to close. Exit status
// 0 means it got it all.
func allocChild(mb string) int {
	n, err := strconv.Atoi(mb)
	if err != nil {
		return 2
	}
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		return 2
	}
	var hold [][]byte
	for range n {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		hold = append(hold, b)
	}
	fmt.Println("ready", len(hold))
	_, _ = io.Copy(io.Discard, in) // until the test closes stdin
	return 0
}

func testPrefix() string { return fmt.Sprintf("test-%d-", os.Getpid()) }

type testHost struct {
	name string
	h    *Host
}

// hosts are the ways this machine's cgroups can be driven: as detected and,
// on a hybrid host, its v1 hierarchies alone (a pure v1 host) and its
// unified hierarchy alone (a pure v2 host, with whatever controllers it
// has).
func hosts(t *testing.T) []testHost {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes cgroups")
	}
	d, err := Detect()
	if err != nil {
		t.Fatal(err)
	}
	hs := []testHost{{d.Mode().String(), d}}
	if d.Mode() == Hybrid {
		hs = append(hs,
			testHost{"v1", &Host{V1: d.V1, Parent: d.Parent}},
			testHost{"v2", &Host{Unified: d.Unified, Parent: d.Parent}})
	}
	return hs
}

// forEachHost runs f on each host in a subtest.
func forEachHost(t *testing.T, f func(t *testing.T, h *Host)) {
	for _, th := range hosts(t) {
		t.Run(th.name, func(t *testing.T) { f(t, th.h) })
	}
}

// has tells whether h can hold a limit of the controller ctl, and if not,
// why.
func has(h *Host, ctl string) (bool, string) {
	if h.Mode() != V2 {
		if h.V1[ctl] == "" {
			return false, fmt.Sprintf("no cgroup v1 hierarchy has the %s controller", ctl)
		}
		return true, ""
	}
	s, err := readFile(h.Unified, "cgroup.controllers")
	if err != nil {
		return false, err.Error()
	}
	if !slices.Contains(strings.Fields(s), ctl) {
		return false, fmt.Sprintf("the unified hierarchy at %s has no %s controller (it has: %q)", h.Unified, ctl, strings.TrimSpace(s))
	}
	return true, ""
}

func need(t *testing.T, h *Host, ctl string) {
	t.Helper()
	if ok, why := has(h, ctl); !ok {
		t.Skip(why)
	}
}

// newCgroup creates a cgroup for the test, which Destroys it when it ends
// and checks nothing is left.
func newCgroup(t *testing.T, h *Host, l Limits) Cgroup {
	t.Helper()
	name := testPrefix() + strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	cg, err := h.Create(name, l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cg.Destroy(); err != nil {
			t.Error(err)
		}
		assertGone(t, h, name)
	})
	return cg
}

// child is a process started in a cgroup, held on its stdin.
type child struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *output
}

// output collects what a child writes, for the test to read while it runs.
type output struct {
	mu sync.Mutex
	b  strings.Builder
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// start starts argv in cg: with clone3 into the cgroup where there is an FD
// (v2), else Added right after it starts. It waits on its stdin until
// release, so it does nothing before it is in the cgroup.
func start(t *testing.T, cg Cgroup, env []string, argv ...string) *child {
	t.Helper()
	c := &child{cmd: exec.Command(argv[0], argv[1:]...), out: &output{}}
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if fd, ok := cg.FD(); ok {
		c.cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
	}
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Kill it and what it started (which may hold its output pipe
		// open), then reap it. newCgroup's Destroy comes later and
		// checks; how the child ended was checked, or does not matter.
		if err := cg.Destroy(); err != nil {
			t.Error(err)
		}
		_ = c.cmd.Wait()
	})
	if _, ok := cg.FD(); !ok {
		if err := cg.Add(c.cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func (c *child) release(t *testing.T) {
	t.Helper()
	if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
}

// killedBy is the signal that ended a process, 0 if it exited.
func killedBy(err error) syscall.Signal {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return ws.Signal()
		}
	}
	return 0
}

func TestRealDetect(t *testing.T) {
	for _, th := range hosts(t) {
		h := th.h
		t.Logf("%s: v1 %v, unified %q", th.name, h.V1, h.Unified)
		for ctl, root := range h.V1 {
			if !exists(root, "cgroup.procs") {
				t.Errorf("v1 %s at %s: no cgroup.procs", ctl, root)
			}
		}
		if h.Unified != "" && !exists(h.Unified, "cgroup.controllers") {
			t.Errorf("unified at %s: no cgroup.controllers", h.Unified)
		}
	}
}

// TestRealAdd checks a process lands in the cgroup in every hierarchy, as
// /proc/PID/cgroup tells.
func TestRealAdd(t *testing.T) {
	forEachHost(t, func(t *testing.T, h *Host) {
		cg := newCgroup(t, h, Limits{})
		c := start(t, cg, nil, "/bin/sh", "-c", "read x")
		pid := c.cmd.Process.Pid
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		if err != nil {
			t.Fatal(err)
		}
		want := "/" + DefaultParent + "/" + cg.Name()
		wantLines := 0
		for _, ctl := range v1Controllers {
			if h.V1[ctl] != "" {
				wantLines++
			}
		}
		if h.Unified != "" {
			wantLines++
		}
		got := 0
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if strings.HasSuffix(line, ":"+want) {
				got++
			}
		}
		// cpu and cpuacct co-mounted make one line for both.
		if got == 0 || got > wantLines {
			t.Errorf("/proc/%d/cgroup: %d lines in %s, want %d:\n%s", pid, got, want, wantLines, b)
		}
		if pids, err := cg.Pids(); err != nil || !slices.Equal(pids, []int{pid}) {
			t.Errorf("Pids: got %v, %v; want [%d]", pids, err, pid)
		}
		c.release(t)
		if err := c.cmd.Wait(); err != nil {
			t.Errorf("child: %v", err)
		}
	})
}

// TestRealWrites reads back what Create wrote.
func TestRealWrites(t *testing.T) {
	forEachHost(t, func(t *testing.T, h *Host) {
		for _, ctl := range []string{"memory", "cpu", "pids"} {
			need(t, h, ctl)
		}
		cg := newCgroup(t, h, Limits{Memory: 64 << 20, CPUs: 1.5, Pids: 64})
		var want map[string]string
		switch c := cg.(type) {
		case *v1Cgroup:
			want = map[string]string{
				filepath.Join(c.dirs["memory"], "memory.limit_in_bytes"): "67108864",
				filepath.Join(c.dirs["cpu"], "cpu.cfs_quota_us"):         "150000",
				filepath.Join(c.dirs["cpu"], "cpu.cfs_period_us"):        "100000",
				filepath.Join(c.dirs["pids"], "pids.max"):                "64",
			}
			if memsw := filepath.Join(c.dirs["memory"], "memory.memsw.limit_in_bytes"); exists(c.dirs["memory"], "memory.memsw.limit_in_bytes") {
				want[memsw] = "67108864"
			} else {
				t.Log("no swap accounting: no memory.memsw.limit_in_bytes")
			}
		case *v2Cgroup:
			want = map[string]string{
				filepath.Join(c.dir, "memory.max"): "67108864",
				filepath.Join(c.dir, "cpu.max"):    "150000 100000",
				filepath.Join(c.dir, "pids.max"):   "64",
			}
		}
		for path, w := range want {
			if got := strings.TrimSpace(read(t, path)); got != w {
				t.Errorf("%s: got %q, want %q", path, got, w)
			}
		}
	})
}

func TestRealMemoryOOM(t *testing.T) {
	forEachHost(t, func(t *testing.T, h *Host) {
		need(t, h, "memory")
		cg := newCgroup(t, h, Limits{Memory: 32 << 20})
		if oom, err := cg.OOMKilled(); err != nil || oom {
			t.Fatalf("OOMKilled before: got %v, %v; want false", oom, err)
		}
		c := start(t, cg, []string{childEnv + "=256"}, "/proc/self/exe")
		c.release(t)
		err := c.cmd.Wait()
		if sig := killedBy(err); sig != syscall.SIGKILL {
			t.Fatalf("the child allocating 256 MiB under a 32 MiB limit: %v, want SIGKILL; output %q", err, c.out)
		}
		if oom, err := cg.OOMKilled(); err != nil || !oom {
			t.Errorf("OOMKilled: got %v, %v; want true", oom, err)
		}
	})
}

func TestRealMemoryUsage(t *testing.T) {
	forEachHost(t, func(t *testing.T, h *Host) {
		need(t, h, "memory")
		cg := newCgroup(t, h, Limits{Memory: 128 << 20})
		c := start(t, cg, []string{childEnv + "=48"}, "/proc/self/exe")
		c.release(t)
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(c.out.String(), "ready") {
			if time.Now().After(deadline) {
				t.Fatalf("child not ready: %q", c.out)
			}
			time.Sleep(10 * time.Millisecond)
		}
		n, err := cg.MemoryUsage()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("usage with 48 MiB allocated: %.1f MiB", float64(n)/(1<<20))
		if n < 48<<20 || n > 128<<20 {
			t.Errorf("MemoryUsage: got %d, want between 48 MiB and the 128 MiB limit", n)
		}
		if oom, err := cg.OOMKilled(); err != nil || oom {
			t.Errorf("OOMKilled: got %v, %v; want false", oom, err)
		}
		_ = c.stdin.Close()
		if err := c.cmd.Wait(); err != nil {
			t.Errorf("child: %v (%q)", err, c.out)
		}
	})
}

func TestRealPids(t *testing.T) {
	forEachHost(t, func(t *testing.T, h *Host) {
		need(t, h, "pids")
		const limit = 8
		cg := newCgroup(t, h, Limits{Pids: limit})
		// 30 sleeps, if it could; then it says so.
		c := start(t, cg, nil, "/bin/sh", "-c",
			`read x; i=0; while [ $i -lt 30 ]; do sleep 60 & i=$((i+1)); done; echo all 30; read x`)
		c.release(t)
		// Wait until the shell gives up or is done trying.
		deadline := time.Now().Add(10 * time.Second)
		var pids []int
		for {
			var err error
			if pids, err = cg.Pids(); err != nil {
				t.Fatal(err)
			}
			out := c.out.String()
			if strings.Contains(out, "fork") || strings.Contains(out, "all 30") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("fork loop: no failure and no end after 10s; %d processes; output %q", len(pids), out)
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("%d processes; shell says %q", len(pids), strings.TrimSpace(c.out.String()))
		if strings.Contains(c.out.String(), "all 30") {
			t.Errorf("the shell forked 30 sleeps under a limit of %d", limit)
		}
		if len(pids) > limit {
			t.Errorf("%d processes in the cgroup, limit %d", len(pids), limit)
		}
		var dir string
		if v1, ok := cg.(*v1Cgroup); ok {
			dir = v1.dirs["pids"]
		} else {
			dir = cg.(*v2Cgroup).dir
		}
		if n, err := readKey(dir, "pids.events", "max"); err != nil || n == 0 {
			t.Errorf("pids.events max: got %d, %v; want > 0", n, err)
		}
	})
}

// cpuTime is the user and system time of process pid so far.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The fields after the command name, which is in parentheses:
	// state is the 3rd field of stat, utime the 14th, stime the 15th.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	const clkTck = 100 // USER_HZ, the unit of stat's times on every Linux
	return time.Duration(ut+st) * time.Second / clkTck
}

func TestRealCPU(t *testing.T) {
	forEachHost(t, func(t *testing.T, h *Host) {
		need(t, h, "cpu")
		const cpus = 0.25
		cg := newCgroup(t, h, Limits{CPUs: cpus})
		c := start(t, cg, nil, "/bin/sh", "-c", "read x; while :; do :; done")
		c.release(t)
		pid := c.cmd.Process.Pid
		time.Sleep(200 * time.Millisecond)
		before, t0 := cpuTime(t, pid), time.Now()
		time.Sleep(2 * time.Second)
		used, wall := cpuTime(t, pid)-before, time.Since(t0)
		share := used.Seconds() / wall.Seconds()
		t.Logf("busy loop under --cpus %v: %v of CPU in %v (%.2f CPUs)", cpus, used, wall.Round(time.Millisecond), share)
		// Loose: the quota is enforced per 100ms period, the machine
		// is shared, and stat counts in 10ms ticks. Without the quota a
		// busy loop would get a whole CPU.
		if share > cpus*1.5 {
			t.Errorf("got %.2f CPUs, want about %v", share, cpus)
		}
		if share < 0.02 {
			t.Errorf("got %.2f CPUs: the loop hardly ran", share)
		}
		var dir string
		if v1, ok := cg.(*v1Cgroup); ok {
			dir = v1.dirs["cpu"]
		} else {
			dir = cg.(*v2Cgroup).dir
		}
		if n, err := readKey(dir, "cpu.stat", "nr_throttled"); err != nil || n == 0 {
			t.Errorf("cpu.stat nr_throttled: got %d, %v; want > 0", n, err)
		}
	})
}

// TestRealDestroy destroys a cgroup full of live processes, some of them
// forking as fast as they can, and checks they are dead and the directories
// gone.
func TestRealDestroy(t *testing.T) {
	forEachHost(t, func(t *testing.T, h *Host) {
		cg := newCgroup(t, h, Limits{})
		c := start(t, cg, nil, "/bin/sh", "-c",
			`read x; sleep 60 & sleep 60 & (while :; do /bin/true; done) & (while :; do sleep 60 & sleep 0.01; done) & echo started; while :; do :; done`)
		c.release(t)
		var pids []int
		for deadline := time.Now().Add(10 * time.Second); len(pids) < 6; {
			if time.Now().After(deadline) {
				t.Fatalf("only %d processes after 10s: %q", len(pids), c.out)
			}
			time.Sleep(20 * time.Millisecond)
			var err error
			if pids, err = cg.Pids(); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		if err := cg.Destroy(); err != nil {
			t.Fatal(err)
		}
		t.Logf("Destroy of %d+ processes: %v", len(pids), time.Since(start).Round(time.Microsecond))
		assertGone(t, h, cg.Name())
		if sig := killedBy(c.cmd.Wait()); sig != syscall.SIGKILL {
			t.Errorf("the shell: got signal %v, want SIGKILL", sig)
		}
		for _, pid := range pids {
			if alive(pid) {
				t.Errorf("process %d alive after Destroy", pid)
			}
		}
		// Idempotent.
		if err := cg.Destroy(); err != nil {
			t.Errorf("second Destroy: %v", err)
		}
	})
}

// alive tells whether pid is a live process: not gone, not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// TestRealLoad finds a cgroup by name, as exec and rm after a crash do, and
// destroys it through the loaded handle.
func TestRealLoad(t *testing.T) {
	forEachHost(t, func(t *testing.T, h *Host) {
		cg := newCgroup(t, h, Limits{})
		c := start(t, cg, nil, "/bin/sh", "-c", "read x; sleep 60")
		c.release(t)
		got, err := h.Load(cg.Name())
		if err != nil {
			t.Fatal(err)
		}
		names, err := h.List()
		if err != nil || !slices.Contains(names, cg.Name()) {
			t.Errorf("List: got %v, %v; want %s in it", names, err, cg.Name())
		}
		if _, err := h.Create(cg.Name(), Limits{}); !errors.Is(err, fs.ErrExist) {
			t.Errorf("Create of a name in use: got %v, want fs.ErrExist", err)
		}
		// A second process through the loaded handle, as exec adds one.
		c2 := start(t, got, nil, "/bin/sh", "-c", "read x")
		p1, p2 := c.cmd.Process.Pid, c2.cmd.Process.Pid
		if pids, err := cg.Pids(); err != nil || !slices.Contains(pids, p1) || !slices.Contains(pids, p2) {
			t.Errorf("Pids: got %v, %v; want %d and %d in it", pids, err, p1, p2)
		}
		if err := got.Destroy(); err != nil {
			t.Fatal(err)
		}
		assertGone(t, h, cg.Name())
		if _, err := h.Load(cg.Name()); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load after Destroy: got %v, want fs.ErrNotExist", err)
		}
	})
}

// TestRealNoController asks each host for limits whose controller it lacks:
// an error naming it, and nothing made.
func TestRealNoController(t *testing.T) {
	forEachHost(t, func(t *testing.T, h *Host) {
		lacking := 0
		for _, ctl := range []string{"memory", "cpu", "pids"} {
			// Take the controller away from a v1 host; a v2 host lacks
			// what it lacks.
			hh := h
			if h.Mode() != V2 {
				v1 := map[string]string{}
				for c, p := range h.V1 {
					if c != ctl {
						v1[c] = p
					}
				}
				hh = &Host{V1: v1, Unified: h.Unified, Parent: h.Parent}
			} else if ok, _ := has(h, ctl); ok {
				continue
			}
			lacking++
			l := map[string]Limits{"memory": {Memory: 64 << 20}, "cpu": {CPUs: 0.5}, "pids": {Pids: 10}}[ctl]
			name := testPrefix() + "nocontroller"
			_, err := hh.Create(name, l)
			if !errors.Is(err, ErrNoController) || !strings.Contains(err.Error(), ctl) {
				t.Errorf("%s limit without the controller: got %v, want ErrNoController naming %s", ctl, err, ctl)
			}
			t.Logf("%s: %v", ctl, err)
			assertGone(t, h, name)
		}
		if lacking == 0 {
			t.Skip("the host has every controller")
		}
	})
}
