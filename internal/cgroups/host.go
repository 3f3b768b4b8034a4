package cgroups

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/strata-fs/strata/internal/mounts"
)

// Mode is how a host lays out its cgroups.
type Mode int

const (
	// V1 hosts have one hierarchy per controller (or per few controllers
	// mounted together) and no unified hierarchy.
	V1 Mode = iota + 1
	// V2 hosts have the unified hierarchy only, with every controller in it.
	V2
	// Hybrid hosts have the v1 hierarchies, which hold the controllers, and
	// a unified hierarchy beside them with few or no controllers in it,
	// which systemd uses to track processes.
	Hybrid
)

func (m Mode) String() string {
	switch m {
	case V1:
		return "v1"
	case V2:
		return "v2"
	case Hybrid:
		return "hybrid"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// DefaultParent is the cgroup, under the root of every hierarchy, that holds
// the containers' cgroups (Docker's cgroupfs driver uses "docker").
const DefaultParent = "strata"

// Host is what this machine has: where its cgroup hierarchies are mounted.
// Detect fills it in; a test may build one on a tree of its own.
type Host struct {
	// V1 maps each cgroup v1 controller to the mount point of its
	// hierarchy: "memory" → "/sys/fs/cgroup/memory". Controllers mounted
	// together ("cpu,cpuacct") share a mount point. Empty on a pure v2 host.
	V1 map[string]string
	// Unified is the mount point of the cgroup v2 hierarchy, "" if there
	// is none.
	Unified string
	// Parent is the directory under each mount point that holds the
	// containers' cgroups, DefaultParent unless a test says otherwise.
	Parent string

	// mkdir and rmdir make and remove a cgroup directory: os.Mkdir and
	// os.Remove when nil. On a real cgroup file system the kernel fills a
	// new directory with the interface files (memory.max, cgroup.procs...)
	// and removes them with it; a test on a fake tree does that itself.
	mkdir, rmdir func(path string) error
}

// Mode tells v1, v2 or hybrid from what h has.
func (h *Host) Mode() Mode {
	switch {
	case len(h.V1) > 0 && h.Unified != "":
		return Hybrid
	case len(h.V1) > 0:
		return V1
	case h.Unified != "":
		return V2
	}
	return 0
}

// Detect reads this process's mount table and cgroup membership and tells
// which cgroup hierarchies the host has and where they are mounted.
func Detect() (*Host, error) {
	mi, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("detect cgroups: %w", err)
	}
	defer func() { _ = mi.Close() }() // read-only
	cg, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("detect cgroups: %w", err)
	}
	defer func() { _ = cg.Close() }() // read-only
	return detect(mi, cg)
}

// cgroupMount is a cgroup or cgroup2 line of mountinfo.
type cgroupMount struct {
	root, mountpoint string
	v2               bool
	options          map[string]bool // the super options: "rw", "memory", "name=systemd"...
}

// detect is Detect on the text of /proc/self/mountinfo and /proc/self/cgroup.
//
// /proc/self/cgroup has one line per hierarchy this process is in,
// "ID:CONTROLLERS:PATH": "4:memory:/user.slice" for a v1 hierarchy,
// "0::/user.slice" for the unified one. A v1 hierarchy's controllers are found
// again in the super options of its mounts ("rw,memory"), which is how a
// hierarchy is matched with its mount point; the unified hierarchy has the
// file system type cgroup2. A hierarchy may be mounted more than once (bind
// mounts of parts of it): the mount of its root is preferred, then the one
// that holds this process's cgroup.
func detect(mountinfo, procCgroup io.Reader) (*Host, error) {
	mounts, err := parseCgroupMounts(mountinfo)
	if err != nil {
		return nil, fmt.Errorf("detect cgroups: %w", err)
	}
	h := &Host{V1: map[string]string{}, Parent: DefaultParent}
	sc := bufio.NewScanner(procCgroup)
	for sc.Scan() {
		id, rest, ok1 := strings.Cut(sc.Text(), ":")
		ctrls, path, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("detect cgroups: /proc/self/cgroup: malformed line %q", sc.Text())
		}
		if id == "0" && ctrls == "" {
			if m, ok := pickMount(mounts, path, func(m cgroupMount) bool { return m.v2 }); ok {
				h.Unified = m.mountpoint
			}
			continue
		}
		var names []string
		for _, c := range strings.Split(ctrls, ",") {
			// Named hierarchies (name=systemd) have no controller:
			// nothing to limit with them.
			if c != "" && !strings.HasPrefix(c, "name=") {
				names = append(names, c)
			}
		}
		if len(names) == 0 {
			continue
		}
		m, ok := pickMount(mounts, path, func(m cgroupMount) bool {
			if m.v2 {
				return false
			}
			for _, c := range names {
				if !m.options[c] {
					return false
				}
			}
			return true
		})
		if !ok {
			continue // in the hierarchy, but it is not mounted here
		}
		for _, c := range names {
			h.V1[c] = m.mountpoint
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("detect cgroups: read /proc/self/cgroup: %w", err)
	}
	if h.Mode() == 0 {
		return nil, fmt.Errorf("detect cgroups: no cgroup hierarchy is mounted: %w", ErrNoController)
	}
	return h, nil
}

// pickMount chooses among the mounts that match: the one of the hierarchy's
// root first, else one whose root holds path.
func pickMount(ms []cgroupMount, path string, match func(cgroupMount) bool) (cgroupMount, bool) {
	var found cgroupMount
	ok := false
	for _, m := range ms {
		if !match(m) {
			continue
		}
		if m.root == "/" {
			return m, true
		}
		if !ok && (path == m.root || strings.HasPrefix(path, m.root+"/")) {
			found, ok = m, true
		}
	}
	return found, ok
}

// parseCgroupMounts reads the cgroup and cgroup2 lines of a mountinfo table
// (proc(5)):
//
//	34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
//
// The fields after "-" are the type, the source and the super options, which
// for cgroup v1 name the hierarchy's controllers.
func parseCgroupMounts(r io.Reader) ([]cgroupMount, error) {
	all, err := mounts.Parse(r)
	if err != nil {
		return nil, err
	}
	var ms []cgroupMount
	for _, mi := range all {
		if mi.FSType != "cgroup" && mi.FSType != "cgroup2" {
			continue
		}
		m := cgroupMount{root: mi.Root, mountpoint: mi.Mountpoint, v2: mi.FSType == "cgroup2", options: map[string]bool{}}
		for _, o := range strings.Split(mi.SuperOptions, ",") {
			m.options[o] = true
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// Create makes the cgroup name under the strata parent, in every hierarchy it
// needs, and sets the limits l. A limit whose controller the host lacks is an
// error wrapping ErrNoController that names the controller and the
// hierarchy; a bad name or limit wraps ErrInvalid; a cgroup of that name that
// exists already fails with fs.ErrExist. On error nothing is left behind.
//
// On a v1 or hybrid host the limits go through the v1 controllers; a hybrid
// host's cgroup is made in its unified hierarchy too, which gives Destroy
// cgroup.kill. On a pure v2 host the controllers are enabled down the
// parents' cgroup.subtree_control first.
func (h *Host) Create(name string, l Limits) (Cgroup, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if err := l.check(); err != nil {
		return nil, err
	}
	switch h.Mode() {
	case V1, Hybrid:
		return h.createV1(name, l)
	case V2:
		return h.createV2(name, l)
	}
	return nil, fmt.Errorf("create cgroup %s: no cgroup hierarchy: %w", name, ErrNoController)
}

// Load finds the cgroup name that Create made, for a process started earlier
// (exec, ps, rm after a crash). A cgroup that is not there fails with
// fs.ErrNotExist.
func (h *Host) Load(name string) (Cgroup, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	switch h.Mode() {
	case V1, Hybrid:
		return h.loadV1(name)
	case V2:
		return h.loadV2(name)
	}
	return nil, fmt.Errorf("load cgroup %s: no cgroup hierarchy: %w", name, fs.ErrNotExist)
}

// List names the cgroups under the strata parent, in any hierarchy, sorted:
// for `strata ps` to find what a crashed strata left behind.
func (h *Host) List() ([]string, error) {
	seen := map[string]bool{}
	for _, root := range h.roots() {
		ents, err := os.ReadDir(filepath.Join(root, h.parent()))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list cgroups: %w", err)
		}
		for _, e := range ents {
			if e.IsDir() {
				seen[e.Name()] = true
			}
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// roots lists the mount points of the hierarchies strata uses, each once:
// the v1 ones of the controllers it limits or reads, and the unified one.
func (h *Host) roots() []string {
	var rs []string
	seen := map[string]bool{}
	add := func(p string) {
		if p != "" && !seen[p] {
			seen[p] = true
			rs = append(rs, p)
		}
	}
	for _, c := range v1Controllers {
		add(h.V1[c])
	}
	add(h.Unified)
	return rs
}

func (h *Host) parent() string {
	if h.Parent == "" {
		return DefaultParent
	}
	return h.Parent
}

func (h *Host) doMkdir(path string) error {
	if h.mkdir != nil {
		return h.mkdir(path)
	}
	return os.Mkdir(path, 0o755)
}

func (h *Host) doRmdir(path string) error {
	if h.rmdir != nil {
		return h.rmdir(path)
	}
	return os.Remove(path)
}
