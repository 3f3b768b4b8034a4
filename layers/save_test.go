package layers

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestSaveReimports(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	img := testImage(t, baseLayer(t), layerOf(t, true, reg("etc/.wh.gone", ""), reg("top", "t")))
	id, err := s.Import(ctx, writeLayout(t, img, "1.0"), ImportOptions{Tags: []string{"example.com/app:1.0"}})
	if err != nil {
		t.Fatal(err)
	}
	// A commit too: its layer was written by strata.
	up := t.TempDir()
	if err := os.WriteFile(filepath.Join(up, "new"), []byte("n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cid, err := s.Commit(ctx, up, "example.com/app:1.0", CommitOptions{Tags: []string{"example.com/app:2"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		ref string
		id  string
	}{{"example.com/app:1.0", id.String()}, {"example.com/app:2", cid.String()}} {
		dir := t.TempDir()
		archive := filepath.Join(dir, "out.tar")
		if err := s.SaveArchiveFile(want.ref, archive); err != nil {
			t.Fatal(err)
		}
		oci := filepath.Join(dir, "oci")
		if err := s.SaveLayout(want.ref, oci); err != nil {
			t.Fatal(err)
		}
		tag := want.ref[len("example.com/app:"):]
		for _, src := range []string{archive, oci + ":" + tag} {
			got, err := newStore(t).Import(ctx, src, ImportOptions{})
			if err != nil {
				t.Fatalf("re-import %s: %v", src, err)
			}
			if got.String() != want.id {
				t.Errorf("re-import of %s: id %s, want %s", src, got, want.id)
			}
		}
		if _, err := exec.LookPath("skopeo"); err == nil {
			for _, src := range []string{"docker-archive:" + archive, "oci:" + oci + ":" + tag} {
				if out, err := exec.Command("skopeo", "inspect", src).CombinedOutput(); err != nil {
					t.Errorf("skopeo inspect %s: %v\n%s", src, err, out)
				}
			}
		} else {
			t.Log("skopeo is not installed: skipped skopeo inspect")
		}
		if _, err := exec.LookPath("umoci"); err == nil {
			if out, err := exec.Command("umoci", "stat", "--image", oci+":"+tag).CombinedOutput(); err != nil {
				t.Errorf("umoci stat %s:%s: %v\n%s", oci, tag, err, out)
			}
		} else {
			t.Log("umoci is not installed: skipped umoci stat")
		}
	}
}
