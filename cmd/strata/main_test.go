package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/internal/mounts"
)

// binary is the strata executable these tests run, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "strata-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "strata")
	build := exec.Command("go", "build", "-o", binary, "-ldflags", "-X main.version=v0.0.0-test", ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build strata:", err)
		os.Exit(1)
	}
	// Daemons orphaned by their parent come to this process, which can then
	// wait for them to exit.
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) // without it, the daemon tests check less
	code := m.Run()
	_ = os.RemoveAll(dir) // a temp dir; nothing to report at exit
	os.Exit(code)
}

// strata runs the binary to its end and returns its exit code and output.
func strata(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	c := exec.Command(binary, args...)
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("run strata %q: %v", args, err)
	}
	return code, out.String(), errb.String()
}

func TestBadLayerExits2(t *testing.T) {
	d := t.TempDir()
	mnt := filepath.Join(d, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	nope := filepath.Join(d, "nope", "base")
	code, stdout, stderr := strata(t, "mount", "--layer", nope, mnt)
	if code != 2 {
		t.Errorf("exit code: got %d, want 2", code)
	}
	if want := fmt.Sprintf("strata: layer %q: no such directory\n", nope); stderr != want {
		t.Errorf("stderr: got %q, want %q", stderr, want)
	}
	if stdout != "" {
		t.Errorf("stdout: got %q, want nothing", stdout)
	}
	if _, ok, _ := mounts.Lookup(mnt); ok {
		t.Errorf("%s is mounted", mnt)
	}
}

func TestUsageExits2(t *testing.T) {
	for _, args := range [][]string{{"bogus"}, {"mount"}, {"mount", "--bogus", "x"}, {"umount"}, {"umount", "a", "b"}} {
		code, _, stderr := strata(t, args...)
		if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "strata: ") {
			t.Errorf("strata %q: got exit %d, stderr %q; want 2 and one line", args, code, stderr)
		}
	}
}

func TestVersion(t *testing.T) {
	code, stdout, _ := strata(t, "--version")
	if code != 0 || stdout != "strata v0.0.0-test\n" {
		t.Errorf("got %d, %q; want 0, %q", code, stdout, "strata v0.0.0-test\n")
	}
}

func requireMount(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

// stack makes a two-layer read-only stack and a mount point; base/f is
// "base", app/g is "app".
func stack(t *testing.T) (base, app, mnt string) {
	t.Helper()
	d, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	base, app, mnt = filepath.Join(d, "base"), filepath.Join(d, "app"), filepath.Join(d, "mnt")
	for _, dir := range []string{base, app, mnt} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(base, "f"), []byte("base"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(app, "g"), []byte("app"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Whatever happens, leave nothing mounted.
	t.Cleanup(func() {
		if _, ok, _ := mounts.Lookup(mnt); ok {
			t.Errorf("%s still mounted at the end; detaching", mnt)
			_ = mounts.Detach(mnt)
		}
	})
	return base, app, mnt
}

func waitMounted(t *testing.T, mnt string, want bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, ok, err := mounts.Lookup(mnt)
		if err != nil {
			t.Fatal(err)
		}
		if ok == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s mounted: %v after 10s, want %v", mnt, ok, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func checkRead(t *testing.T, mnt string) {
	t.Helper()
	for f, want := range map[string]string{"f": "base", "g": "app"} {
		got, err := os.ReadFile(filepath.Join(mnt, f))
		if err != nil || string(got) != want {
			t.Errorf("read %s: got %q, %v; want %q", f, got, err, want)
		}
	}
}

// daemonPid finds the process serving mnt: a strata whose arguments end in mnt.
func daemonPid(t *testing.T, mnt string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		if args[0] == binary && args[len(args)-1] == mnt {
			return pid
		}
	}
	t.Fatalf("no strata process serves %s", mnt)
	return 0
}

// waitExit waits for pid, a child of this process (the subreaper), to exit and
// returns its status.
func waitExit(t *testing.T, pid int) unix.WaitStatus {
	t.Helper()
	type result struct {
		ws  unix.WaitStatus
		err error
	}
	done := make(chan result, 1)
	go func() {
		var ws unix.WaitStatus
		_, err := unix.Wait4(pid, &ws, 0, nil)
		done <- result{ws, err}
	}()
	select {
	case r := <-done:
		if errors.Is(r.err, unix.ECHILD) {
			t.Skip("the daemon is not our child: no subreaper")
		}
		if r.err != nil {
			t.Fatalf("wait for %d: %v", pid, r.err)
		}
		return r.ws
	case <-time.After(10 * time.Second):
		t.Fatalf("process %d still running 10s after umount", pid)
	}
	return 0
}

func TestDaemonAndUmount(t *testing.T) {
	requireMount(t)
	base, app, mnt := stack(t)
	code, stdout, stderr := strata(t, "mount", "--daemon", "-o", "lowerdir="+app+":"+base, mnt)
	if code != 0 {
		t.Fatalf("mount --daemon: exit %d, stderr %q", code, stderr)
	}
	if stdout != "" || stderr != "" {
		t.Errorf("mount --daemon: stdout %q, stderr %q; want silence", stdout, stderr)
	}
	// Ready means ready: no wait before the first read.
	checkRead(t, mnt)
	pid := daemonPid(t, mnt)
	if sid, err := unix.Getsid(pid); err != nil || sid != pid {
		t.Errorf("daemon %d: session %d (%v), want its own", pid, sid, err)
	}

	// Busy: an open file keeps it mounted.
	f, err := os.Open(filepath.Join(mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	code, _, stderr = strata(t, "umount", mnt)
	_ = f.Close() // read-only; nothing to lose
	if code != 1 || !strings.Contains(stderr, "busy") {
		t.Errorf("umount while busy: got exit %d, stderr %q; want 1 and busy", code, stderr)
	}
	checkRead(t, mnt)

	code, _, stderr = strata(t, "umount", mnt)
	if code != 0 || stderr != "" {
		t.Fatalf("umount: exit %d, stderr %q", code, stderr)
	}
	waitMounted(t, mnt, false)
	if ws := waitExit(t, pid); !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("daemon ended with %v, want exit 0", ws)
	}
}

func TestDaemonChildFailure(t *testing.T) {
	requireMount(t)
	base, _, mnt := stack(t)
	// The stack is fine; the kernel (and fusermount3) refuse the option.
	code, _, stderr := strata(t, "mount", "--daemon", "-o", "no_such_fuse_option", "--layer", base, mnt)
	if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "strata: ") {
		t.Errorf("got exit %d, stderr %q; want 2 and one line", code, stderr)
	}
}

// foreground is a `strata mount` in the foreground, started by serve.
type foreground struct {
	cmd    *exec.Cmd
	stderr chan string // all of stderr, once it ends
	early  string      // stderr up to "strata: serving"
}

// serve starts `strata mount args...` and returns once it says it serves: its
// unionfs.Mount has returned. Killing it earlier could catch go-fuse's server
// inside an open of its own mount (the poll hack of WaitMount), where SIGKILL
// leaves it stuck for good.
func serve(t *testing.T, args ...string) *foreground {
	t.Helper()
	c := exec.Command(binary, append([]string{"mount"}, args...)...)
	r, err := c.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	fg := &foreground{cmd: c, stderr: make(chan string, 1)}
	serving := make(chan struct{})
	go func(serving chan struct{}) {
		var all strings.Builder
		buf := make([]byte, 4096)
		for {
			n, err := r.Read(buf)
			all.Write(buf[:n])
			if serving != nil && strings.Contains(all.String(), "strata: serving") {
				fg.early = all.String()
				close(serving)
				serving = nil
			}
			if err != nil {
				fg.stderr <- all.String()
				return
			}
		}
	}(serving)
	select {
	case <-serving:
	case <-time.After(10 * time.Second):
		_ = c.Process.Kill()
		t.Fatalf("strata mount %q: not serving after 10s", args)
	}
	return fg
}

// wait waits for the process to exit and returns its stderr and error.
func (fg *foreground) wait() (string, error) {
	stderr := <-fg.stderr // the pipe must be read to its end before Wait
	return stderr, fg.cmd.Wait()
}

func TestForegroundSignals(t *testing.T) {
	requireMount(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			base, app, mnt := stack(t)
			fg := serve(t, "--layer", base, "--layer", app, mnt)
			checkRead(t, mnt)
			if err := fg.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if stderr, err := fg.wait(); err != nil {
				t.Errorf("after %v: %v, want exit 0; stderr %q", sig, err, stderr)
			}
			waitMounted(t, mnt, false)
		})
	}
}

func TestUmountDeadMount(t *testing.T) {
	requireMount(t)
	base, _, mnt := stack(t)
	fg := serve(t, "--layer", base, mnt)
	if err := fg.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_, _ = fg.wait() // killed; its status is known
	code, _, stderr := strata(t, "umount", mnt)
	if code != 0 || !strings.Contains(stderr, "detached") || !strings.Contains(stderr, "not connected") {
		t.Errorf("got exit %d, stderr %q; want 0 and a note that it was detached", code, stderr)
	}
	waitMounted(t, mnt, false)
}

// TestMountOverDeadMount: a killed daemon leaves its union mounted and dead;
// the next strata mount on the same point detaches it, says so, and mounts.
func TestMountOverDeadMount(t *testing.T) {
	requireMount(t)
	base, app, mnt := stack(t)
	fg := serve(t, "--layer", base, mnt)
	if err := fg.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_, _ = fg.wait() // killed; its status is known
	// Past the kernel's attribute cache, which still answers.
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, mnt, unix.AT_STATX_FORCE_SYNC, unix.STATX_TYPE, &stx); !errors.Is(err, unix.ENOTCONN) {
		t.Fatalf("statx of the dead mount: %v, want ENOTCONN", err)
	}
	fg = serve(t, "--layer", base, "--layer", app, mnt)
	if !strings.Contains(fg.early, "was gone") || !strings.Contains(fg.early, "detached") {
		t.Errorf("stderr %q: want a note that the dead union was detached", fg.early)
	}
	checkRead(t, mnt)
	if err := fg.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if stderr, err := fg.wait(); err != nil {
		t.Errorf("after SIGTERM: %v; stderr %q", err, stderr)
	}
	waitMounted(t, mnt, false)
	if ms, err := mounts.Self(); err == nil {
		for _, m := range ms {
			if m.Mountpoint == mnt {
				t.Errorf("still in the mount table: %+v", m)
			}
		}
	}
}
