package container

import (
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/strata-fs/strata/internal/hostimage"
	"github.com/strata-fs/strata/internal/sandbox"
	"github.com/strata-fs/strata/layers"
)

// TestMain lets this test binary be a container's init stage too: Run
// starts /proc/self/exe, which is this binary here (runc
// libcontainer/integration/init_test.go does the same).
func TestMain(m *testing.M) {
	if sandbox.IsInit() {
		sandbox.Init()
	}
	os.Exit(m.Run())
}

func TestCheckName(t *testing.T) {
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"web", true}, {"web-1.a_b", true}, {"0abc", true},
		{"", false}, {"-web", false}, {".web", false}, {"a/b", false}, {"a b", false}, {strings.Repeat("a", 129), false},
	} {
		if err := CheckName(c.name); (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
			t.Errorf("CheckName(%q) = %v, want ok %v", c.name, err, c.ok)
		}
	}
}

func TestBuildEnv(t *testing.T) {
	t.Setenv("STRATA_TEST_FROM_HOST", "h")
	for _, c := range []struct {
		image, user []string
		tty         bool
		want        []string
	}{
		{nil, nil, false, []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=box"}},
		{[]string{"PATH=/x", "A=1"}, []string{"A=2", "B"}, true, []string{"PATH=/x", "HOSTNAME=box", "TERM=xterm", "A=2"}},
		{[]string{"TERM=vt100"}, []string{"STRATA_TEST_FROM_HOST", "HOSTNAME=mine"}, true,
			[]string{"TERM=vt100", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "STRATA_TEST_FROM_HOST=h", "HOSTNAME=mine"}},
	} {
		if got := buildEnv(c.image, c.user, "box", c.tty); !slices.Equal(got, c.want) {
			t.Errorf("buildEnv(%q, %q): got %q, want %q", c.image, c.user, got, c.want)
		}
	}
}

// TestRunInProcess runs a container from this process, which serves its
// union, with this test binary as its init stage.
func TestRunInProcess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat(hostimage.Busybox); err != nil {
		t.Skip("needs a static busybox")
	}
	s, err := layers.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hostimage.Import(context.Background(), s, "bb", []hostimage.File{{Path: "data/a", Content: "a\n"}}); err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }() // read-only
	res, err := Run(context.Background(), s, Options{
		Name: "c", Image: "bb", Hostname: "inproc", AutoRemove: true, Stdout: w,
		Args: []string{"sh", "-c", "echo $$ $(hostname) $(cat /data/a); exit 9"},
	})
	_ = w.Close()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(r)
	if res.ExitCode != 9 || string(out) != "1 inproc a\n" {
		t.Errorf("got exit %d, %q; want 9, %q", res.ExitCode, out, "1 inproc a\n")
	}
	if _, err := Open(s.Root(), "c"); !errors.Is(err, ErrNotFound) {
		t.Errorf("--rm left the container: %v", err)
	}
}
