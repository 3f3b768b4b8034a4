package cmd

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestImageCommands(t *testing.T) {
	ctx := context.Background()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "img.tar")
	tag, _ := name.NewTag("example.com/rand:1")
	if err := tarball.WriteToFile(archive, tag, img); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "store")
	id, _ := img.ConfigName()

	out, err := run(ctx, "image", "--root", root, "import", archive)
	if err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	if !strings.Contains(out, id.String()) || !strings.Contains(out, "layer 2/2") {
		t.Errorf("import printed %q, want the id %s and a line per layer", out, id)
	}
	out, err = run(ctx, "image", "--root", root, "ls", "-q")
	if err != nil || strings.TrimSpace(out) != id.Hex[:12] {
		t.Errorf("ls -q: %q, %v; want %s", out, err, id.Hex[:12])
	}
	out, err = run(ctx, "image", "--root", root, "ls", "--format", "json")
	var row map[string]any
	if err != nil || json.Unmarshal([]byte(out), &row) != nil || row["Repository"] != "example.com/rand" || row["Tag"] != "1" || row["Layers"] != 2.0 {
		t.Errorf("ls --format json: %q, %v", out, err)
	}
	out, err = run(ctx, "image", "--root", root, "inspect", "example.com/rand:1")
	var ins []inspected
	if err != nil || json.Unmarshal([]byte(out), &ins) != nil || len(ins) != 1 || len(ins[0].Layers) != 2 || ins[0].ID != id.String() {
		t.Errorf("inspect: %q, %v", out, err)
	}
	_, err = run(ctx, "image", "--root", root, "inspect", "nosuch")
	if ExitCode(err) != 2 {
		t.Errorf("inspect of a missing image: %v, exit %d; want 2", err, ExitCode(err))
	}
	// commit, then save both ways.
	up := t.TempDir()
	if err := os.WriteFile(filepath.Join(up, "added"), []byte("a"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	out, err = run(ctx, "commit", "--root", root, "--upper", up, "--from", "example.com/rand:1", "-t", "committed:1", "-m", "test")
	if err != nil || !strings.HasPrefix(out, "sha256:") {
		t.Fatalf("commit: %q, %v", out, err)
	}
	again, err := run(ctx, "commit", "--root", root, "--upper", up, "--from", "example.com/rand:1", "-m", "test")
	if err != nil || again != out {
		t.Errorf("commit with SOURCE_DATE_EPOCH is not reproducible: %q then %q (%v)", out, again, err)
	}
	if _, err := run(ctx, "commit", "--root", root, "--from", "example.com/rand:1"); ExitCode(err) != 2 {
		t.Errorf("commit without --upper: %v, exit %d; want 2", err, ExitCode(err))
	}
	saved := filepath.Join(t.TempDir(), "saved.tar")
	if out, err := run(ctx, "image", "--root", root, "save", "committed:1", "-o", saved); err != nil {
		t.Fatalf("save: %v\n%s", err, out)
	}
	if out, err := run(ctx, "image", "--root", root, "save", "committed:1", "--format", "oci", "-o", filepath.Join(t.TempDir(), "oci")); err != nil {
		t.Fatalf("save --format oci: %v\n%s", err, out)
	}
	if _, err := run(ctx, "image", "--root", root, "save", "committed:1", "--format", "oci"); ExitCode(err) != 2 {
		t.Errorf("save --format oci without -o: %v, exit %d; want 2", err, ExitCode(err))
	}
	if _, err := run(ctx, "image", "--root", root, "rm", "committed:1"); err != nil {
		t.Fatal(err)
	}
	out, err = run(ctx, "image", "--root", root, "rm", "example.com/rand:1")
	if err != nil || !strings.Contains(out, "Deleted: "+id.String()) {
		t.Errorf("rm: %q, %v", out, err)
	}
	out, err = run(ctx, "image", "--root", root, "ls", "-q")
	if err != nil || out != "" {
		t.Errorf("ls -q after rm: %q, %v", out, err)
	}
}

func TestHumanSize(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{{0, "0B"}, {999, "999B"}, {1000, "1kB"}, {3584, "3.58kB"}, {524288000, "524MB"}, {3 << 30, "3.22GB"}} {
		if got := humanSize(tc.n); got != tc.want {
			t.Errorf("humanSize(%d): got %q, want %q", tc.n, got, tc.want)
		}
	}
}
