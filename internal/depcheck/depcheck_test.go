// Package depcheck holds no code, only a test of the package boundaries that
// STYLE.md draws: dependencies flow cmd/strata → layers, unionfs → cow →
// whiteout, and whiteout is pure.
package depcheck

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/strata-fs/strata"

// forbidden maps a package to the packages it must not depend on, directly or
// not. A forbidden entry also forbids the packages below it.
var forbidden = map[string][]string{
	// whiteout decides; it does no I/O and knows nothing of FUSE.
	module + "/whiteout": {"github.com/hanwen/go-fuse/v2", "golang.org/x/sys/unix"},
	// unionfs mounts what it is given; layers describes and checks stacks.
	module + "/unionfs": {module + "/layers"},
	// cow writes the upper; it is a layer below the FUSE tree.
	module + "/cow": {module + "/unionfs"},
	// layers returns descriptions; mounting them is unionfs's business.
	module + "/layers": {module + "/unionfs", "github.com/hanwen/go-fuse/v2"},
	// sandbox is the init stage: it runs in the container, before and
	// without any union or store.
	module + "/internal/sandbox": {module + "/unionfs", module + "/layers", module + "/internal/container", "github.com/hanwen/go-fuse/v2"},
	// bench measures strata from outside, as one more command that mounts:
	// it runs the strata executable and serves no FUSE mount itself.
	module + "/bench": {module + "/unionfs", module + "/cow", module + "/layers", "github.com/hanwen/go-fuse/v2"},
	// fusedev is the raw edge to /dev/fuse: go-fuse parses what it reads.
	module + "/internal/fusedev": {"github.com/hanwen/go-fuse/v2", module + "/unionfs", module + "/layers"},
	// cgroups drives the kernel's cgroup files; of strata it reads only the
	// mount table (internal/mounts).
	module + "/internal/cgroups": {module + "/unionfs", module + "/layers", module + "/cow", module + "/whiteout", "github.com/hanwen/go-fuse/v2"},
}

// deps lists pkg's dependencies, the standard library included, as go list
// sees them (cmd/crane/depcheck_test.go does the same).
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", pkg).Output()
	if err != nil {
		var stderr string
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, stderr)
	}
	return strings.Fields(string(out))
}

func TestDeps(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	for pkg, banned := range forbidden {
		t.Run(strings.TrimPrefix(pkg, module+"/"), func(t *testing.T) {
			for _, dep := range deps(t, pkg) {
				for _, b := range banned {
					if dep == b || strings.HasPrefix(dep, b+"/") {
						t.Errorf("%s depends on %s (forbidden: %s)", pkg, dep, b)
					}
				}
			}
		})
	}
}
