package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// stackOf runs `strata layers --format json` on mnt.
func stackOf(t *testing.T, mnt string) (st struct {
	Mountpoint string
	Pid        int
	Whiteout   string
	Work       string
	Layers     []struct {
		Index            int
		Role, Name, Path string
	}
	Upper *struct{ Entries, Whiteouts int } `json:"upper_usage"`
}) {
	t.Helper()
	code, stdout, stderr := strata(t, "layers", "--format", "json", mnt)
	if code != 0 {
		t.Fatalf("layers %s: exit %d, %s", mnt, code, stderr)
	}
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatalf("layers %s: %v\n%s", mnt, err, stdout)
	}
	return st
}

// umount unmounts mnt with strata umount and waits until it is gone.
func umount(t *testing.T, mnt string) {
	t.Helper()
	if code, _, stderr := strata(t, "umount", mnt); code != 0 {
		t.Errorf("umount %s: exit %d, %s", mnt, code, stderr)
	}
	waitMounted(t, mnt, false)
}

// TestLayersOfLiveMounts asks `strata layers` about mounts served by other
// strata processes, made each way a union is made.
func TestLayersOfLiveMounts(t *testing.T) {
	requireMount(t)
	t.Run("mount --daemon, traced", func(t *testing.T) {
		base, app, mnt := stack(t)
		d := filepath.Dir(base)
		up, wk, trace := filepath.Join(d, "up"), filepath.Join(d, "wk"), filepath.Join(d, "trace.jsonl")
		for _, dir := range []string{up, wk} {
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		code, _, stderr := strata(t, "mount", "--daemon", "--trace="+trace, "--trace-format", "json",
			"--layer", base, "--layer", app, "--upper", up, "--work", wk, "--whiteout", "overlay", mnt)
		if code != 0 {
			t.Fatalf("mount --daemon: exit %d, %s", code, stderr)
		}
		defer umount(t, mnt)
		checkRead(t, mnt)
		if err := os.Remove(filepath.Join(mnt, "f")); err != nil {
			t.Fatal(err)
		}
		st := stackOf(t, mnt)
		want := [][3]string{{"upper", "upper", up}, {"lower", "app", app}, {"lower", "base", base}}
		if len(st.Layers) != len(want) {
			t.Fatalf("layers: got %+v, want %v", st.Layers, want)
		}
		for i, l := range st.Layers {
			if l.Index != i || l.Role != want[i][0] || l.Name != want[i][1] || l.Path != want[i][2] {
				t.Errorf("layer %d: got %+v, want %v", i, l, want[i])
			}
		}
		if st.Mountpoint != mnt || st.Whiteout != "overlay" || st.Work != wk || st.Pid != daemonPid(t, mnt) {
			t.Errorf("got %+v; want mount point %s, whiteout overlay, work %s, the daemon's pid", st, mnt, wk)
		}
		if st.Upper == nil || st.Upper.Entries != 1 || st.Upper.Whiteouts != 1 {
			t.Errorf("upper usage: got %+v, want the one whiteout of f", st.Upper)
		}
		code, text, _ := strata(t, "layers", mnt)
		if code != 0 || !strings.Contains(text, "1      lower  app    "+app) || !strings.Contains(text, "whiteouts written as overlay") {
			t.Errorf("layers (text): exit %d:\n%s", code, text)
		}
		b, err := os.ReadFile(trace)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range []string{
			`{"op":"lookup","path":"/f","result":"found","layer":{"index":2,"name":"base"}}`,
			`{"op":"whiteout","path":"/f","format":"overlay format: 0/0 char device"}`,
		} {
			if !strings.Contains(string(b), line+"\n") {
				t.Errorf("trace lacks %s:\n%s", line, b)
			}
		}
	})
	t.Run("overlay", func(t *testing.T) {
		base, app, mnt := stack(t)
		if code, _, stderr := strata(t, "overlay", "-o", "lowerdir="+app+":"+base, mnt); code != 0 {
			t.Fatalf("overlay: exit %d, %s", code, stderr)
		}
		defer umount(t, mnt)
		st := stackOf(t, mnt)
		if len(st.Layers) != 2 || st.Layers[0].Index != 1 || st.Layers[0].Path != app || st.Layers[1].Path != base || st.Upper != nil {
			t.Errorf("got %+v, want lowers app, base as layers 1 and 2, no upper", st)
		}
	})
	t.Run("image mount", func(t *testing.T) {
		_, _, mnt := stack(t)
		img, err := random.Image(512, 2)
		if err != nil {
			t.Fatal(err)
		}
		archive := filepath.Join(t.TempDir(), "img.tar")
		tag, _ := name.NewTag("example.com/rand:1")
		if err := tarball.WriteToFile(archive, tag, img); err != nil {
			t.Fatal(err)
		}
		root := filepath.Join(t.TempDir(), "store")
		if code, _, stderr := strata(t, "image", "--root", root, "import", archive); code != 0 {
			t.Fatalf("import: exit %d, %s", code, stderr)
		}
		if code, _, stderr := strata(t, "image", "--root", root, "mount", "--daemon", "example.com/rand:1", mnt); code != 0 {
			t.Fatalf("image mount: exit %d, %s", code, stderr)
		}
		defer umount(t, mnt)
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		st := stackOf(t, mnt)
		ids := cfg.RootFS.DiffIDs
		if len(st.Layers) != len(ids) {
			t.Fatalf("got %+v, want %d layers", st.Layers, len(ids))
		}
		for i, l := range st.Layers {
			// Top first: the last diff_id is layer 1.
			if want := ids[len(ids)-1-i].Hex[:12]; l.Name != want {
				t.Errorf("layer %d: named %q, want the short diff_id %s", l.Index, l.Name, want)
			}
		}
	})
}

func TestLayersRefuses(t *testing.T) {
	d := t.TempDir()
	for _, args := range [][]string{
		{"layers", d},                     // not a mount point
		{"layers", filepath.Join(d, "x")}, // no such directory
		{"layers", "--format", "yaml", d},
		{"diff", "--layer", d},                         // no upper
		{"diff", "--upper", d},                         // no layers
		{"diff", "--upper", d, "--layer", d + "/nope"}, // a missing layer
		{"diff", "web"},                                // containers come with strata run
		{"mount", "--daemon", "--trace", "--layer", d, d},
		{"mount", "--trace-format", "xml", "--layer", d, d},
	} {
		if code, _, stderr := strata(t, args...); code != 2 || strings.Count(stderr, "\n") != 1 {
			t.Errorf("strata %q: exit %d, stderr %q; want 2 and one line", args, code, stderr)
		}
	}
}

func TestDiffCommand(t *testing.T) {
	base, app, _ := stack(t)
	up := t.TempDir()
	for name, data := range map[string]string{".wh.f": "", "g": "changed", "h": "new"} {
		if err := os.WriteFile(filepath.Join(up, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := "D /f\nC /g\nA /h\n"
	for _, args := range [][]string{
		{"diff", "--layer", base, "--layer", app, "--upper", up},
		{"diff", "-o", "lowerdir=" + app + ":" + base + ",upperdir=" + up},
	} {
		if code, stdout, stderr := strata(t, args...); code != 0 || stdout != want {
			t.Errorf("strata %q: exit %d, stdout %q, stderr %q; want %q", args, code, stdout, stderr, want)
		}
	}
	code, stdout, _ := strata(t, "diff", "--format", "json", "--layer", base, "--layer", app, "--upper", up)
	var got []struct{ Kind, Path string }
	if code != 0 || json.Unmarshal([]byte(stdout), &got) != nil || len(got) != 3 || got[0].Kind != "D" || got[0].Path != "/f" {
		t.Errorf("diff --format json: exit %d, %s", code, stdout)
	}
}
