package daemon

import (
	"errors"
	"io"
	"os"
	"testing"
)

// notify calls Ready(err) on a notifier over a fresh pipe and returns what the
// parent would read.
func notify(t *testing.T, err error) (string, error) {
	t.Helper()
	r, w, perr := os.Pipe()
	if perr != nil {
		t.Fatal(perr)
	}
	defer func() { _ = r.Close() }() // the test's own pipe
	n := &Notifier{f: w}
	rerr := n.Ready(err)
	if again := n.Ready(errors.New("second")); again != nil {
		t.Errorf("second Ready: %v, want nil", again)
	}
	b, rdErr := io.ReadAll(r)
	if rdErr != nil {
		t.Fatal(rdErr)
	}
	return string(b), rerr
}

func TestReady(t *testing.T) {
	t.Chdir(t.TempDir()) // Ready moves to "/"; t.Chdir moves back
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{errors.New(`layer "/x": no such directory`), `layer "/x": no such directory`},
		{errors.New("ok"), `failed: "ok"`},
		{errors.New(""), `failed: ""`},
	} {
		got, err := notify(t, tc.err)
		if err != nil || got != tc.want {
			t.Errorf("Ready(%v): parent read %q (%v), want %q", tc.err, got, err, tc.want)
		}
	}
	if wd, _ := os.Getwd(); wd != "/" {
		t.Errorf("after Ready(nil): working directory %q, want /", wd)
	}
}

func TestChildWithoutVariable(t *testing.T) {
	t.Setenv(envReadyFD, "")
	if err := os.Unsetenv(envReadyFD); err != nil {
		t.Fatal(err)
	}
	if n := Child(); n != nil {
		t.Errorf("Child() without %s: got %v, want nil", envReadyFD, n)
	}
	t.Setenv(envReadyFD, "7")
	if n := Child(); n != nil {
		t.Errorf("Child() with %s=7: got %v, want nil", envReadyFD, n)
	}
	if _, set := os.LookupEnv(envReadyFD); set {
		t.Errorf("Child() left %s in the environment", envReadyFD)
	}
}

func TestNilNotifier(t *testing.T) {
	var n *Notifier
	if err := n.Ready(errors.New("x")); err != nil {
		t.Errorf("nil Ready: %v", err)
	}
}
