package test

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"

	"github.com/strata-fs/strata/whiteout"
)

// TestPosix runs go-fuse's whole POSIX suite on strata, over stacks of one, two
// and many lower layers, in both whiteout formats. Each test works in a directory
// that already exists in the bottom layer, so its first change copies a lower
// directory up.
func TestPosix(t *testing.T) {
	requireRoot(t)
	var names []string
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, layers := range []int{1, 2, 5} {
		for _, f := range []whiteout.Format{whiteout.OCI, whiteout.Overlay} {
			t.Run(f.String()+"/layers="+string(rune('0'+layers)), func(t *testing.T) {
				s := newStack(t, layers, func(i int, dir string) {
					if i != 0 {
						return
					}
					for _, name := range names {
						if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
							t.Fatal(err)
						}
					}
				})
				mnt := mountStrata(t, s, f)
				for _, name := range names {
					fn := posixtest.All[name]
					t.Run(name, func(t *testing.T) {
						fn(t, filepath.Join(mnt, name))
					})
				}
			})
		}
	}
}
