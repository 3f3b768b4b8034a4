package cmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/strata-fs/strata/bench"
	"github.com/strata-fs/strata/cmd/strata/internal/daemon"
	"github.com/strata-fs/strata/internal/mounts"
	"github.com/strata-fs/strata/layers"
	"github.com/strata-fs/strata/unionfs"
)

func TestExitCode(t *testing.T) {
	root := New("test")
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, 0},
		{"usage", &usageError{cmd: root, err: errors.New("accepts 1 arg")}, 2},
		{"wrapped usage", fmt.Errorf("x: %w", &usageError{cmd: root, err: errors.New("y")}), 2},
		{"refused stack", &layers.Error{Role: "layer", Path: "/x", Err: layers.ErrNotExist}, 2},
		{"bad option", fmt.Errorf("option: %w", layers.ErrBadOption), 2},
		{"daemon child", &daemon.ChildError{Msg: "mount: no"}, 2},
		{"not mounted", fmt.Errorf("umount /x: %w", mounts.ErrNotMounted), 2},
		{"foreign", fmt.Errorf("umount /x: %w", mounts.ErrForeign), 2},
		{"bench without room", fmt.Errorf("bench: %w", bench.ErrInput), 2},
		{"busy", &os.PathError{Op: "umount", Path: "/x", Err: unix.EBUSY}, 1},
		{"layer unreadable", &layers.Error{Role: "layer", Path: "/x", Err: os.ErrPermission}, 1},
		{"other", errors.New("boom"), 1},
	} {
		if got := ExitCode(tc.err); got != tc.want {
			t.Errorf("%s: ExitCode(%v): got %d, want %d", tc.name, tc.err, got, tc.want)
		}
	}
}

// run executes the root command with args and returns its error and output.
func run(ctx context.Context, args ...string) (string, error) {
	root := New("test")
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}

// dirs makes the named directories under a fresh temp dir and returns it, its
// symlinks resolved.
func dirs(t *testing.T, names ...string) string {
	t.Helper()
	d, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := os.MkdirAll(filepath.Join(d, n), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func TestMountRefuses(t *testing.T) {
	d := dirs(t, "base", "app", "up", "wk", "mnt", "base/up", "full/junk")
	p := func(n string) string { return filepath.Join(d, n) }
	for _, tc := range []struct {
		name string
		args []string
		want string // in the message
	}{
		{"no mount point", []string{"--layer", p("base")}, "accepts 1 arg"},
		{"two mount points", []string{"--layer", p("base"), p("mnt"), p("mnt")}, "accepts 1 arg"},
		{"unknown flag", []string{"--nope", p("mnt")}, "unknown flag"},
		{"no layers", []string{p("mnt")}, "no layers"},
		{"layers twice", []string{"--layer", p("base"), "-o", "lowerdir=" + p("app"), p("mnt")}, "not both"},
		{"upper twice", []string{"--layer", p("base"), "--upper", p("up"), "-o", "upperdir=" + p("up"), p("mnt")}, "not both"},
		{"bad whiteout", []string{"--layer", p("base"), "--whiteout", "aufs2", p("mnt")}, "aufs2"},
		{"bad metacopy", []string{"--layer", p("base"), "--metacopy", "maybe", p("mnt")}, "maybe"},
		{"missing layer", []string{"--layer", p("base"), "--layer", p("nope"), p("mnt")}, `layer "` + p("nope") + `": no such directory`},
		{"missing layer in lowerdir", []string{"-o", "lowerdir=" + p("nope") + ":" + p("base"), p("mnt")}, p("nope")},
		{"bad escape", []string{"-o", `lowerdir=` + p("base") + `\`, p("mnt")}, "backslash"},
		{"kernel-only option", []string{"-o", "lowerdir=" + p("base") + ",index=on", p("mnt")}, "index=on"},
		{"upper in layer", []string{"--layer", p("base"), "--upper", p("base/up"), "--work", p("wk"), p("mnt")}, `upper "` + p("base/up") + `": inside layer`},
		{"upper without work", []string{"--layer", p("base"), "--upper", p("up"), p("mnt")}, `upper "` + p("up") + `"`},
		{"work not empty", []string{"--layer", p("base"), "--upper", p("up"), "--work", p("full"), p("mnt")}, `work "` + p("full") + `": not empty`},
		{"missing mount point", []string{"--layer", p("base"), p("nope")}, `mount point "` + p("nope") + `": no such directory`},
		{"mount point in layer", []string{"--layer", p("base"), p("base/up")}, `mount point "` + p("base/up") + `": inside layer`},
		{"daemon, missing layer", []string{"--daemon", "--layer", p("nope"), p("mnt")}, `layer "` + p("nope") + `"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(context.Background(), append([]string{"mount"}, tc.args...)...)
			if got := ExitCode(err); got != 2 {
				t.Errorf("exit code: got %d (%v), want 2", got, err)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error: got %v, want it to contain %q", err, tc.want)
			}
			if out != "" {
				t.Errorf("output: got %q, want none (main prints the error)", out)
			}
		})
	}
	if ms, err := mounts.Self(); err == nil {
		for _, m := range ms {
			if strings.HasPrefix(m.Mountpoint, d) {
				t.Errorf("left a mount behind: %+v", m)
			}
		}
	}
}

func TestMountRefusesBusyMountpoint(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	d := dirs(t, "base", "mnt")
	mnt := filepath.Join(d, "mnt")
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) }) // the test's own tmpfs
	_, err := run(context.Background(), "mount", "--layer", filepath.Join(d, "base"), mnt)
	want := `mount point "` + mnt + `": already a mount point (tmpfs)`
	if ExitCode(err) != 2 || err == nil || err.Error() != want {
		t.Errorf("got %v (exit %d), want %q, exit 2", err, ExitCode(err), want)
	}
}

// TestMountRunE calls RunE directly, with flags set, as crane's export_test.go
// does.
func TestMountRunE(t *testing.T) {
	d := dirs(t, "mnt")
	c := NewCmdMount()
	if err := c.Flags().Set("layer", filepath.Join(d, "nope")); err != nil {
		t.Fatal(err)
	}
	err := c.RunE(c, []string{filepath.Join(d, "mnt")})
	if !errors.Is(err, layers.ErrNotExist) || ExitCode(err) != 2 {
		t.Errorf("got %v (exit %d), want ErrNotExist, exit 2", err, ExitCode(err))
	}
}

func TestUmountRefuses(t *testing.T) {
	d := dirs(t, "plain")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no args", nil, "accepts 1 arg"},
		{"missing", []string{filepath.Join(d, "nope")}, "no such directory"},
		{"not mounted", []string{filepath.Join(d, "plain")}, "not a mount point"},
		{"not strata", []string{"/proc"}, "type proc, not fuse.strata"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := run(context.Background(), append([]string{"umount"}, tc.args...)...)
			if got := ExitCode(err); got != 2 {
				t.Errorf("exit code: got %d (%v), want 2", got, err)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error: got %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestRootRefuses(t *testing.T) {
	for _, args := range [][]string{{"bogus"}, {"--bogus"}, {"demo", "extra"}, {"demo", "--whiteout", "nope"}} {
		_, err := run(context.Background(), args...)
		if got := ExitCode(err); got != 2 {
			t.Errorf("strata %q: exit code %d (%v), want 2", args, got, err)
		}
	}
}

func TestVersion(t *testing.T) {
	out, err := run(context.Background(), "--version")
	if err != nil || out != "strata test\n" {
		t.Errorf("got %q, %v; want %q", out, err, "strata test\n")
	}
}

// requireMount skips t unless it can mount FUSE file systems.
func requireMount(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse")
	}
}

// waitMounted waits until mnt is (want) or is not (!want) in the mount table.
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

// TestMountForeground mounts a read-only union in this process, reads through
// it, and stops it as SIGINT would: by ending the context.
func TestMountForeground(t *testing.T) {
	requireMount(t)
	d := dirs(t, "base", "app", "mnt")
	for f, content := range map[string]string{"base/a": "base a", "base/b": "base b", "app/b": "app b"} {
		if err := os.WriteFile(filepath.Join(d, f), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mnt := filepath.Join(d, "mnt")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	stderr := &watch{want: "strata: serving", seen: make(chan struct{})}
	go func() {
		root := New("test")
		root.SetOut(io.Discard)
		root.SetErr(stderr)
		root.SetArgs([]string{"mount", "--layer", filepath.Join(d, "base"), "--layer", filepath.Join(d, "app"), mnt})
		done <- root.ExecuteContext(ctx)
	}()
	// Touch the mount only once Mount has returned. Until then go-fuse's
	// WaitMount is inside an open of the mount itself (its poll hack), and a
	// second access from this process then could stall the Go runtime and
	// the server with it (seen once: a GC stop-the-world never completed).
	select {
	case <-stderr.seen:
	case err := <-done:
		t.Fatalf("mount: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not serving after 10s")
	}
	for f, want := range map[string]string{"a": "base a", "b": "app b"} {
		got, err := os.ReadFile(filepath.Join(mnt, f))
		if err != nil || string(got) != want {
			t.Errorf("read %s: got %q, %v; want %q", f, got, err, want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("mount after the signal: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("mount still serving 10s after the signal")
	}
	waitMounted(t, mnt, false)
}

// watch is an io.Writer that closes seen once want has been written to it.
type watch struct {
	want string
	seen chan struct{}

	mu     sync.Mutex
	buf    strings.Builder
	closed bool
}

func (w *watch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.closed && strings.Contains(w.buf.String(), w.want) {
		close(w.seen)
		w.closed = true
	}
	return len(p), nil
}

// TestUmountEndsServer unmounts with `strata umount` a union served here, and
// checks that the server's Wait returns.
func TestUmountEndsServer(t *testing.T) {
	requireMount(t)
	d := dirs(t, "base", "mnt")
	mnt := filepath.Join(d, "mnt")
	srv, err := unionfs.Mount(mnt, unionfs.Config{Lowers: []string{filepath.Join(d, "base")}})
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	go func() {
		srv.Wait()
		close(waited)
	}()
	t.Cleanup(func() {
		select {
		case <-waited:
		default:
			_ = srv.Unmount() // the test failed; don't leave it
			<-waited
		}
	})
	if _, err := run(context.Background(), "umount", mnt); err != nil {
		t.Fatalf("umount: %v", err)
	}
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("server still waiting 10s after umount")
	}
}
