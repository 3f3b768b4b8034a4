package hostimage

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/strata-fs/strata/layers"
)

func TestImport(t *testing.T) {
	s, err := layers.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Import(context.Background(), s, "host:1", []File{{"data/a.txt", "a\n"}}); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stack("host:1")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Lowers) != 2 {
		t.Fatalf("layers: got %d, want 2", len(st.Lowers))
	}
	if b, err := os.ReadFile(filepath.Join(st.Lowers[0], "data/a.txt")); err != nil || string(b) != "a\n" {
		t.Errorf("top layer data/a.txt: %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(st.Lowers[1], "bin/sh")); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("bottom layer bin/sh: %v, %v", fi, err)
	}
}
